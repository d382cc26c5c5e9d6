//! The jailer step on this host, as root, without KVM: Debian's static busybox stands in for
//! hull-vmm (bound as `/hull-vmm`, run as `sleep` through argv[0]) and the test reads its
//! `/proc` entries from outside, as the lab check does for hull-vmm.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::clone::{self, Bind, Spec};
use super::*;

const ID: u32 = 0x7000_fff0;

fn spec(root: &Path, source: &Path, stderr: RawFd, fds: Vec<RawFd>) -> Spec {
    Spec {
        root: root.to_path_buf(),
        binds: vec![Bind {
            source: source.to_path_buf(),
            target: "hull-vmm",
            read_only: true,
            exec: true,
            dev: false,
        }],
        exe: VMM,
        argv: vec!["sleep".into(), "100".into()],
        env: vec![],
        fds,
        stdout: None,
        stderr: Some(stderr),
        cgroup_procs: None,
        uid: ID,
        gid: ID,
        groups: vec![ID + 1],
        nofile: VMM_NOFILE,
        fsize: 1 << 20,
    }
}

fn status_field(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {key} in {s}"))
        .trim()
        .to_owned()
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("ns link")
}

#[tokio::test(flavor = "current_thread")]
async fn a_jailed_child_is_unprivileged_alone_in_its_namespaces_and_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (mount namespaces, setresuid)"
    );
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "this test needs Debian's busybox-static (scripts/install-deps)"
    );
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("jail");
    std::fs::create_dir(&root).expect("jail dir");
    std::os::unix::fs::chown(&root, Some(ID), Some(ID)).expect("chown");
    let s = spec(&root, busybox, 2, vec![]);
    clone::make_mount_points(&root, &s.binds).expect("mount points");
    let (passed, _keep) = nix::unistd::pipe().expect("pipe");
    let s = spec(&root, busybox, 2, vec![passed.as_raw_fd()]);

    let (pid, pidfd) = clone::spawn(&s).expect("spawn the jailed sleep");
    let child = Supervised::from_pidfd("sleep", pid, pidfd).expect("supervise");
    // It has exec'd when spawn returns; its /proc entries now describe the jailed sleep.
    assert_eq!(status_field(pid, "Uid"), format!("{ID}\t{ID}\t{ID}\t{ID}"));
    assert_eq!(status_field(pid, "Gid"), format!("{ID}\t{ID}\t{ID}\t{ID}"));
    assert_eq!(status_field(pid, "Groups"), format!("{}", ID + 1));
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // PID 1 of its own pid namespace.
    assert_eq!(status_field(pid, "NSpid"), format!("{pid}\t1"));
    let me = std::process::id().to_string();
    let p = pid.to_string();
    for kind in ["mnt", "pid", "net", "ipc", "uts"] {
        assert_ne!(ns(&me, kind), ns(&p, kind), "{kind}");
    }
    // Its root is the jail directory: the same inode, seen from outside.
    let jail_root = std::fs::metadata(format!("/proc/{pid}/root/")).expect("root");
    let dir = std::fs::metadata(&root).expect("jail");
    assert_eq!((jail_root.dev(), jail_root.ino()), (dir.dev(), dir.ino()));
    assert_eq!(sorted_names(&format!("/proc/{pid}/root")), ["hull-vmm"]);
    assert_eq!(
        sorted_names(&format!("/proc/{pid}/fd")),
        ["0", "1", "2", "3"],
        "only stdio and the passed fd"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    assert!(
        limits.lines().any(|l| l.starts_with("Max open files")
            && l.contains(" 1024 ")
            && l.split_whitespace().filter(|w| *w == "1024").count() == 2),
        "{limits}"
    );
    assert!(
        limits.lines().any(|l| l.starts_with("Max file size")
            && l.split_whitespace().filter(|w| *w == "1048576").count() == 2),
        "{limits}"
    );
    // The mount namespace holds nothing of the host's: only the jail and its bind.
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    assert_eq!(mounts.lines().count(), 2, "{mounts}");
    // As PID 1 of its namespace without a handler, sleep ignores SIGTERM from outside: stop
    // escalates to SIGKILL through the pidfd.
    let st = child.stop(Duration::from_millis(300)).await;
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    assert!(child.try_status().is_some());
}

#[test]
fn a_failing_step_is_reported_by_name() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("jail");
    std::fs::create_dir(&root).expect("jail dir");
    let s = spec(&root, &t.path().join("missing"), 2, vec![]);
    clone::make_mount_points(&root, &s.binds).expect("mount points");
    let e = clone::spawn(&s).unwrap_err().to_string();
    assert!(e.contains("bind a file into the jail"), "{e}");
    // The exec step fails when the bound file is not executable.
    let script = t.path().join("script");
    std::fs::write(&script, "not a program").expect("write");
    let e = clone::spawn(&spec(&root, &script, 2, vec![]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("exec"), "{e}");
}

#[test]
fn jail_paths_and_limits() {
    assert_eq!(
        host_path(Path::new("/run/hull/pods/p"), VSOCK_SOCKET),
        Path::new("/run/hull/pods/p/jail/vsock.sock")
    );
    // Where hullctl looks for a pod's hull-vmm API.
    let pod = hull_contract::pods::pod_dir("p");
    assert_eq!(
        host_path(&pod, API_SOCKET),
        pod.join(hull_contract::pods::API_SOCKET)
    );
    assert_eq!(
        host_path(&pod, VSOCK_SOCKET),
        pod.join(hull_contract::pods::AGENT_SOCKET)
    );
    assert_eq!(fsize_limit(320), 320 << 20);
}

/// The names in directory `dir`, sorted.
fn sorted_names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {dir}: {e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
