//! A supervised child process (hull-vmm, virtiofsd, the host agent): one task owns the
//! `tokio::process::Child` and reaps it, so its exit is seen exactly once, by whoever asks,
//! and a SIGKILL is only ever sent to a child not yet reaped (never to a reused pid).

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::{watch, Notify};

#[derive(Debug, Clone)]
pub struct Supervised {
    name: &'static str,
    pid: u32,
    exited: watch::Receiver<Option<ExitStatus>>,
    kill: Arc<Notify>,
}

impl Supervised {
    /// Takes ownership of `child`; `name` is for logs.
    pub fn new(name: &'static str, mut child: Child) -> Self {
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
            match status {
                Ok(s) => {
                    tracing::debug!(name, pid, %s, "child exited");
                    let _ = tx.send(Some(s));
                }
                // wait(2) failing leaves nothing to wait for; report it as killed.
                Err(e) => {
                    tracing::error!(name, pid, "wait: {e}");
                    let _ = tx.send(Some(std::os::unix::process::ExitStatusExt::from_raw(9)));
                }
            }
        });
        Supervised {
            name,
            pid,
            exited: rx,
            kill,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, if the child has ended.
    pub fn try_status(&self) -> Option<ExitStatus> {
        *self.exited.borrow()
    }

    /// Resolves when the child has ended.
    pub async fn exited(&self) -> ExitStatus {
        let mut rx = self.exited.clone();
        let r = rx.wait_for(Option::is_some).await.map(|s| *s);
        // The reaper task never drops its sender before sending; a closed channel means the
        // runtime is going down, and the child with it (kill_on_drop is not relied upon).
        r.ok()
            .flatten()
            .unwrap_or_else(|| std::os::unix::process::ExitStatusExt::from_raw(9))
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    pub async fn stop(&self, grace: Duration) -> ExitStatus {
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

/// What a child does between fork and exec.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChildSetup {
    /// An open `cgroup.procs` of the pod's cgroup: the child moves itself in before exec, so
    /// all its memory (guest RAM included) is charged to the pod from the first page.
    pub cgroup_procs: Option<std::os::fd::RawFd>,
    /// Passed to the child as fd 3 (virtiofsd's `--fd=3` listening socket).
    pub fd3: Option<std::os::fd::RawFd>,
}

/// Runs in the forked child: only async-signal-safe calls, no allocation.
fn in_child(setup: ChildSetup) -> std::io::Result<()> {
    if let Some(fd) = setup.cgroup_procs {
        // "0" means the writing process (cgroup v2, cgroup.procs).
        // SAFETY: write(2) from a static 1-byte buffer to an fd the parent keeps open.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if let Some(fd) = setup.fd3 {
        // dup2 clears FD_CLOEXEC on the new descriptor, so fd 3 survives exec.
        // SAFETY: dup2(2) on an fd the parent keeps open; fd 3 is replaced atomically.
        if unsafe { libc::dup2(fd, 3) } != 3 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawns `cmd` with `setup` applied in the child.
pub fn spawn(cmd: &mut tokio::process::Command, setup: ChildSetup) -> std::io::Result<Child> {
    // SAFETY: the closure runs in the forked child before exec; `in_child` calls only
    // write(2) and dup2(2), which are async-signal-safe, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || in_child(setup));
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
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(15));

        // A child that ignores SIGTERM is killed after the grace period.
        let c = tokio::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 100"])
            .spawn()
            .expect("spawn");
        let s = Supervised::new("sh", c);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = s.stop(Duration::from_millis(300)).await;
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    }
}
