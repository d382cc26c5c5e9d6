//! The pod and container JSON files `hull-cri` reads, and the CRI v1 messages built from them.
//!
//! The shapes are deliberately small: what kubelet sets for a plain pod, nothing more.
//! Unknown keys are an error, so a typo in a test's JSON cannot go unnoticed.
//!
//! Pod (`runp`, and the third argument of `create`):
//!
//! ```json
//! { "name": "p1", "uid": "u-1", "namespace": "default", "attempt": 0,
//!   "hostname": "p1", "log_directory": "/tmp/logs/p1", "cgroup_parent": "/hull-cri/p1",
//!   "namespaces": { "network": "pod", "pid": "container", "ipc": "pod" },
//!   "sysctls": { "kernel.shm_rmid_forced": "1" }, "labels": {}, "annotations": {} }
//! ```
//!
//! Required: `name`, `uid`, `log_directory`. `namespace` defaults to `default`, `hostname`
//! and `cgroup_parent` to empty (no cgroup parent: containerd picks the cgroup), the
//! namespace modes (`pod`, `container`, `node`) to kubelet's for a pod without
//! `shareProcessNamespace`: network and IPC shared by the pod, PID per container. `sysctls`
//! (the pod's `securityContext.sysctls`) default to none.
//!
//! Container (`create`):
//!
//! ```json
//! { "name": "c1", "attempt": 0, "image": "docker.io/library/hull-busybox:latest",
//!   "command": ["sleep"], "args": ["1000"], "working_dir": "", "envs": { "K": "V" },
//!   "log_path": "c1.log", "labels": {}, "annotations": {},
//!   "resources": { "memory_limit_bytes": 33554432, "cpu_period": 100000, "cpu_quota": 50000,
//!                  "cpu_shares": 512 },
//!   "mounts": [ { "container_path": "/cache", "host_path": "/var/lib/kubelet/...", "readonly": false } ] }
//! ```
//!
//! Required: `name`, `image`. A resource left out (or 0) is not limited. Mounts are kubelet's
//! volume binds (private propagation). `log_path` is relative to the pod's `log_directory`, as with
//! kubelet; containerd writes the container's output there in the CRI log format. The
//! container's Linux security context carries the pod's namespace modes (kubelet does the
//! same) and nothing else: no privileges, default capabilities, containerd's default seccomp
//! and AppArmor choice.

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1 as cri;
use serde::Deserialize;

/// A pod sandbox, as read from `POD.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodJson {
    pub name: String,
    pub uid: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub hostname: String,
    pub log_directory: String,
    #[serde(default)]
    pub cgroup_parent: String,
    #[serde(default)]
    pub namespaces: Namespaces,
    #[serde(default)]
    pub sysctls: HashMap<String, String>,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// A container, as read from `CTR.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerJson {
    pub name: String,
    #[serde(default)]
    pub attempt: u32,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    /// Sorted, so the container's environment does not depend on hash order.
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    #[serde(default)]
    pub log_path: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub mounts: Vec<MountJson>,
}

/// A volume bind of the container, as kubelet passes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountJson {
    pub container_path: String,
    pub host_path: String,
    #[serde(default)]
    pub readonly: bool,
}

/// A container's resource limits (kubelet's `LinuxContainerResources`, the usual part).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub memory_limit_bytes: i64,
    #[serde(default)]
    pub cpu_period: i64,
    #[serde(default)]
    pub cpu_quota: i64,
    #[serde(default)]
    pub cpu_shares: i64,
}

impl Resources {
    pub fn to_cri(self) -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            memory_limit_in_bytes: self.memory_limit_bytes,
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpu_shares: self.cpu_shares,
            ..Default::default()
        }
    }
}

/// The pod's namespace modes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    #[serde(default = "Mode::pod")]
    pub network: Mode,
    #[serde(default = "Mode::container")]
    pub pid: Mode,
    #[serde(default = "Mode::pod")]
    pub ipc: Mode,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self {
            network: Mode::Pod,
            pid: Mode::Container,
            ipc: Mode::Pod,
        }
    }
}

/// CRI `NamespaceMode` (TARGET is not offered: it needs a target container id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Pod,
    Container,
    Node,
}

impl Mode {
    fn pod() -> Self {
        Self::Pod
    }

    fn container() -> Self {
        Self::Container
    }

    fn cri(self) -> i32 {
        let m = match self {
            Self::Pod => cri::NamespaceMode::Pod,
            Self::Container => cri::NamespaceMode::Container,
            Self::Node => cri::NamespaceMode::Node,
        };
        m as i32
    }
}

fn default_namespace() -> String {
    "default".to_owned()
}

impl Namespaces {
    fn cri(self) -> cri::NamespaceOption {
        cri::NamespaceOption {
            network: self.network.cri(),
            pid: self.pid.cri(),
            ipc: self.ipc.cri(),
            ..Default::default()
        }
    }
}

impl PodJson {
    /// The `PodSandboxConfig` of RunPodSandbox (and of CreateContainer's `sandbox_config`).
    pub fn to_cri(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: self.attempt,
            }),
            hostname: self.hostname.clone(),
            log_directory: self.log_directory.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                sysctls: self.sysctls.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespaces.cri()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl ContainerJson {
    /// The `ContainerConfig` of CreateContainer in a pod made from `pod`.
    pub fn to_cri(&self, pod: &PodJson) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: self.name.clone(),
                attempt: self.attempt,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: self.command.clone(),
            args: self.args.clone(),
            working_dir: self.working_dir.clone(),
            envs: self
                .envs
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            log_path: self.log_path.clone(),
            mounts: self
                .mounts
                .iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    ..Default::default()
                })
                .collect(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(self.resources.to_cri()),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(pod.namespaces.cri()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_pod_gets_kubelets_namespace_modes() {
        let pod: PodJson =
            serde_json::from_str(r#"{"name":"p","uid":"u","log_directory":"/l"}"#).expect("pod");
        let c = pod.to_cri();
        assert_eq!(
            c.metadata.as_ref().map(|m| m.namespace.as_str()),
            Some("default")
        );
        let ns = c
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("namespace options");
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, cri::NamespaceMode::Pod as i32);
    }

    #[test]
    fn the_pods_sysctls_reach_the_sandbox_config() {
        let pod: PodJson = serde_json::from_str(
            r#"{"name":"p","uid":"u","log_directory":"/l","sysctls":{"fs.mqueue.msg_max":"100"}}"#,
        )
        .expect("pod");
        let sysctls = pod.to_cri().linux.expect("linux").sysctls;
        assert_eq!(
            sysctls.get("fs.mqueue.msg_max").map(String::as_str),
            Some("100")
        );
    }

    #[test]
    fn a_container_carries_the_pods_namespaces_and_its_log_path() {
        let pod: PodJson = serde_json::from_str(
            r#"{"name":"p","uid":"u","log_directory":"/l","namespaces":{"pid":"pod"}}"#,
        )
        .expect("pod");
        let ctr: ContainerJson = serde_json::from_str(
            r#"{"name":"c","image":"i","command":["sh"],"args":["-c","x"],"envs":{"B":"2","A":"1"},"log_path":"c.log"}"#,
        )
        .expect("container");
        let c = ctr.to_cri(&pod);
        assert_eq!(c.log_path, "c.log");
        assert_eq!(c.command, ["sh"]);
        assert_eq!(c.envs[0].key, "A");
        let ns = c
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("namespace options");
        assert_eq!(ns.pid, cri::NamespaceMode::Pod as i32);
    }

    #[test]
    fn resources_and_mounts_reach_the_container_config() {
        let pod: PodJson =
            serde_json::from_str(r#"{"name":"p","uid":"u","log_directory":"/l"}"#).expect("pod");
        let ctr: ContainerJson = serde_json::from_str(
            r#"{"name":"c","image":"i","resources":{"memory_limit_bytes":33554432},
                "mounts":[{"container_path":"/c","host_path":"/h","readonly":true}]}"#,
        )
        .expect("container");
        let c = ctr.to_cri(&pod);
        assert_eq!(c.mounts.len(), 1);
        assert_eq!(
            (c.mounts[0].container_path.as_str(), c.mounts[0].readonly),
            ("/c", true)
        );
        let r = c.linux.and_then(|l| l.resources).expect("resources");
        assert_eq!(r.memory_limit_in_bytes, 32 << 20);
        assert_eq!(r.cpu_quota, 0);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<ContainerJson, _> =
            serde_json::from_str(r#"{"name":"c","image":"i","comand":["sh"]}"#);
        assert!(r.is_err());
    }
}
