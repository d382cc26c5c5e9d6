//! OCI spec (JSON) -> validated [`InitPlan`]: every check that can run before a process exists
//! runs here, so malformed or hostile input gets INVALID_ARGUMENT and nothing is left behind.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};

use super::error::{EngineError, Result};
use super::paths::clean_absolute;
use super::plan::{CapsPlan, DevicePlan, InitKind, InitPlan, MountPlan, ProcessPlan, RootfsPlan};
use super::{mountopt, seccomp};

/// A process's PATH when its spec gives none (also the debug shell's, after its program).
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(msg.into())
}

pub(crate) fn parse_spec(json: &[u8]) -> Result<Spec> {
    serde_json::from_slice(json).map_err(|e| invalid(format!("parse OCI runtime spec: {e}")))
}

pub(crate) fn parse_process(json: &[u8]) -> Result<Process> {
    serde_json::from_slice(json).map_err(|e| invalid(format!("parse OCI process: {e}")))
}

pub(crate) fn parse_resources(json: &[u8]) -> Result<LinuxResources> {
    serde_json::from_slice(json).map_err(|e| invalid(format!("parse OCI LinuxResources: {e}")))
}

/// A container's namespaces: which are new (flags) and which are joined (name, path).
#[derive(Debug, Clone)]
pub(crate) struct Namespaces {
    pub(crate) new_flags: CloneFlags,
    pub(crate) join: Vec<(String, PathBuf)>,
    /// Names (as in /proc/PID/ns) of every namespace the container has apart from the agent's.
    pub(crate) names: Vec<String>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            new_flags: CloneFlags::empty(),
            join: Vec::new(),
            names: Vec::new(),
        }
    }
}

fn ns_flag(t: LinuxNamespaceType) -> Result<CloneFlags> {
    Ok(match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => {
            return Err(invalid("time namespaces are not supported"));
        }
        LinuxNamespaceType::User => {
            return Err(invalid(
                "user namespaces are not supported (the VM is the isolation boundary)",
            ));
        }
    })
}

pub(crate) fn namespaces(spec: &Spec) -> Result<Namespaces> {
    let mut ns = Namespaces::default();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in &list {
        let flag = ns_flag(n.typ())?;
        let name = n.typ().to_string();
        if ns.names.contains(&name) {
            return Err(invalid(format!("namespace {name} listed twice")));
        }
        match n.path() {
            Some(p) if !p.as_os_str().is_empty() => {
                let p = clean_absolute(p, &format!("{name} namespace path"))?;
                if !p.exists() {
                    return Err(invalid(format!(
                        "{name} namespace path {p:?} does not exist"
                    )));
                }
                ns.join.push((name.clone(), p));
            }
            _ => ns.new_flags |= flag,
        }
        ns.names.push(name);
    }
    Ok(ns)
}

fn rlimit_number(name: &str) -> Option<i32> {
    let n = match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    };
    i32::try_from(n).ok()
}

fn cap_names(set: &Option<oci_spec::runtime::Capabilities>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in set.iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if name.parse::<caps::Capability>().is_err() {
            return Err(invalid(format!("unknown capability {name:?}")));
        }
        out.push(name);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every entry of `env` is `NAME=VALUE`.
pub(crate) fn check_env(env: &[String]) -> Result<()> {
    match env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
        Some(bad) => Err(invalid(format!(
            "process.env entry {bad:?} is not NAME=VALUE"
        ))),
        None => Ok(()),
    }
}

/// The process part of a plan, shared by Create and Exec.
pub(crate) fn process_plan(p: &Process, seccomp: Vec<seccomp::Program>) -> Result<ProcessPlan> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(invalid("process.args must name a program"));
    }
    if args
        .iter()
        .chain(p.env().iter().flatten())
        .any(|a| a.contains('\0'))
    {
        return Err(invalid("process args and env must not contain NUL bytes"));
    }
    let mut env = p.env().clone().unwrap_or_default();
    check_env(&env)?;
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_owned());
    }
    let cwd = if p.cwd().as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        clean_absolute(p.cwd(), "process.cwd")?
    };
    let mut rlimits = Vec::new();
    for r in p.rlimits().iter().flatten() {
        let name = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let num = rlimit_number(&name).ok_or_else(|| invalid(format!("unknown rlimit {name}")))?;
        if r.soft() > r.hard() {
            return Err(invalid(format!(
                "rlimit {name}: soft limit {} above hard limit {}",
                r.soft(),
                r.hard()
            )));
        }
        rlimits.push((num, r.soft(), r.hard()));
    }
    let caps = match p.capabilities() {
        None => None,
        Some(c) => Some(CapsPlan {
            bounding: cap_names(c.bounding())?,
            effective: cap_names(c.effective())?,
            inheritable: cap_names(c.inheritable())?,
            permitted: cap_names(c.permitted())?,
            ambient: cap_names(c.ambient())?,
        }),
    };
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(format!("oomScoreAdj {adj} outside -1000..=1000")));
        }
    }
    let user = p.user();
    Ok(ProcessPlan {
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        rlimits,
        caps,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        seccomp,
    })
}

/// Compiled seccomp filters of a spec (also applied to its exec processes).
pub(crate) fn seccomp_of(spec: &Spec) -> Result<Vec<seccomp::Program>> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => seccomp::compile(profile),
        None => Ok(Vec::new()),
    }
}

fn mount_plan(m: &oci_spec::runtime::Mount) -> Result<MountPlan> {
    let dest = m.destination();
    let dest = if dest.is_absolute() {
        dest.clone()
    } else {
        Path::new("/").join(dest)
    };
    let destination = clean_absolute(&dest, "mount destination")?;
    if destination == Path::new("/") {
        return Err(invalid("a mount destination must not be /"));
    }
    let opts = mountopt::parse(&m.options().clone().unwrap_or_default());
    let mut fstype = m.typ().clone().unwrap_or_default();
    let is_bind = fstype == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    let mut flags = opts.flags;
    let source = m.source().clone();
    if is_bind {
        flags |= MsFlags::MS_BIND;
        fstype = "bind".into();
        let src = source
            .as_ref()
            .ok_or_else(|| invalid(format!("bind mount on {destination:?} has no source")))?;
        let src = clean_absolute(src, "bind mount source")?;
        if !src.exists() {
            return Err(invalid(format!("bind mount source {src:?} does not exist")));
        }
    } else {
        if fstype.is_empty() {
            return Err(invalid(format!("mount on {destination:?} has no type")));
        }
        if fstype == "cgroup" {
            fstype = "cgroup2".into();
        }
        if !fstype
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
        {
            return Err(invalid(format!(
                "mount type {fstype:?} is not a file-system name"
            )));
        }
    }
    let data = opts.data.join(",");
    if data.contains('\0') {
        return Err(invalid("mount data must not contain NUL bytes"));
    }
    Ok(MountPlan {
        destination,
        fstype,
        source,
        flags: flags.bits(),
        propagation: opts.propagation.bits(),
        data,
    })
}

fn default_devices() -> Vec<DevicePlan> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DevicePlan {
        path: PathBuf::from("/dev").join(name),
        kind: 'c',
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// The System V IPC sysctls of an ipc namespace (the `fs.mqueue.*` ones are too), as in runc's
/// validator (libcontainer/configs/validate).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Whether `path` names the agent's own network namespace.
fn is_agents_netns(path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| invalid(format!("network namespace {p:?}: {e}")))
    };
    Ok(id(path)? == id(Path::new("/proc/self/ns/net"))?)
}

/// Refuses a sysctl that would not stay inside the namespaces `ns` (a container's; empty: the
/// agent's own, for the pod-level sysctls), with runc's rules: IPC ones need an ipc namespace,
/// `kernel.domainname` a uts namespace, and nothing else is namespaced. `net.*` ones are the
/// exception: runc refuses them in its own network namespace (the host's), but the guest agent's
/// is the pod's (the pod NIC lives there, DESIGN.md §1), which CRI's containers share with the
/// sandbox through the netns path the shim drops. Only in host mode is it the host's.
fn check_sysctl(key: &str, ns: &Namespaces, host_mode: bool) -> Result<()> {
    let has = |name: &str| ns.names.iter().any(|n| n == name);
    let whose = if host_mode {
        "the host's"
    } else {
        "the whole guest's"
    };
    if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        if has("ipc") {
            return Ok(());
        }
        return Err(invalid(format!(
            "sysctl {key} needs an ipc namespace: without one it would change {whose}"
        )));
    }
    if key.starts_with("net.") {
        if host_mode {
            let agents = match ns.join.iter().find(|(name, _)| name == "net") {
                Some((_, path)) => is_agents_netns(path)?,
                None => !ns.new_flags.contains(CloneFlags::CLONE_NEWNET),
            };
            if agents {
                return Err(invalid(format!(
                    "sysctl {key} needs a network namespace: in host mode the agent's is the host's"
                )));
            }
        }
        return Ok(());
    }
    if has("uts") {
        match key {
            "kernel.domainname" => return Ok(()),
            "kernel.hostname" => {
                return Err(invalid(
                    "sysctl kernel.hostname conflicts with the spec's hostname field",
                ))
            }
            _ => {}
        }
    }
    Err(invalid(format!(
        "sysctl {key} is not namespaced and would change {whose}"
    )))
}

/// Checks sysctls (see [`check_sysctl`]) and returns them as (/proc/sys-relative path, value),
/// sorted.
pub(crate) fn sysctls<'a>(
    list: impl IntoIterator<Item = (&'a String, &'a String)>,
    ns: &Namespaces,
    host_mode: bool,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (key, value) in list {
        let path = sysctl_path(key)?;
        check_sysctl(key, ns, host_mode)?;
        out.push((path, value.clone()));
    }
    out.sort();
    Ok(out)
}

/// Checks a sysctl key and returns its /proc/sys-relative path.
fn sysctl_path(key: &str) -> Result<String> {
    if key.is_empty()
        || key.contains("..")
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        return Err(invalid(format!("bad sysctl name {key:?}")));
    }
    Ok(key.replace('.', "/"))
}

/// The full plan for a container's init process; `host_mode`: the agent runs on a real host
/// (`--listen unix:`), not as the guest's PID 1.
pub(crate) fn create_plan(
    spec: &Spec,
    ns: &Namespaces,
    terminal: bool,
    host_mode: bool,
) -> Result<InitPlan> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("the spec has no process"))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("the spec has no root"))?;
    let root_path = clean_absolute(root.path(), "root.path")?;
    if !root_path.is_dir() {
        return Err(invalid(format!(
            "rootfs {root_path:?} does not exist or is not a directory"
        )));
    }
    if !ns.new_flags.contains(CloneFlags::CLONE_NEWNS) {
        return Err(invalid("a container needs a new mount namespace"));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let mounts = spec
        .mounts()
        .iter()
        .flatten()
        .map(mount_plan)
        .collect::<Result<Vec<_>>>()?;
    let mut devices = Vec::new();
    if mounts.iter().any(|m| m.destination == Path::new("/dev")) {
        devices = default_devices();
    }
    for d in linux.devices().iter().flatten() {
        let path = clean_absolute(d.path(), "device path")?;
        let kind = match serde_json::to_value(d.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref()
        {
            Some("c" | "u") => 'c',
            Some("b") => 'b',
            Some("p") => 'p',
            other => {
                return Err(invalid(format!(
                    "device {path:?}: unsupported type {other:?}"
                )))
            }
        };
        let major =
            u64::try_from(d.major()).map_err(|_| invalid(format!("device {path:?}: bad major")))?;
        let minor =
            u64::try_from(d.minor()).map_err(|_| invalid(format!("device {path:?}: bad minor")))?;
        devices.retain(|x| x.path != path);
        devices.push(DevicePlan {
            path,
            kind,
            major,
            minor,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    let clean_list = |list: &Option<Vec<String>>, what: &str| -> Result<Vec<PathBuf>> {
        list.iter()
            .flatten()
            .map(|p| clean_absolute(Path::new(p), what))
            .collect()
    };
    let propagation = match linux.rootfs_propagation() {
        Some(name) if !name.is_empty() => mountopt::propagation_by_name(name)
            .ok_or_else(|| invalid(format!("bad rootfsPropagation {name:?}")))?,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    let new_uts = ns.new_flags.contains(CloneFlags::CLONE_NEWUTS);
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if let Some(h) = &hostname {
        if !new_uts {
            return Err(invalid("hostname set without a new uts namespace"));
        }
        if h.len() > 64 || h.contains('\0') {
            return Err(invalid(format!("bad hostname {h:?}")));
        }
    }
    let sysctls = sysctls(linux.sysctl().iter().flatten(), ns, host_mode)?;
    let seccomp = seccomp_of(spec)?;
    Ok(InitPlan {
        kind: InitKind::Create,
        cgroup_procs: None,
        join_ns: ns.join.clone(),
        new_ns_flags: ns.new_flags.bits(),
        rootfs: Some(RootfsPlan {
            root: root_path,
            readonly: root.readonly().unwrap_or(false),
            propagation: propagation.bits(),
            mounts,
            devices,
            masked_paths: clean_list(linux.masked_paths(), "masked path")?,
            readonly_paths: clean_list(linux.readonly_paths(), "readonly path")?,
        }),
        hostname,
        sysctls,
        process: process_plan(process, seccomp)?,
        terminal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra_linux: &str, mounts: &str) -> Spec {
        let json = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"/"}},
            "process":{{"args":["true"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
            "mounts":[{mounts}],
            "linux":{{"namespaces":[{{"type":"mount"}},{{"type":"pid"}}]{extra_linux}}}}}"#
        );
        parse_spec(json.as_bytes()).unwrap()
    }

    fn plan(s: &Spec) -> Result<InitPlan> {
        let ns = namespaces(s)?;
        create_plan(s, &ns, false, false)
    }

    #[test]
    fn accepts_a_minimal_spec() {
        let s = spec(
            "",
            r#"{"destination":"/proc","type":"proc","source":"proc"}"#,
        );
        let p = plan(&s).unwrap();
        assert_eq!(p.process.args, vec!["true"]);
        assert!(p.process.env.iter().any(|e| e.starts_with("PATH=")));
        assert_eq!(p.rootfs.unwrap().mounts[0].fstype, "proc");
    }

    #[test]
    fn refuses_hostile_input() {
        assert!(parse_spec(b"{not json").is_err());
        let bad_ns = r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"bogus"}]}}"#;
        assert!(parse_spec(bad_ns.as_bytes()).is_err());
        let s = spec("", r#"{"destination":"/../../etc","type":"tmpfs"}"#);
        assert!(matches!(plan(&s), Err(EngineError::InvalidArgument(_))));
        let s = spec(r#","sysctl":{"kernel.panic":"1"}"#, "");
        assert!(matches!(plan(&s), Err(EngineError::InvalidArgument(_))));
        for ns in [
            r#"[{"type":"mount"},{"type":"mount"}]"#,
            r#"[{"type":"user"},{"type":"mount"}]"#,
        ] {
            let mut v: serde_json::Value = serde_json::to_value(spec("", "")).unwrap();
            v["linux"]["namespaces"] = serde_json::from_str(ns).unwrap();
            let s = parse_spec(v.to_string().as_bytes()).unwrap();
            assert!(plan(&s).is_err(), "{ns}");
        }
        let p: Process = parse_process(
            br#"{"args":["x"],"cwd":"/","user":{"uid":0,"gid":0},
                "rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":5}]}"#,
        )
        .unwrap();
        assert!(process_plan(&p, vec![]).is_err());
        let p = parse_process(br#"{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#).unwrap();
        assert!(process_plan(&p, vec![]).is_err());
    }

    /// The plan's sysctls for a spec with these namespaces and sysctls.
    fn sysctl_plan(ns_json: &str, sysctls: &str, host_mode: bool) -> Result<Vec<(String, String)>> {
        let mut v: serde_json::Value = serde_json::to_value(spec("", "")).unwrap();
        v["linux"]["namespaces"] = serde_json::from_str(ns_json).unwrap();
        v["linux"]["sysctl"] = serde_json::from_str(sysctls).unwrap();
        let s = parse_spec(v.to_string().as_bytes()).unwrap();
        let ns = namespaces(&s)?;
        Ok(create_plan(&s, &ns, false, host_mode)?.sysctls)
    }

    #[test]
    fn namespaced_sysctls_are_taken_as_runc_takes_them() {
        let ipc = r#"[{"type":"mount"},{"type":"ipc"},{"type":"uts"}]"#;
        // CRI's sandbox with containerd 2.x's defaults and a safe and an unsafe pod sysctl.
        let pod = r#"{"kernel.shm_rmid_forced":"1","fs.mqueue.msg_max":"100",
            "net.ipv4.ip_unprivileged_port_start":"0","net.ipv4.ping_group_range":"0 2147483647"}"#;
        assert_eq!(
            sysctl_plan(ipc, pod, false).unwrap(),
            [
                ("fs/mqueue/msg_max", "100"),
                ("kernel/shm_rmid_forced", "1"),
                ("net/ipv4/ip_unprivileged_port_start", "0"),
                ("net/ipv4/ping_group_range", "0 2147483647"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let domain = r#"{"kernel.domainname":"example.org"}"#;
        assert_eq!(sysctl_plan(ipc, domain, false).unwrap().len(), 1);
        // An ipc namespace joined by path (a CRI app container) is as good as a new one.
        let joined = r#"[{"type":"mount"},{"type":"ipc","path":"/proc/self/ns/ipc"}]"#;
        let shm = r#"{"kernel.shm_rmid_forced":"1"}"#;
        assert_eq!(sysctl_plan(joined, shm, true).unwrap().len(), 1);
    }

    #[test]
    fn sysctls_that_would_leave_the_containers_namespaces_are_refused() {
        let refused = |ns_json: &str, sysctls: &str, host_mode: bool| {
            let r = sysctl_plan(ns_json, sysctls, host_mode);
            assert!(
                matches!(r, Err(EngineError::InvalidArgument(_))),
                "{ns_json} {sysctls} host mode {host_mode}: {r:?}"
            );
        };
        let all = r#"[{"type":"mount"},{"type":"ipc"},{"type":"uts"},{"type":"network"}]"#;
        for global in [
            r#"{"kernel.panic":"1"}"#,
            r#"{"vm.overcommit_memory":"1"}"#,
            r#"{"kernel.hostname":"x"}"#,
            r#"{"fs.file-max":"100"}"#,
        ] {
            refused(all, global, false);
            refused(all, global, true);
        }
        // IPC ones without an ipc namespace would change the agent's (hostIPC, as runc).
        let no_ipc = r#"[{"type":"mount"}]"#;
        refused(no_ipc, r#"{"kernel.shm_rmid_forced":"1"}"#, false);
        refused(no_ipc, r#"{"fs.mqueue.msg_max":"100"}"#, false);
        refused(no_ipc, r#"{"kernel.domainname":"x"}"#, false);
        // net.*: the guest agent's network namespace is the pod's; in host mode it is the
        // host's, whether shared or joined by path.
        let net = r#"{"net.ipv4.ping_group_range":"0 2147483647"}"#;
        assert_eq!(sysctl_plan(no_ipc, net, false).unwrap().len(), 1);
        refused(no_ipc, net, true);
        refused(
            r#"[{"type":"mount"},{"type":"network","path":"/proc/self/ns/net"}]"#,
            net,
            true,
        );
        let own_net = r#"[{"type":"mount"},{"type":"network"}]"#;
        assert_eq!(sysctl_plan(own_net, net, true).unwrap().len(), 1);
        refused(own_net, r#"{"net/../../kernel/panic":"1"}"#, false);
    }
}
