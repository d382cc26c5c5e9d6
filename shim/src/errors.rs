//! `ShimError`: what a task RPC can fail with, and the one place that gives each failure the
//! ttrpc code containerd expects (NOT_FOUND for unknown ids, FAILED_PRECONDITION for a wrong
//! state, INVALID_ARGUMENT for a spec hull cannot run, ...). The modules below keep their
//! errors typed (`SpecError`, `ShareError`, `NetError`, `BackendError`, ...) and know nothing
//! of codes.
//!
//! The rule: what the caller can fix by asking differently (a malformed or oversized spec
//! file, a bind source that does not exist, hostNetwork, hostIPC, hostPID, Bidirectional
//! mount propagation, more NICs than hull wires, absurd resources) is INVALID_ARGUMENT; a pod
//! VM or agent that did not come up or cannot be reached is UNAVAILABLE; a failure of the node
//! itself (a mount, a tap, a spawn) is INTERNAL.

use ttrpc::Code;

use crate::backend::{BackendError, CgroupError, GrowError, JailError};
use crate::net::NetError;
use crate::share::ShareError;
use crate::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ShimError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} is not implemented by hull")]
    Unimplemented(&'static str),
    #[error("pod backend: {0}")]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("agent: {context}: {source}")]
    Agent {
        context: String,
        source: ttrpc::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: protobuf::Error,
    },
    #[error("{context}: {source}")]
    Shim {
        context: String,
        source: containerd_shim::Error,
    },
}

impl ShimError {
    /// The agent's status code survives (DESIGN §2 agent/): an unknown process stays NOT_FOUND.
    pub(crate) fn code(&self) -> Code {
        match self {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Backend(e) => backend_code(e),
            ShimError::Spec(e) => spec_code(e),
            ShimError::Agent {
                source: ttrpc::Error::RpcStatus(s),
                ..
            } => s.code(),
            ShimError::Agent { .. } => Code::UNAVAILABLE,
            ShimError::Io { .. } | ShimError::Encode { .. } | ShimError::Shim { .. } => {
                Code::INTERNAL
            }
        }
    }

    pub(crate) fn agent(context: impl Into<String>) -> impl FnOnce(ttrpc::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Agent { context, source }
    }
}

fn backend_code(e: &BackendError) -> Code {
    match e {
        BackendError::Sizing(_) | BackendError::Limits(_) => Code::INVALID_ARGUMENT,
        BackendError::Spec(e) => spec_code(e),
        BackendError::Share(e) => share_code(e),
        BackendError::Cgroup(e) => cgroup_code(e),
        BackendError::Network(e) => net_code(e),
        // The node's hull.toml asks for what this build does not have.
        #[cfg(not(feature = "host-agent-backend"))]
        BackendError::HostAgentNotBuilt => Code::FAILED_PRECONDITION,
        // The node's installation is broken: nothing starts until its operator fixes it.
        BackendError::GuestImage { .. } => Code::FAILED_PRECONDITION,
        BackendError::AgentStart(_) => Code::UNAVAILABLE,
        BackendError::Jail(e) => jail_code(e),
        BackendError::Grow(e) => grow_code(e),
        BackendError::Io { .. } | BackendError::Virtiofsd { .. } | BackendError::Blocking(_) => {
            Code::INTERNAL
        }
    }
}

fn grow_code(e: &GrowError) -> Code {
    match e {
        GrowError::Api(_)
        | GrowError::Agent(_)
        | GrowError::CpusOffline { .. }
        | GrowError::MemoryTimeout { .. }
        | GrowError::Status(_) => Code::INTERNAL,
    }
}

fn jail_code(e: &JailError) -> Code {
    match e {
        // Every uid of [jail] uid_range is held by a running pod: the node is full for now,
        // as with a full IP range; the kubelet retries.
        JailError::NoFreeId { .. } => Code::RESOURCE_EXHAUSTED,
        // The node is set up wrongly (a dynamic hull-vmm, a root-only /dev/kvm): nothing
        // succeeds until its operator fixes it, which the message says how.
        JailError::NotStatic { .. } | JailError::KvmRootOnly { .. } => Code::FAILED_PRECONDITION,
        JailError::Io { .. }
        | JailError::Nul(_)
        | JailError::Clone { .. }
        | JailError::Child { .. } => Code::INTERNAL,
    }
}

fn spec_code(e: &SpecError) -> Code {
    match e {
        SpecError::Parse { .. }
        | SpecError::NotObject
        | SpecError::ExecProcess(_)
        | SpecError::ExecNotObject
        | SpecError::NoSource { .. }
        | SpecError::PodFileNotRegular { .. }
        | SpecError::PodFileTooLarge { .. }
        | SpecError::HostNamespace { .. }
        | SpecError::SharedPropagation { .. } => Code::INVALID_ARGUMENT,
        // As a container's bind source that does not exist (`ShareError::MissingSource`).
        SpecError::PodFileRead { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Code::INVALID_ARGUMENT
        }
        SpecError::Share { source, .. } => share_code(source),
        SpecError::Read { .. } | SpecError::PodFileRead { .. } | SpecError::Encode(_) => {
            Code::INTERNAL
        }
    }
}

fn share_code(e: &ShareError) -> Code {
    match e {
        ShareError::MissingSource(_) => Code::INVALID_ARGUMENT,
        ShareError::Io { .. } | ShareError::Mount { .. } => Code::INTERNAL,
    }
}

fn cgroup_code(e: &CgroupError) -> Code {
    match e {
        CgroupError::BadPath { .. } => Code::INVALID_ARGUMENT,
        CgroupError::Io { .. } => Code::INTERNAL,
    }
}

fn net_code(e: &NetError) -> Code {
    match e {
        // Not a failure of the node: the pod asks for what hull cannot give.
        NetError::HostNetwork | NetError::TooManyLinks(_) => Code::INVALID_ARGUMENT,
        NetError::Netns { .. }
        | NetError::Tap { .. }
        | NetError::Tc { .. }
        | NetError::Netlink(_)
        | NetError::Runtime(_)
        | NetError::Panicked => Code::INTERNAL,
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        let msg = match &e {
            // The agent's message already carries its cause chain; do not wrap the status.
            ShimError::Agent {
                context,
                source: ttrpc::Error::RpcStatus(s),
            } => format!("{context}: {}", s.message),
            other => other.to_string(),
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), msg))
    }
}

#[cfg(test)]
mod tests {
    use crate::annotations::HullAnnotations;
    use std::path::{Path, PathBuf};

    use serde_json::json;

    use super::*;
    use crate::config::HullConfig;

    fn status(e: ShimError) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message),
            other => panic!("not a status: {other:?}"),
        }
    }

    /// A bundle whose sandbox spec binds `hosts` at /etc/hosts and has a netns path.
    fn bundle_with_hosts(dir: &Path, hosts: &Path) {
        let spec = json!({
            "linux": {"namespaces": [
                {"type": "pid"}, {"type": "ipc"},
                {"type": "network", "path": "/nonexistent/netns"}
            ]},
            "mounts": [{"destination": "/etc/hosts", "type": "bind", "source": hosts,
                        "options": ["rbind", "ro"]}]
        });
        std::fs::write(dir.join("config.json"), spec.to_string()).expect("config.json");
    }

    /// A VM backend whose hull-vmm does not exist: launches fail at the latest when it starts.
    fn vm_config() -> HullConfig {
        HullConfig::parse(
            "[vm]\nvmm = \"/nonexistent/hull-vmm\"\nkernel = \"/k\"\ninitrd = \"/i\"\n",
            Path::new("test.toml"),
        )
        .expect("config")
    }

    /// The whole path of a pod launch: a hosts file over 64 KiB reaches containerd as
    /// INVALID_ARGUMENT with its reason, before anything is made for the VM. Needs root
    /// (the pod directory under /run/hull/pods), as the shim's tests run.
    #[tokio::test(flavor = "current_thread")]
    async fn an_oversized_hosts_file_is_invalid_argument() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, vec![b'#'; 64 * 1024 + 1]).expect("hosts");
        bundle_with_hosts(dir.path(), &hosts);
        let cfg = vm_config();
        let sid = format!("hull-errors-test-{}", std::process::id());
        let e = crate::backend::launch(&cfg, &sid, dir.path(), &HullAnnotations::default())
            .await
            .expect_err("oversized hosts");
        let (code, msg) = status(e.into());
        assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains("larger than 65536 bytes"), "{msg}");
        assert!(!PathBuf::from("/run/hull/pods").join(&sid).exists());
    }

    /// A pod whose allowed `io.hull.limits.*` annotation hull-vmm could not take: its
    /// sandbox's Create is INVALID_ARGUMENT naming the annotation, and nothing is made.
    #[tokio::test(flavor = "current_thread")]
    async fn a_bad_limit_annotation_is_invalid_argument() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.json"), "{}").expect("spec");
        let spec = json!({"annotations": {"io.hull.limits.net_rx_ops": "10:0"}});
        let allow = crate::config::AnnotationsSection {
            allowed: vec!["io.hull.limits.".into()],
        };
        let ann = HullAnnotations::check(&spec, &allow).expect("allowed");
        let sid = format!("hull-errors-limits-{}", std::process::id());
        let e = crate::backend::launch(&vm_config(), &sid, dir.path(), &ann)
            .await
            .expect_err("zero burst");
        let (code, msg) = status(e.into());
        assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains("io.hull.limits.net_rx_ops"), "{msg}");
        assert!(!PathBuf::from("/run/hull/pods").join(&sid).exists());
    }

    /// A sandbox spec as containerd's CRI writes it for hostNetwork, hostIPC and hostPID
    /// (the namespace's entry left out): the sandbox's Create is INVALID_ARGUMENT saying what
    /// to do instead, and nothing is made for the VM.
    #[tokio::test(flavor = "current_thread")]
    async fn host_namespace_pods_are_refused_before_anything_is_made() {
        let cfg = vm_config();
        let netns = json!({"type": "network", "path": "/nonexistent/netns"});
        for (namespaces, field) in [
            (
                json!([{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]),
                "hostNetwork",
            ),
            (
                json!([{"type": "pid"}, netns, {"type": "mount"}]),
                "hostIPC",
            ),
            (
                json!([{"type": "ipc"}, netns, {"type": "mount"}]),
                "hostPID",
            ),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let spec = json!({"linux": {"namespaces": namespaces}});
            std::fs::write(dir.path().join("config.json"), spec.to_string()).expect("spec");
            let sid = format!("hull-errors-hostns-{}", std::process::id());
            let e = crate::backend::launch(&cfg, &sid, dir.path(), &HullAnnotations::default())
                .await
                .expect_err(field);
            let (code, msg) = status(e.into());
            assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
            let what = format!("{field} pods cannot run with runtime hull: ");
            assert!(msg.contains(&what) && msg.contains("(e.g. runc)"), "{msg}");
            assert!(!PathBuf::from("/run/hull/pods").join(&sid).exists());
        }
    }

    #[test]
    fn spec_and_share_errors_say_whose_fault() {
        let missing = |kind: std::io::ErrorKind| SpecError::PodFileRead {
            path: "/gone/resolv.conf".into(),
            dest: "/etc/resolv.conf".into(),
            source: kind.into(),
        };
        let cases: [(ShimError, Code); 8] = [
            (SpecError::NotObject.into(), Code::INVALID_ARGUMENT),
            (
                BackendError::from(SpecError::SharedPropagation {
                    host_path: "/mnt".into(),
                    destination: "/mnt".into(),
                    option: "rshared".into(),
                })
                .into(),
                Code::INVALID_ARGUMENT,
            ),
            (
                BackendError::from(missing(std::io::ErrorKind::NotFound)).into(),
                Code::INVALID_ARGUMENT,
            ),
            (
                BackendError::from(missing(std::io::ErrorKind::PermissionDenied)).into(),
                Code::INTERNAL,
            ),
            (
                BackendError::from(SpecError::Share {
                    n: 2,
                    source: ShareError::MissingSource("/gone".into()),
                })
                .into(),
                Code::INVALID_ARGUMENT,
            ),
            (
                BackendError::from(ShareError::Mount {
                    what: "bind rootfs",
                    path: "/x".into(),
                    source: nix::errno::Errno::EPERM,
                })
                .into(),
                Code::INTERNAL,
            ),
            (
                BackendError::from(CgroupError::BadPath {
                    path: "/a/../b".into(),
                    why: "must name a cgroup below the root",
                })
                .into(),
                Code::INVALID_ARGUMENT,
            ),
            (
                BackendError::from(crate::sizing::SizingError::TooMuchMemory { mib: 1 << 30 })
                    .into(),
                Code::INVALID_ARGUMENT,
            ),
        ];
        for (e, want) in cases {
            let msg = e.to_string();
            assert_eq!(e.code(), want, "{msg}");
        }
    }

    /// The jail's failures say whose they are: a full uid range is a node out of a resource
    /// for now, a node set up wrongly a failed precondition, anything else the node's fault.
    #[test]
    fn jail_failures_say_whose_fault() {
        let io = || std::io::Error::from_raw_os_error(libc::EPERM);
        for (e, want) in [
            (
                JailError::NoFreeId {
                    first: 10,
                    last: 11,
                },
                Code::RESOURCE_EXHAUSTED,
            ),
            (
                JailError::NotStatic {
                    path: "/usr/bin/hull-vmm".into(),
                    why: "it has an interpreter".into(),
                },
                Code::FAILED_PRECONDITION,
            ),
            (
                JailError::KvmRootOnly {
                    mode: 0o600,
                    gid: 0,
                },
                Code::FAILED_PRECONDITION,
            ),
            (
                JailError::Child {
                    step: "pivot_root",
                    source: io(),
                },
                Code::INTERNAL,
            ),
            (
                JailError::Clone {
                    step: "clone3",
                    source: io(),
                },
                Code::INTERNAL,
            ),
        ] {
            let (code, msg) = status(BackendError::from(e).into());
            assert_eq!(code, want, "{msg}");
            assert!(msg.starts_with("pod backend: hull-vmm's jail: "), "{msg}");
        }
    }

    /// A network setup failure is the pod network's, never reported as hull-vmm's, and only
    /// what the pod asks for (hostNetwork, too many links) is the caller's to fix.
    #[test]
    fn network_failures_are_the_pod_networks() {
        let tap = NetError::Tap {
            name: "hulltap0".into(),
            cause: std::io::Error::from_raw_os_error(libc::EBUSY),
        };
        for (e, want) in [
            (tap, Code::INTERNAL),
            (NetError::Panicked, Code::INTERNAL),
            (NetError::HostNetwork, Code::INVALID_ARGUMENT),
            (NetError::TooManyLinks(4), Code::INVALID_ARGUMENT),
        ] {
            let (code, msg) = status(BackendError::from(e).into());
            assert_eq!(code, want, "{msg}");
            assert!(msg.starts_with("pod backend: pod network: "), "{msg}");
            assert!(!msg.contains("hull-vmm"), "{msg}");
        }
    }

    #[test]
    fn agent_codes_survive_and_a_vm_that_did_not_come_up_is_unavailable() {
        let not_found = ttrpc::Error::RpcStatus(ttrpc::get_status(Code::NOT_FOUND, "no c1"));
        let (code, msg) = status(ShimError::agent("kill c1")(not_found));
        assert_eq!((code, msg.as_str()), (Code::NOT_FOUND, "kill c1: no c1"));
        let gone = ttrpc::Error::LocalClosed;
        assert_eq!(ShimError::agent("kill c1")(gone).code(), Code::UNAVAILABLE);
        let boot = BackendError::AgentStart("timed out".into());
        assert_eq!(ShimError::from(boot).code(), Code::UNAVAILABLE);
    }
}
