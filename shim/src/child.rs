//! The shim's child processes (hull-vmm, virtiofsd, the host agent, a `binary://` logger):
//! how one is spawned (cgroup, parent-death signal, passed fds; [`spawn`]) and supervised
//! ([`Supervised`]): one task owns the child (a `tokio::process::Child`, or the pidfd of a
//! process the jail cloned) and reaps it, so its exit is seen exactly once, by whoever asks,
//! and a SIGKILL is only ever sent to a child not yet reaped (never to a reused pid).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::Child;
use tokio::sync::{watch, Notify};

#[derive(Debug, Clone)]
pub(crate) struct Supervised {
    name: &'static str,
    pid: u32,
    exited: watch::Receiver<Option<ExitStatus>>,
    kill: Arc<Notify>,
}

/// Publishes what the reaper saw; a failed wait(2) leaves nothing to wait for and counts as
/// killed.
fn report(
    name: &'static str,
    pid: u32,
    tx: &watch::Sender<Option<ExitStatus>>,
    status: std::io::Result<ExitStatus>,
) {
    match status {
        Ok(s) => {
            tracing::debug!(name, pid, %s, "child exited");
            let _ = tx.send(Some(s));
        }
        Err(e) => {
            tracing::error!(name, pid, "wait: {e}");
            let _ = tx.send(Some(ExitStatus::from_raw(9)));
        }
    }
}

impl Supervised {
    /// Takes ownership of `child`; `name` is for logs.
    pub(crate) fn new(name: &'static str, mut child: Child) -> Self {
        let pid = child.id().unwrap_or(0);
        let (tx, rx) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let k = Arc::clone(&kill);
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                () = k.notified() => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            report(name, pid, &tx, status);
        });
        Supervised {
            name,
            pid,
            exited: rx,
            kill,
        }
    }

    /// Takes ownership of child `pid` through its `pidfd` (a process cloned by the jail,
    /// which tokio does not know): the pidfd turns readable when it exits, `waitid(P_PIDFD)`
    /// reaps exactly it, and a kill goes through the pidfd, never to a bare pid.
    pub(crate) fn from_pidfd(
        name: &'static str,
        pid: u32,
        pidfd: OwnedFd,
    ) -> std::io::Result<Self> {
        // SAFETY: `pidfd` is an open descriptor owned by the AsyncFd until it is dropped;
        // OwnedFd::as_raw_fd always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let (tx, rx) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let k = Arc::clone(&kill);
        tokio::spawn(async move {
            let status = tokio::select! {
                s = wait_pidfd(&fd) => s,
                () = k.notified() => {
                    // SAFETY: pidfd_send_signal(2) on the pidfd this task owns, with no
                    // siginfo; a child already exited makes it fail with ESRCH, harmlessly.
                    unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            fd.as_raw_fd(),
                            libc::SIGKILL,
                            std::ptr::null::<libc::siginfo_t>(),
                            0,
                        );
                    }
                    wait_pidfd(&fd).await
                }
            };
            report(name, pid, &tx, status);
        });
        Ok(Supervised {
            name,
            pid,
            exited: rx,
            kill,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, if the child has ended.
    pub(crate) fn try_status(&self) -> Option<ExitStatus> {
        *self.exited.borrow()
    }

    /// Resolves when the child has ended.
    pub(crate) async fn exited(&self) -> ExitStatus {
        let mut rx = self.exited.clone();
        let r = rx.wait_for(Option::is_some).await.map(|s| *s);
        // The reaper task never drops its sender before sending; a closed channel means the
        // runtime is going down, and the child with it (kill_on_drop is not relied upon).
        r.ok().flatten().unwrap_or_else(|| ExitStatus::from_raw(9))
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    pub(crate) async fn stop(&self, grace: Duration) -> ExitStatus {
        if self.try_status().is_none() {
            if let Ok(pid) = i32::try_from(self.pid) {
                // The reaper has not reaped it (status unset), so the pid is still this child
                // (at worst a zombie about to be reaped).
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        tracing::debug!(name = self.name, pid = self.pid, "stopping");
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!(
                    name = self.name,
                    pid = self.pid,
                    "ignored SIGTERM for {grace:?}; killing it"
                );
                self.kill.notify_one();
                self.exited().await
            }
        }
    }
}

/// Waits until the process behind `fd` has exited and reaps it.
async fn wait_pidfd(fd: &AsyncFd<OwnedFd>) -> std::io::Result<ExitStatus> {
    loop {
        let mut ready = fd.readable().await?;
        match reap_pidfd(fd.get_ref(), libc::WNOHANG)? {
            Some(s) => return Ok(s),
            None => ready.clear_ready(),
        }
    }
}

/// `waitid(P_PIDFD, fd, WEXITED | flags)`: the exit status, or `None` if (with `WNOHANG`)
/// the process still runs.
pub(crate) fn reap_pidfd(fd: &OwnedFd, flags: i32) -> std::io::Result<Option<ExitStatus>> {
    let id = libc::id_t::try_from(fd.as_raw_fd()).map_err(std::io::Error::other)?;
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) writes only into `info`, which lives across the call.
        let r = unsafe { libc::waitid(libc::P_PIDFD, id, &raw mut info, libc::WEXITED | flags) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: after a successful waitid(2) the SIGCHLD fields of `info` are set (si_pid 0
        // when WNOHANG found nothing).
        let pid = unsafe { info.si_pid() };
        // SAFETY: as above.
        let status = unsafe { info.si_status() };
        if pid == 0 {
            return Ok(None);
        }
        // The wait(2) status encoding, which ExitStatus wraps.
        let raw = match info.si_code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_DUMPED => status | 0x80,
            _ => status,
        };
        return Ok(Some(ExitStatus::from_raw(raw)));
    }
}

/// The first descriptor number [`ChildSetup::fds`] are passed as.
const FIRST_PASSED_FD: i32 = 3;
/// Above every target of [`ChildSetup::fds`]: sources are moved here first, so a source that
/// happens to be 3, 4 or 5 is not overwritten by an earlier dup2.
const PARKED_FD_MIN: i32 = 16;

/// What a child does between fork and exec.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ChildSetup {
    /// An open `cgroup.procs` of the pod's cgroup: the child moves itself in before exec, so
    /// all its memory (guest RAM included) is charged to the pod from the first page.
    pub(crate) cgroup_procs: Option<std::os::fd::RawFd>,
    /// Passed to the child as fds 3, 4, 5 in this order (virtiofsd's `--fd=3` listening
    /// socket; a `binary://` logger's stdout, stderr and ready pipes).
    pub(crate) fds: [Option<std::os::fd::RawFd>; 3],
    /// SIGKILL the child when the shim dies (`PR_SET_PDEATHSIG`): a VM whose shim is gone
    /// has nobody to serve it, and `shim delete` then finds only mounts and cgroups to clean.
    pub(crate) die_with_parent: bool,
}

/// Runs in the forked child: only async-signal-safe calls, no allocation.
fn in_child(setup: ChildSetup, parent: i32) -> std::io::Result<()> {
    if let Some(fd) = setup.cgroup_procs {
        // "0" means the writing process (cgroup v2, cgroup.procs).
        // SAFETY: write(2) from a static 1-byte buffer to an fd the parent keeps open.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if setup.die_with_parent {
        // SAFETY: prctl(2) with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The shim may have died between fork and prctl: then nobody would send the signal.
        // SAFETY: getppid(2) has no arguments and cannot fail.
        if unsafe { libc::getppid() } != parent {
            return Err(std::io::Error::other(
                "the shim exited while starting a child",
            ));
        }
    }
    let mut parked = [None; 3];
    for (slot, fd) in parked.iter_mut().zip(setup.fds) {
        if let Some(fd) = fd {
            // SAFETY: fcntl(2) F_DUPFD_CLOEXEC on an fd the parent keeps open; the copy is
            // closed by exec.
            let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, PARKED_FD_MIN) };
            if high < 0 {
                return Err(std::io::Error::last_os_error());
            }
            *slot = Some(high);
        }
    }
    for (target, fd) in (FIRST_PASSED_FD..).zip(parked) {
        if let Some(fd) = fd {
            // dup2 clears FD_CLOEXEC on the new descriptor, so it survives exec.
            // SAFETY: dup2(2) from the parked copy made above; the target is replaced
            // atomically.
            if unsafe { libc::dup2(fd, target) } != target {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Spawns `cmd` with `setup` applied in the child.
pub(crate) fn spawn(
    cmd: &mut tokio::process::Command,
    setup: ChildSetup,
) -> std::io::Result<Child> {
    let parent = i32::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec; `in_child` calls only
    // write(2), prctl(2), getppid(2), fcntl(2) and dup2(2), which are async-signal-safe, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || in_child(setup, parent));
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn exit_is_seen_and_stop_escalates_to_sigkill() {
        let c = tokio::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let s = Supervised::new("true", c);
        assert!(s.exited().await.success());
        assert!(s.try_status().is_some());

        let c = tokio::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .expect("spawn");
        let s = Supervised::new("sleep", c);
        let st = s.stop(Duration::from_secs(5)).await;
        assert_eq!(st.signal(), Some(15));

        // A child that ignores SIGTERM is killed after the grace period.
        let c = tokio::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 100"])
            .spawn()
            .expect("spawn");
        let s = Supervised::new("sh", c);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = s.stop(Duration::from_millis(300)).await;
        assert_eq!(st.signal(), Some(9));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn fds_arrive_as_3_4_5_in_order() {
        use std::os::fd::AsRawFd;
        // Which low fds are free is up to the test harness, so a source colliding with a
        // target (what the parking in `in_child` is for) cannot be staged safely here.
        let (a, _a) = nix::unistd::pipe().expect("pipe");
        let (b, _b) = nix::unistd::pipe().expect("pipe");
        let (c, _c) = nix::unistd::pipe().expect("pipe");
        let name = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("link");
        let want = [
            name(b.as_raw_fd()),
            name(a.as_raw_fd()),
            name(c.as_raw_fd()),
        ];
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args([
            "-c",
            "readlink /proc/self/fd/3 /proc/self/fd/4 /proc/self/fd/5",
        ])
        .stdout(std::process::Stdio::piped());
        let setup = ChildSetup {
            cgroup_procs: None,
            fds: [
                Some(b.as_raw_fd()),
                Some(a.as_raw_fd()),
                Some(c.as_raw_fd()),
            ],
            ..Default::default()
        };
        let out = spawn(&mut cmd, setup)
            .expect("spawn")
            .wait_with_output()
            .await
            .expect("wait");
        let got: Vec<_> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(std::path::PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }
}
