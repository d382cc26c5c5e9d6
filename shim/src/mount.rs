//! The one lazy unmount of the shim: container rootfs mounts in bundles and the pod share's
//! mounts are detached, never unmounted synchronously, because containerd may unmount the
//! same rootfs too and a busy mount must not fail a delete or a teardown.

use std::path::Path;

/// Detaches `path` and everything below it; "not mounted" and "gone" are fine.
pub(crate) fn detach(path: &Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!(path = %path.display(), "unmount: {e}"),
    }
}
