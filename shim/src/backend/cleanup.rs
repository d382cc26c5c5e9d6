//! Removing what a pod left on the host after its shim died, from `pod.json` alone (which may
//! be partial: the shim records each resource before it makes it): used by
//! `containerd-shim-hull-v2 delete`, which containerd runs for each task of a dead shim, and
//! by a launch that finds a stale pod directory. Nothing here trusts a bare pid (see
//! `record.rs`), and no directory is removed recursively while something is mounted in it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::pod_dir;
use super::record::{self, PodRecord};
use crate::share::Share;

/// How long killed processes may take to leave their cgroup before it is removed.
const CGROUP_DRAIN: Duration = Duration::from_secs(3);
/// How long `shim delete` lets a recorded shim that still runs finish exiting. containerd runs
/// `shim delete` as soon as the shim's connection closes: after every Shutdown (the shim is
/// then tearing the pod down itself) and when the shim is killed, and a killed process closes
/// its socket before it leaves /proc. kubelet 1.20 SIGKILLs whatever is in a finished pod's
/// cgroup, the shim included, while the pod is being stopped: seen in the lab, the pod's
/// hull-vmm, virtiofsd and directories stayed, as when the delete finds the dying shim still
/// there and leaves the pod to it. containerd gives the whole delete 5 s
/// (`io.containerd.timeout.shim.cleanup`): this wait plus [`CGROUP_DRAIN`] stay under it.
const SHIM_EXIT_WAIT: Duration = Duration::from_secs(1);

/// Pod `sid`'s record, unless its shim still runs (then its own Shutdown cleans the pod and
/// there is nothing for `shim delete` to do). A pod without a readable record counts as dead.
pub(crate) async fn dead_pod_record(sid: &str) -> Option<PodRecord> {
    once_shim_gone(
        record::read(&pod_dir(sid)).unwrap_or_default(),
        SHIM_EXIT_WAIT,
    )
    .await
}

/// `record` once its shim has gone (at once if it is not running), or `None` if the shim is
/// still there after `wait`.
async fn once_shim_gone(record: PodRecord, wait: Duration) -> Option<PodRecord> {
    let start = Instant::now();
    while record.shim.is_some_and(|s| s.alive()) {
        if start.elapsed() >= wait {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Some(record)
}

/// Kills everything pod `sid` started (`record`), then removes its cgroups, its share mounts
/// (every container's binds with them), its log directory, its directory (the jail with it;
/// the jail's own mounts died with hull-vmm's mount namespace) and frees its jail uid. Safe
/// to run twice, or on a pod that is gone.
pub(crate) async fn dead_pod(sid: &str, record: &PodRecord) {
    let dir = pod_dir(sid);
    kill_all(record);
    // Every cgroup killed first, so their processes die together and the drains below share
    // one wait instead of adding up against containerd's deadline.
    for cg in &record.cgroups {
        kill_cgroup(cg).await;
    }
    for cg in &record.cgroups {
        remove_cgroup(cg).await;
    }
    if let Some(ns) = record.netns.clone() {
        let links = record.links.clone();
        let _ = tokio::task::spawn_blocking(move || crate::net::detach(&ns, links)).await;
    }
    Share::at(&dir).destroy();
    remove_pod_dir(&dir).await;
    if let Some(logs) = &record.log_dir {
        remove_log_dir(logs, sid).await;
    }
    // By sandbox id: also frees a uid taken just before the shim died, not yet recorded.
    let _ = tokio::task::spawn_blocking({
        let sid = sid.to_owned();
        move || super::jail::Ids::node().release(&sid)
    })
    .await;
}

/// Removes a pod directory, unless something is still mounted in it: a share whose unmount
/// failed would have `remove_dir_all` delete a container's files through the mount. Then
/// the directory stays, and the log says what is mounted.
pub(crate) async fn remove_pod_dir(dir: &Path) {
    let mounted = crate::mount::mounts_under(dir);
    if !mounted.is_empty() {
        tracing::error!(dir = %dir.display(), ?mounted, "still mounted after the unmounts; leaving the pod directory");
        return;
    }
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "remove pod directory: {e}");
        }
    }
}

/// Removes `<[log] pod_dir>/<sid>`; a recorded path that is not named by the sandbox id (a
/// damaged record) is left alone rather than trusted.
pub(crate) async fn remove_log_dir(dir: &Path, sid: &str) {
    if dir.file_name() != Some(std::ffi::OsStr::new(sid)) || !dir.is_absolute() {
        tracing::warn!(dir = %dir.display(), "pod.json names a log directory not of this pod; left");
        return;
    }
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "remove pod log directory: {e}");
        }
    }
}

fn kill_all(r: &PodRecord) {
    for p in r.shim.iter().chain(&r.children) {
        p.kill();
    }
}

/// `cgroup.kill` the whole subtree, wait until it is empty, then remove it bottom-up. Used by
/// every teardown: a plain rmdir right after the pod's processes were reaped can still find
/// virtiofsd's sandbox child in the cgroup (EBUSY).
pub(crate) async fn remove_cgroup(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    kill_cgroup(dir).await;
    let start = Instant::now();
    loop {
        // `populated` covers the whole subtree, unlike this cgroup's own cgroup.procs.
        let busy = tokio::fs::read_to_string(dir.join("cgroup.events"))
            .await
            .is_ok_and(|e| e.lines().any(|l| l == "populated 1"));
        if !busy || start.elapsed() > CGROUP_DRAIN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    remove_tree(dir);
}

/// `cgroup.kill` (Linux 5.14): reaches processes hull never recorded, container processes of
/// the test-only host agent or a child virtiofsd forked.
async fn kill_cgroup(dir: &Path) {
    let _ = tokio::fs::write(dir.join("cgroup.kill"), "1").await;
}

/// rmdir of a cgroup directory after its child cgroups (cgroupfs has no recursive rmdir).
fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "remove cgroup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_directory_with_a_mount_in_it_is_left_whole() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (mount)"
        );
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("pod");
        let m = dir.join("share-rw");
        std::fs::create_dir_all(&m).expect("mkdir");
        nix::mount::mount(
            Some("tmpfs"),
            &m,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs");
        std::fs::write(m.join("container-file"), "keep").expect("write");
        assert_eq!(crate::mount::mounts_under(&dir), std::slice::from_ref(&m));
        remove_pod_dir(&dir).await;
        assert!(
            m.join("container-file").exists(),
            "a file under a mount was removed"
        );
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        remove_pod_dir(&dir).await;
        assert!(!dir.exists());
    }

    fn record_of(shim: &std::process::Child) -> PodRecord {
        PodRecord {
            shim: Some(record::ProcId::of(shim.id()).expect("the child runs")),
            ..PodRecord::default()
        }
    }

    /// A shim killed just before `shim delete` runs (still exiting) is waited for, so its
    /// pod is cleaned; one that keeps running is left to its own Shutdown.
    #[tokio::test(flavor = "current_thread")]
    async fn a_dying_shim_is_waited_for_a_running_one_is_not() {
        let mut dying = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let record = record_of(&dying);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            dying.kill().expect("kill");
            dying.wait().expect("reap");
        });
        let start = Instant::now();
        let got = once_shim_gone(record.clone(), Duration::from_secs(5)).await;
        assert_eq!(got, Some(record), "the record once the shim died");
        assert!(start.elapsed() >= Duration::from_millis(150));
        killer.join().expect("killer");

        let mut running = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let got = once_shim_gone(record_of(&running), Duration::from_millis(300)).await;
        running.kill().expect("kill");
        running.wait().expect("reap");
        assert_eq!(got, None, "a shim that still runs owns its pod");
        let none = once_shim_gone(PodRecord::default(), Duration::ZERO).await;
        assert_eq!(none, Some(PodRecord::default()), "no recorded shim: dead");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_log_directory_not_named_by_the_sandbox_is_left() {
        let t = tempfile::tempdir().expect("tempdir");
        let other = t.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        remove_log_dir(&other, "sid").await;
        assert!(other.exists());
        let mine = t.path().join("sid");
        std::fs::create_dir(&mine).expect("mkdir");
        std::fs::write(mine.join("console.log"), "x").expect("write");
        remove_log_dir(&mine, "sid").await;
        assert!(!mine.exists());
    }
}
