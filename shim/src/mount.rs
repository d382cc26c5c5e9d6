//! The one lazy unmount of the shim: container rootfs mounts in bundles and the pod share's
//! mounts are detached, never unmounted synchronously, because containerd may unmount the
//! same rootfs too and a busy mount must not fail a delete or a teardown. And the one check
//! before a recursive delete that nothing is still mounted below (`mounts_under`).

use std::path::{Path, PathBuf};

/// Detaches `path` and everything below it; "not mounted" and "gone" are fine.
pub(crate) fn detach(path: &Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!(path = %path.display(), "unmount: {e}"),
    }
}

/// Mount points at or below `dir` in this mount namespace.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/run/a\\040b\\134c"), "/run/a b\\c");
        assert_eq!(unescape_mountinfo("/x\\9"), "/x\\9");
    }
}
