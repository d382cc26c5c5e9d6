//! Removing what a pod left on the host after its shim died, from `pod.json` alone: used by
//! `containerd-shim-hull-v2 delete`, which containerd runs for each task of a dead shim.
//! Nothing here trusts a bare pid (see `record.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::pod_dir;
use super::record::{self, PodRecord};
use crate::share::Share;

/// How long killed processes may take to leave their cgroup before it is removed.
const CGROUP_DRAIN: Duration = Duration::from_secs(3);

/// Pod `sid`'s record, unless its shim still runs (then its own Shutdown cleans the pod and
/// there is nothing for `shim delete` to do). A pod without a readable record counts as dead.
pub(crate) fn dead_pod_record(sid: &str) -> Option<PodRecord> {
    let record = record::read(&pod_dir(sid)).unwrap_or_default();
    match record.shim {
        Some(s) if s.alive() => None,
        _ => Some(record),
    }
}

/// Kills everything pod `sid` started (`record`), then removes its cgroups, its share mounts
/// (every container's binds with them) and its directory. Safe to run twice, or on a pod that
/// is gone.
pub(crate) async fn dead_pod(sid: &str, record: &PodRecord) {
    let dir = pod_dir(sid);
    kill_all(record);
    for cg in &record.cgroups {
        remove_cgroup(cg).await;
    }
    if let Some(ns) = record.netns.clone() {
        let links = record.links.clone();
        let _ = tokio::task::spawn_blocking(move || crate::net::detach(&ns, links)).await;
    }
    Share::at(&dir).destroy();
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "remove pod directory: {e}");
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
    // cgroup.kill (Linux 5.14) reaches processes hull never recorded: container processes
    // of the test-only host agent, or a child virtiofsd forked.
    let _ = tokio::fs::write(dir.join("cgroup.kill"), "1").await;
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
