//! The bundle's OCI spec, rewritten for the agent. What the agent places itself (cgroups) or
//! must never run (host hooks) is dropped in both modes. In host-agent mode the agent sees the
//! host filesystem, so the rootfs stays the bundle's. For a VM (DESIGN §1 Rootfs and volumes)
//! every host path is replaced by its guest path in the pod's virtio-fs share (or, for a
//! memory-backed volume, its guest tmpfs: `memvol`), and host namespace paths go.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::memvol::{self, MemoryVolume};
use crate::share::{guest_rootfs, Share, ShareError};

/// The most a pod's resolv.conf or hosts file may hold: both are small text files, and the
/// guest gets them inside one ttrpc message.
const POD_FILE_MAX: u64 = 64 * 1024;

/// What is wrong with a bundle's spec, an exec's process spec, or a file or mount they name.
/// `errors.rs` gives each its ttrpc code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpecError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("OCI spec is not a JSON object")]
    NotObject,
    #[error("exec process spec: {0}")]
    ExecProcess(#[source] serde_json::Error),
    #[error("exec process spec is not a JSON object")]
    ExecNotObject,
    #[error("encode the spec for the agent: {0}")]
    Encode(#[source] serde_json::Error),
    /// `what`: "the bind mount at /etc/hosts", "bind mount 3".
    #[error("{what} has no source")]
    NoSource { what: String },
    #[error("read {path:?}, the pod's {dest}: {source}")]
    PodFileRead {
        path: String,
        dest: String,
        source: std::io::Error,
    },
    #[error("{path:?}, the pod's {dest}, is not a regular file")]
    PodFileNotRegular { path: String, dest: String },
    #[error("{path:?}, the pod's {dest}, is larger than {POD_FILE_MAX} bytes")]
    PodFileTooLarge { path: String, dest: String },
    #[error("mount {n}: {source}")]
    Share { n: usize, source: ShareError },
    /// `field`: the pod's setting (hostIPC, hostPID); `namespace`: what it would share.
    #[error(
        "{field} pods cannot run with runtime hull: each hull pod has its own VM and guest \
         kernel, whose processes cannot join the node's {namespace}; use another RuntimeClass \
         (e.g. runc) for this pod, or drop {field}"
    )]
    HostNamespace {
        field: &'static str,
        namespace: &'static str,
    },
    #[error(
        "the bind mount of {host_path:?} at {destination:?} asks for mount propagation \
         {option} (Bidirectional), which runtime hull cannot give: mounts made in a hull \
         container stay in its VM and never reach the host; use another RuntimeClass (e.g. \
         runc) for this pod, or mountPropagation None or HostToContainer"
    )]
    SharedPropagation {
        host_path: String,
        destination: String,
        option: String,
    },
}

/// Reads `<bundle>/config.json`.
pub(crate) fn read(bundle: &Path) -> Result<Value, SpecError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| SpecError::Parse { path, source })
}

/// The contents of the regular host file the sandbox spec binds at `dest`
/// (`/etc/resolv.conf`, `/etc/hosts`), so the guest's own `/etc` matches its containers'.
/// containerd's CRI binds the pod's resolv.conf into the sandbox spec (for VM runtimes) but
/// its hosts file only into the app containers, so under CRI `/etc/hosts` is `None`; `None`
/// too when nothing is bound (a lone `ctr run`): the agent then writes its defaults. When
/// several mounts name `dest`, the last wins, as in the container.
pub(crate) fn pod_file(spec: &Value, dest: &str) -> Result<Option<Vec<u8>>, SpecError> {
    let Some(m) = spec
        .get("mounts")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .rev()
                .find(|m| m.get("destination").and_then(Value::as_str) == Some(dest))
        })
        .filter(|m| is_bind(m))
    else {
        return Ok(None);
    };
    let Some(source) = m.get("source").and_then(Value::as_str) else {
        return Err(SpecError::NoSource {
            what: format!("the bind mount at {dest}"),
        });
    };
    let io = |e| SpecError::PodFileRead {
        path: source.to_owned(),
        dest: dest.to_owned(),
        source: e,
    };
    // Not a FIFO or a device: opening one could block the shim for good.
    if !std::fs::metadata(source).map_err(io)?.is_file() {
        return Err(SpecError::PodFileNotRegular {
            path: source.to_owned(),
            dest: dest.to_owned(),
        });
    }
    let mut data = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(source).map_err(io)?, POD_FILE_MAX + 1),
        &mut data,
    )
    .map_err(io)?;
    if data.len() as u64 > POD_FILE_MAX {
        return Err(SpecError::PodFileTooLarge {
            path: source.to_owned(),
            dest: dest.to_owned(),
        });
    }
    Ok(Some(data))
}

/// The array at JSON pointer `at` in the spec; empty when absent.
fn array_at<'a>(spec: &'a Value, at: &str) -> &'a [Value] {
    spec.pointer(at)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Refuses a pod that shares the node's IPC or PID namespace (CRI's hostIPC, hostPID): a VM
/// would silently give it private ones. containerd's CRI leaves the `ipc` or `pid` entry out
/// of such a pod's sandbox spec, while its default spec, which every other sandbox and a lone
/// `ctr run` container start from, has both. hostNetwork is `NetError::HostNetwork`.
/// Who the pod is, from the CRI annotations of its sandbox's spec (empty for `ctr run`).
pub(crate) fn pod_identity(spec: &Value) -> hull_contract::pods::PodIdentity {
    let get = |key: &str| {
        spec.pointer("/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    hull_contract::pods::PodIdentity {
        namespace: get("io.kubernetes.cri.sandbox-namespace"),
        name: get("io.kubernetes.cri.sandbox-name"),
        uid: get("io.kubernetes.cri.sandbox-uid"),
    }
}

pub(crate) fn refuse_host_namespaces(spec: &Value) -> Result<(), SpecError> {
    let namespaces = array_at(spec, "/linux/namespaces");
    let has = |kind: &str| {
        namespaces
            .iter()
            .any(|n| n.get("type").and_then(Value::as_str) == Some(kind))
    };
    for (kind, field, namespace) in [
        ("ipc", "hostIPC", "IPC namespace"),
        ("pid", "hostPID", "PID namespace"),
    ] {
        if !has(kind) {
            return Err(SpecError::HostNamespace { field, namespace });
        }
    }
    Ok(())
}

/// Reads `<bundle>/config.json` and returns the JSON the agent gets.
#[cfg(feature = "host-agent-backend")]
pub(crate) fn for_host_agent(bundle: &Path, rootfs: &Path) -> Result<Vec<u8>, SpecError> {
    let mut spec = read(bundle)?;
    rewrite(&mut spec, rootfs)?;
    host_only_resources(&mut spec);
    serde_json::to_vec(&spec).map_err(SpecError::Encode)
}

/// Host mode only: a hybrid (v1) host's cgroup v2 tree has no cpu/memory controllers to
/// enforce limits with, and host-mode pods are test fixtures. A VM enforces them.
#[cfg(feature = "host-agent-backend")]
fn host_only_resources(spec: &mut Value) {
    if let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) {
        linux.remove("resources");
    }
}

/// A container's spec for the guest agent and the memory-backed volumes it binds from.
#[derive(Debug)]
pub(crate) struct VmSpec {
    pub(crate) json: Vec<u8>,
    /// Guest tmpfs volumes the agent must mount before the container (each once per pod).
    pub(crate) memory_volumes: Vec<MemoryVolume>,
}

/// The spec for container `cid` in a VM: the rootfs at its guest mount point, every bind
/// mount's host source bound into `share` or, for a memory-backed volume, pointed at its
/// guest tmpfs (the caller releases the container's share entries if this fails).
pub(crate) fn for_vm(
    bundle: &Path,
    cid: &str,
    share: &Share,
    sandbox_pid: Option<u32>,
) -> Result<VmSpec, SpecError> {
    let mut spec = read(bundle)?;
    refuse_shared_propagation(&spec)?;
    rewrite(&mut spec, &guest_rootfs(cid))?;
    let memory_volumes = share_binds(&mut spec, cid, share)?;
    guest_namespaces(&mut spec, sandbox_pid);
    let obj = spec.as_object_mut().ok_or(SpecError::NotObject)?;
    if let Some(p) = obj.get_mut("process").and_then(Value::as_object_mut) {
        drop_lsm_labels(p);
    }
    if let Some(linux) = obj.get_mut("linux").and_then(Value::as_object_mut) {
        linux.remove("mountLabel");
    }
    let json = serde_json::to_vec(&spec).map_err(SpecError::Encode)?;
    Ok(VmSpec {
        json,
        memory_volumes,
    })
}

/// Host LSM labels mean nothing to the guest kernel, which has neither LSM (and the host
/// agent of the tests does not apply them either).
fn drop_lsm_labels(process: &mut serde_json::Map<String, Value>) {
    process.remove("apparmorProfile");
    process.remove("selinuxLabel");
}

/// The OCI Process of an exec (JSON, as containerd sends it) for the agent.
pub(crate) fn exec_process(json: &[u8]) -> Result<Vec<u8>, SpecError> {
    let mut p: Value = serde_json::from_slice(json).map_err(SpecError::ExecProcess)?;
    let obj = p.as_object_mut().ok_or(SpecError::ExecNotObject)?;
    drop_lsm_labels(obj);
    serde_json::to_vec(&p).map_err(SpecError::Encode)
}

fn is_bind(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("bind")
        || m.get("options").and_then(Value::as_array).is_some_and(|o| {
            o.iter()
                .any(|x| matches!(x.as_str(), Some("bind" | "rbind")))
        })
}

fn has_option(m: &Value, wanted: &[&str]) -> bool {
    m.get("options").and_then(Value::as_array).is_some_and(|o| {
        o.iter()
            .filter_map(Value::as_str)
            .any(|x| wanted.contains(&x))
    })
}

fn is_read_only(m: &Value) -> bool {
    has_option(m, &["ro"])
}

/// Whether a bind receives what the host mounts under its source later: unless the spec asks
/// for private propagation (CRI's None is `rprivate`), as runc, whose default is `rslave`.
fn follows_host(m: &Value) -> bool {
    !has_option(m, &["private", "rprivate"])
}

/// Refuses a bind mount with shared propagation (CRI's Bidirectional puts `rshared` in its
/// options), before anything is bound: what the container mounts under it would have to
/// reach the host, and the guest's mounts never do. `rslave` (HostToContainer) and
/// `rprivate` pass: the share's binds follow the host's mounts as far as virtio-fs shows them.
pub(crate) fn refuse_shared_propagation(spec: &Value) -> Result<(), SpecError> {
    let mounts = array_at(spec, "/mounts");
    for m in mounts.iter().filter(|m| is_bind(m)) {
        let shared = m.get("options").and_then(Value::as_array).and_then(|o| {
            o.iter()
                .filter_map(Value::as_str)
                .find(|o| matches!(*o, "shared" | "rshared"))
        });
        if let Some(option) = shared {
            let field = |k| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            return Err(SpecError::SharedPropagation {
                host_path: field("source"),
                destination: field("destination"),
                option: option.to_owned(),
            });
        }
    }
    Ok(())
}

/// Bind mounts name host paths: each source is bound into the share and the spec points at
/// its guest path, except memory-backed volumes, which point at their guest tmpfs (returned).
fn share_binds(spec: &mut Value, cid: &str, share: &Share) -> Result<Vec<MemoryVolume>, SpecError> {
    let mut volumes = Vec::new();
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok(volumes);
    };
    for (n, m) in mounts.iter_mut().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let source = m
            .get("source")
            .and_then(Value::as_str)
            .ok_or_else(|| SpecError::NoSource {
                what: format!("bind mount {n}"),
            })?
            .to_owned();
        let destination = m.get("destination").and_then(Value::as_str).unwrap_or("");
        if let Some(v) = memvol::detect(Path::new(&source), destination) {
            m["source"] = Value::String(v.guest_path.display().to_string());
            if !volumes.contains(&v) {
                volumes.push(v);
            }
            continue;
        }
        let guest = share
            .bind_mount(cid, n, Path::new(&source), is_read_only(m), follows_host(m))
            .map_err(|source| SpecError::Share { n, source })?;
        m["source"] = Value::String(guest.display().to_string());
    }
    Ok(volumes)
}

/// Namespaces given by a host path (`/proc/<pid>/ns/...`, CNI's netns file) cannot be joined
/// in the guest as they are. CRI gives a path exactly when a namespace is shared with the pod
/// sandbox: a pid, ipc or uts path then names the sandbox container's namespace in the guest,
/// `/proc/<sandbox_pid>/ns/<type>` (so `shareProcessNamespace` shows the pod's processes, not
/// the agent's). Any other path (the network: the pod NIC lives in the agent's network
/// namespace), or any path before the sandbox exists, is dropped: the container shares the
/// agent's namespace of that type, which is the pod's.
fn guest_namespaces(spec: &mut Value, sandbox_pid: Option<u32>) {
    let Some(ns) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    ns.retain_mut(|n| {
        if n.get("path")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return true;
        }
        let kind = n.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(pid) = sandbox_pid.filter(|_| matches!(kind, "pid" | "ipc" | "uts")) else {
            return false;
        };
        n["path"] = Value::String(format!("/proc/{pid}/ns/{kind}"));
        true
    });
}

fn rewrite(spec: &mut Value, rootfs: &Path) -> Result<(), SpecError> {
    let obj = spec.as_object_mut().ok_or(SpecError::NotObject)?;
    // containerd writes a relative "rootfs"; the agent runs elsewhere.
    let root = obj
        .entry("root")
        .or_insert_with(|| Value::Object(Default::default()));
    root["path"] = Value::String(rootfs.display().to_string());
    // Hooks are host binaries: a guest agent must never run them.
    obj.remove("hooks");
    if let Some(linux) = obj.get_mut("linux").and_then(Value::as_object_mut) {
        // The agent places container cgroups under its own parent.
        linux.remove("cgroupsPath");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pod_identity_comes_from_the_sandbox_annotations() {
        let s = json!({"annotations": {
            "io.kubernetes.cri.sandbox-namespace": "team-a",
            "io.kubernetes.cri.sandbox-name": "web-0",
            "io.kubernetes.cri.sandbox-uid": "6f1c",
        }});
        let id = pod_identity(&s);
        assert_eq!(
            (id.namespace.as_str(), id.name.as_str(), id.uid.as_str()),
            ("team-a", "web-0", "6f1c")
        );
        assert_eq!(pod_identity(&json!({})).display_name(), "-");
    }

    #[test]
    fn rootfs_is_absolute_and_host_only_parts_are_dropped() {
        let mut s = json!({
            "root": {"path": "rootfs", "readonly": false},
            "hooks": {"createRuntime": [{"path": "/bin/true"}]},
            "linux": {"cgroupsPath": "/default/c1", "resources": {"cpu": {"shares": 2}}, "namespaces": [{"type": "pid"}]}
        });
        rewrite(&mut s, Path::new("/b/rootfs")).expect("rewrite");
        host_only_resources(&mut s);
        assert_eq!(s["root"], json!({"path": "/b/rootfs", "readonly": false}));
        assert!(s.get("hooks").is_none());
        assert_eq!(s["linux"], json!({"namespaces": [{"type": "pid"}]}));
        assert!(rewrite(&mut json!([1]), Path::new("/r")).is_err());
    }

    #[test]
    fn host_namespace_paths_become_the_sandboxs_or_go() {
        let mut s = json!({"linux": {"namespaces": [
            {"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"},
            {"type": "ipc", "path": "/proc/42/ns/ipc"}, {"type": "mount", "path": ""}
        ]}});
        let before = s.clone();
        guest_namespaces(&mut s, None);
        assert_eq!(
            s["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "mount", "path": ""}])
        );
        // With the sandbox in the guest: ipc/pid/uts join its namespaces, the network goes.
        let mut s = before;
        s["linux"]["namespaces"][0] = json!({"type": "pid", "path": "/proc/7/ns/pid"});
        s["linux"]["namespaces"]
            .as_array_mut()
            .expect("array")
            .push(json!({"type": "uts", "path": "/proc/7/ns/uts"}));
        guest_namespaces(&mut s, Some(42));
        assert_eq!(
            s["linux"]["namespaces"],
            json!([
                {"type": "pid", "path": "/proc/42/ns/pid"},
                {"type": "ipc", "path": "/proc/42/ns/ipc"},
                {"type": "mount", "path": ""},
                {"type": "uts", "path": "/proc/42/ns/uts"}
            ])
        );
    }

    /// Needs root (CI runs as root): a tmpfs emptyDir is pointed at its guest tmpfs, once
    /// for two binds of it, and never touches the share.
    #[test]
    fn a_memory_empty_dir_becomes_a_guest_volume() {
        use nix::mount::{umount2, MntFlags};
        let dir = tempfile::tempdir().expect("tempdir");
        let v = memvol::test_empty_dir(dir.path(), "cache", "size=1m");
        let src = v.display().to_string();
        let mut s = json!({"mounts": [
            {"destination": "/a", "type": "bind", "source": src, "options": ["rbind"]},
            {"destination": "/b", "type": "bind", "source": src, "options": ["rbind", "ro"]},
            {"destination": "/proc", "type": "proc", "source": "proc"}
        ]});
        let share = Share::at(Path::new("/nonexistent-pod-dir"));
        let got = share_binds(&mut s, "c1", &share);
        umount2(&v, MntFlags::MNT_DETACH).expect("umount");
        let vols = got.expect("share_binds");
        assert_eq!(vols.len(), 1);
        let guest = vols[0].guest_path.display().to_string();
        assert_eq!(s["mounts"][0]["source"], json!(guest));
        assert_eq!(s["mounts"][1]["source"], json!(guest));
        assert_eq!(s["mounts"][1]["options"], json!(["rbind", "ro"]));
        assert_eq!(s["mounts"][2]["source"], json!("proc"));
    }

    #[test]
    fn exec_process_loses_lsm_labels_and_must_be_an_object() {
        let p = br#"{"args":["sh"],"cwd":"/","apparmorProfile":"cri-default","selinuxLabel":"x"}"#;
        let out: Value = serde_json::from_slice(&exec_process(p).expect("exec")).expect("json");
        assert_eq!(out, json!({"args": ["sh"], "cwd": "/"}));
        assert!(exec_process(b"[1]").is_err());
        assert!(exec_process(b"{").is_err());
    }

    #[test]
    fn pod_files_come_from_the_last_bind_at_their_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (old, new, big) = (dir.join("old"), dir.join("new"), dir.join("big"));
        std::fs::write(&old, "nameserver 10.0.0.1\n").unwrap();
        std::fs::write(&new, "nameserver 10.96.0.10\nsearch default.svc\n").unwrap();
        std::fs::write(&big, vec![b'#'; 64 * 1024 + 1]).unwrap();
        let bind = |dest: &str, src: &Path| json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "ro"]});
        let spec = json!({"mounts": [
            bind("/etc/resolv.conf", &old),
            {"destination": "/proc", "type": "proc", "source": "proc"},
            bind("/etc/resolv.conf", &new),
            bind("/etc/hosts", &big),
            bind("/etc/hostname", &dir.join("missing")),
            bind("/etc/motd", dir),
        ]});
        assert_eq!(
            pod_file(&spec, "/etc/resolv.conf").unwrap().unwrap(),
            b"nameserver 10.96.0.10\nsearch default.svc\n"
        );
        assert!(pod_file(&spec, "/etc/shadow").unwrap().is_none());
        assert!(pod_file(&json!({}), "/etc/hosts").unwrap().is_none());
        let e = pod_file(&spec, "/etc/hosts").unwrap_err().to_string();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        let e = pod_file(&spec, "/etc/hostname").unwrap_err().to_string();
        let missing = format!("{:?}, the pod's /etc/hostname", dir.join("missing"));
        assert!(e.contains(&missing) && e.contains("No such file"), "{e}");
        let e = pod_file(&spec, "/etc/motd").unwrap_err().to_string();
        assert!(e.contains("is not a regular file"), "{e}");
        let no_source = json!({"mounts": [{"destination": "/etc/hosts", "type": "bind"}]});
        assert!(pod_file(&no_source, "/etc/hosts").is_err());
    }

    /// containerd's default spec (a lone `ctr run`, any CRI sandbox) has all five
    /// namespaces; CRI drops `ipc` for hostIPC and `pid` for hostPID.
    #[test]
    fn host_ipc_and_host_pid_are_refused() {
        let spec = |kinds: &[&str]| {
            let ns: Vec<Value> = kinds.iter().map(|k| json!({"type": k})).collect();
            json!({"linux": {"namespaces": ns}})
        };
        let all = ["pid", "ipc", "uts", "mount", "network"];
        refuse_host_namespaces(&spec(&all)).expect("a plain container");
        // A CRI app container joins the sandbox's namespaces by path: still present.
        let joined = json!({"linux": {"namespaces": [
            {"type": "pid", "path": "/proc/7/ns/pid"}, {"type": "ipc", "path": "/proc/7/ns/ipc"},
            {"type": "mount"}
        ]}});
        refuse_host_namespaces(&joined).expect("namespaces joined by path");
        for (kinds, field) in [
            (&["pid", "uts", "mount", "network"][..], "hostIPC"),
            (&["ipc", "uts", "mount", "network"][..], "hostPID"),
            (&["uts", "mount", "network"][..], "hostIPC"),
            (&[][..], "hostIPC"),
        ] {
            let e = refuse_host_namespaces(&spec(kinds)).expect_err(field);
            let msg = e.to_string();
            assert!(
                matches!(e, SpecError::HostNamespace { field: f, .. } if f == field),
                "{kinds:?}: {msg}"
            );
            assert!(
                msg.starts_with(&format!("{field} pods cannot run with runtime hull: "))
                    && msg.contains("use another RuntimeClass (e.g. runc) for this pod"),
                "{msg}"
            );
        }
        let e = refuse_host_namespaces(&json!({})).expect_err("no namespaces at all");
        assert!(e.to_string().starts_with("hostIPC pods"), "{e}");
    }

    /// Bidirectional (`rshared`, or `shared`) on a bind is refused naming the mount; the
    /// other propagations, and shared propagation of a mount that is not a bind, pass.
    #[test]
    fn shared_propagation_of_a_bind_is_refused() {
        let bind = |options: Value| {
            json!({"destination": "/var/lib/kubelet/pods", "type": "bind",
                   "source": "/var/lib/kubelet/pods", "options": options})
        };
        for ok in [
            json!({}),
            json!({"mounts": [bind(json!(["rbind", "rprivate"]))]}),
            json!({"mounts": [bind(json!(["rbind", "rslave", "ro"]))]}),
            json!({"mounts": [{"destination": "/t", "type": "tmpfs", "source": "tmpfs",
                               "options": ["rshared"]}]}),
        ] {
            refuse_shared_propagation(&ok).expect("no shared bind");
        }
        for option in ["rshared", "shared"] {
            let spec = json!({"mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                bind(json!(["rbind", option]))
            ]});
            let e = refuse_shared_propagation(&spec).expect_err(option);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!(
                    "the bind mount of \"/var/lib/kubelet/pods\" at \"/var/lib/kubelet/pods\" \
                     asks for mount propagation {option} (Bidirectional), which runtime hull \
                     cannot give"
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn bind_and_read_only_are_recognised() {
        assert!(is_bind(&json!({"type": "bind", "source": "/a"})));
        assert!(is_bind(
            &json!({"type": "none", "options": ["rbind", "ro"]})
        ));
        assert!(!is_bind(&json!({"type": "tmpfs", "source": "tmpfs"})));
        assert!(is_read_only(&json!({"options": ["rbind", "ro"]})));
        assert!(!is_read_only(&json!({"options": ["rbind", "rw"]})));
        assert!(follows_host(&json!({"options": ["rbind", "rslave"]})));
        assert!(follows_host(&json!({"options": ["rbind"]})));
        assert!(!follows_host(&json!({"options": ["rbind", "rprivate"]})));
    }
}
