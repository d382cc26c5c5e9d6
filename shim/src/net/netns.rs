//! Running netlink work inside the pod's network namespace.
//!
//! `setns` changes the namespace of the calling *thread*. A tokio worker that entered a pod's
//! netns would carry it into whatever task runs next on it (the hazard of Kata's
//! `NetnsGuard`), so the work runs on a thread of its own with a current-thread runtime, and
//! that thread ends with it. Sockets and tap fds made there stay bound to the pod's netns.
//! The shim keeps no netns fd open: it would pin the namespace after containerd unmounts it.

use std::future::Future;
use std::os::fd::AsFd;
use std::path::Path;

use super::NetError;

/// Runs `f` in the network namespace at `path` (a bind mount from CNI, or `/proc/PID/ns/net`)
/// and returns its result.
pub(crate) fn run_in<F, Fut, T>(path: &Path, f: F) -> Result<T, NetError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
    T: Send + 'static,
{
    let ns = std::fs::File::open(path).map_err(|source| NetError::Netns {
        path: path.to_owned(),
        source,
    })?;
    let shown = path.to_owned();
    std::thread::Builder::new()
        .name("hull-netns".into())
        .spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                NetError::Netns {
                    path: shown,
                    source: e.into(),
                }
            })?;
            drop(ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(NetError::Runtime)?;
            rt.block_on(f())
        })
        .map_err(NetError::Runtime)?
        .join()
        .map_err(|_| NetError::Panicked)?
}
