//! The init helper: the agent binary re-executed as `hull-agent __hull_init` for every
//! container process (Kata's rustjail does the same). The agent runs a multi-threaded tokio
//! runtime, where fork() may only be followed by async-signal-safe calls; a fresh exec is
//! single-threaded, so namespace, mount and credential setup can be plain Rust.
//!
//! Protocol on the sync socket (fd 3), one JSON line per message:
//! 1. agent -> helper: the [`InitPlan`].
//! 2. helper: joins the cgroup and namespaces, unshares, forks; -> agent: `Pid(child)`; exits.
//!    The child is re-parented to the agent (PID 1 or subreaper).
//! 3. agent registers the pid with the reaper, then -> child: `go`. The child may exit only
//!    after this, so its status can never reach the reaper unannounced.
//! 4. child: setsid; rootfs up to pivot_root; with a terminal, makes it from the container's
//!    devpts ([`console`]) -> `Terminal` with the master attached (SCM_RIGHTS); the rest of
//!    the rootfs, credentials; Create: -> `Ready`, waits for `start`.
//! 5. child: seccomp and execve. The socket is close-on-exec: EOF means the exec succeeded,
//!    `Error(..)` says which step failed.
//!
//! With a terminal the helper's stdio is /dev/null until the child replaces it with the slave.

pub(crate) mod console;
pub(crate) mod process;
pub(crate) mod rootfs;
pub(crate) mod syscall;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sched::CloneFlags;
use nix::unistd::ForkResult;

use self::syscall::{Linux, Syscall};
use super::plan::{InitKind, InitPlan, InitReply};
use crate::sys;

/// argv[1] that selects the init helper.
pub const INIT_ARG: &str = "__hull_init";

fn send(sock: &mut UnixStream, reply: &InitReply) {
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        let _ = sock.write_all(&line);
    }
}

/// Entry point of `hull-agent __hull_init`. Never returns.
pub fn main() -> ! {
    let Some(fd) = sys::adopt_fd3() else {
        eprintln!("hull-agent init: no sync socket on fd 3");
        std::process::exit(125);
    };
    sys::close_fds_from(4);
    let mut sock = UnixStream::from(fd);
    let _ = fcntl(&sock, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let code = match helper(&mut sock) {
        Ok(()) => 0,
        Err(msg) => {
            send(&mut sock, &InitReply::Error(msg));
            1
        }
    };
    std::process::exit(code)
}

fn helper(sock: &mut UnixStream) -> Result<(), String> {
    let mut reader = BufReader::new(
        sock.try_clone()
            .map_err(|e| format!("dup sync socket: {e}"))?,
    );
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read plan: {e}"))?;
    let plan: InitPlan = serde_json::from_str(&line).map_err(|e| format!("decode plan: {e}"))?;
    if let Some(procs) = &plan.cgroup_procs {
        std::fs::write(procs, "0").map_err(|e| format!("join cgroup {procs:?}: {e}"))?;
    }
    // Mount namespace last: joining it changes the root the other paths resolve against.
    let mut joins = plan.join_ns.clone();
    joins.sort_by_key(|(name, _)| name == "mnt");
    let mut fds = Vec::new();
    for (name, path) in &joins {
        let f = nix::fcntl::open(
            path.as_path(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open {name} namespace {path:?}: {e}"))?;
        fds.push((name.clone(), f));
    }
    for (name, f) in &fds {
        nix::sched::setns(f, CloneFlags::empty())
            .map_err(|e| format!("join {name} namespace: {e}"))?;
    }
    drop(fds);
    let flags = CloneFlags::from_bits_truncate(plan.new_ns_flags);
    if !flags.is_empty() {
        nix::sched::unshare(flags).map_err(|e| format!("unshare {flags:?}: {e}"))?;
    }
    match sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => {
            send(sock, &InitReply::Pid(child.as_raw()));
            Ok(())
        }
        ForkResult::Child => {
            let msg = child(sock, &mut reader, &plan);
            send(sock, &InitReply::Error(msg));
            std::process::exit(127)
        }
    }
}

fn wait_for(reader: &mut BufReader<UnixStream>, word: &str) -> Result<(), String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(_) if line.trim() == word => Ok(()),
        Ok(_) => Err(format!("expected {word:?} from the agent, got {line:?}")),
        Err(e) => Err(format!("wait for {word:?}: {e}")),
    }
}

/// The container process. Returns only with the reason it failed.
fn child(sock: &mut UnixStream, reader: &mut BufReader<UnixStream>, plan: &InitPlan) -> String {
    match setup(sock, reader, plan) {
        Ok(()) => process::exec(&plan.process).to_string(),
        Err(e) => e,
    }
}

/// After pivot_root and the console, in runc's order (libcontainer's standard_init_linux.go):
/// read-only `/`, hostname, sysctls, then the read-only and masked paths. The sysctls must come
/// before those: CRI makes /proc/sys read-only, and they are written through it.
fn finish_rootfs(sys: &dyn Syscall, plan: &InitPlan) -> Result<(), String> {
    if let Some(rootfs) = &plan.rootfs {
        rootfs::finalize(sys, rootfs).map_err(|e| e.to_string())?;
    }
    if let Some(h) = &plan.hostname {
        sys.sethostname(h)
            .map_err(|e| format!("sethostname {h:?}: {e}"))?;
    }
    for (key, value) in &plan.sysctls {
        sys.write_sysctl(key, value)
            .map_err(|e| format!("sysctl {key}={value}: {e}"))?;
    }
    if let Some(rootfs) = &plan.rootfs {
        rootfs::protect_paths(sys, rootfs).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Everything between `go` and the exec.
fn setup(
    sock: &mut UnixStream,
    reader: &mut BufReader<UnixStream>,
    plan: &InitPlan,
) -> Result<(), String> {
    wait_for(reader, "go")?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let linux = Linux;
    if let Some(rootfs) = &plan.rootfs {
        rootfs::prepare(&linux, rootfs).map_err(|e| e.to_string())?;
        rootfs::pivot(&linux, rootfs).map_err(|e| e.to_string())?;
    }
    // After pivot_root (or joining the container's mount namespace, for an exec), so that
    // /dev/ptmx is the container's; before a read-only / could forbid creating /dev/console.
    if plan.terminal {
        let terminal = console::open(plan.process.uid).map_err(|e| e.to_string())?;
        if plan.rootfs.is_some() {
            rootfs::bind_console(&linux, &terminal.slave).map_err(|e| e.to_string())?;
        }
        console::send_master(sock, terminal).map_err(|e| e.to_string())?;
    }
    finish_rootfs(&linux, plan)?;
    process::setup_privileged(&plan.process).map_err(|e| e.to_string())?;
    if plan.kind == InitKind::Create {
        send(sock, &InitReply::Ready);
        wait_for(reader, "start")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::syscall::Recorder;
    use super::*;
    use crate::engine::plan::{ProcessPlan, RootfsPlan};

    /// CRI's read-only /proc/sys must not stop the pod's sysctls: they are written before the
    /// read-only and masked paths, after the read-only root and the hostname (runc's order).
    #[test]
    fn sysctls_are_written_before_the_read_only_and_masked_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sys_dir = dir.path().join("sys");
        let kcore = dir.path().join("kcore");
        std::fs::create_dir(&sys_dir).unwrap();
        std::fs::write(&kcore, b"").unwrap();
        let plan = InitPlan {
            kind: InitKind::Create,
            cgroup_procs: None,
            join_ns: Vec::new(),
            new_ns_flags: 0,
            rootfs: Some(RootfsPlan {
                root: PathBuf::from("/unused"),
                readonly: true,
                propagation: 0,
                mounts: Vec::new(),
                devices: Vec::new(),
                masked_paths: vec![kcore.clone()],
                readonly_paths: vec![sys_dir.clone()],
            }),
            hostname: Some("box".into()),
            sysctls: vec![("kernel/shm_rmid_forced".into(), "1".into())],
            process: ProcessPlan::default(),
            terminal: false,
        };
        let rec = Recorder::default();
        finish_rootfs(&rec, &plan).unwrap();
        let log = rec.0.borrow();
        assert!(
            log[0].starts_with("mount None / None")
                && log[0].contains("MS_REMOUNT")
                && log[0].contains("MS_RDONLY"),
            "{log:?}"
        );
        assert_eq!(log[1], "sethostname box");
        assert_eq!(log[2], "sysctl kernel/shm_rmid_forced=1");
        let sys_dir = sys_dir.display().to_string();
        assert!(
            log[3].contains(&sys_dir) && log[3].contains("MS_BIND"),
            "{log:?}"
        );
        assert!(
            log[4].contains(&sys_dir) && log[4].contains("MS_RDONLY"),
            "{log:?}"
        );
        assert!(log[5].contains(&kcore.display().to_string()) && log[5].contains("/dev/null"));
        assert_eq!(log.len(), 6, "{log:?}");
    }
}
