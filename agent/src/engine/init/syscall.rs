//! The narrow system-call interface the init side builds a container with. [`Linux`] is the
//! real one; tests use a recorder to check what would be done, in which order, without root.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

/// The arguments of one mount(2) call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mount<'a> {
    pub(crate) source: Option<&'a Path>,
    pub(crate) target: &'a Path,
    pub(crate) fstype: Option<&'a str>,
    pub(crate) flags: MsFlags,
    pub(crate) data: Option<&'a str>,
}

impl<'a> Mount<'a> {
    /// Changes the existing mount at `target` (its propagation, or a remount): no source,
    /// type or data.
    pub(crate) fn change(target: &'a Path, flags: MsFlags) -> Self {
        Mount {
            source: None,
            target,
            fstype: None,
            flags,
            data: None,
        }
    }

    /// Binds `source` on `target`: `MS_BIND` plus `flags`.
    pub(crate) fn bind(source: &'a Path, target: &'a Path, flags: MsFlags) -> Self {
        Mount {
            source: Some(source),
            ..Mount::change(target, MsFlags::MS_BIND | flags)
        }
    }
}

/// File-system and identity operations of container setup.
pub(crate) trait Syscall {
    fn mount(&self, m: &Mount<'_>) -> nix::Result<()>;
    fn pivot_root(&self, new_root: &Path) -> nix::Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, mode: Mode, dev: u64) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// Writes `value` to `/proc/sys/<key>` (key: a /proc/sys-relative path).
    fn write_sysctl(&self, key: &str, value: &str) -> std::io::Result<()>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Linux;

impl Syscall for Linux {
    fn mount(&self, m: &Mount<'_>) -> nix::Result<()> {
        nix::mount::mount(m.source, m.target, m.fstype, m.flags, m.data)
    }

    /// pivot_root(".", ".") then detach the old root, which now sits on top: no temporary
    /// directory in the image is needed (runc's trick).
    fn pivot_root(&self, new_root: &Path) -> nix::Result<()> {
        nix::unistd::chdir(new_root)?;
        nix::unistd::pivot_root(".", ".")?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH)?;
        nix::unistd::chdir("/")
    }

    fn mknod(&self, path: &Path, kind: SFlag, mode: Mode, dev: u64) -> nix::Result<()> {
        nix::sys::stat::mknod(path, kind, mode, dev)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn write_sysctl(&self, key: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(Path::new("/proc/sys").join(key), value)
    }
}

/// Records the calls instead of making them (mknod creates an empty file, so later steps find
/// the node).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Recorder(pub(crate) std::cell::RefCell<Vec<String>>);

#[cfg(test)]
impl Recorder {
    fn push(&self, line: String) {
        self.0.borrow_mut().push(line);
    }
}

#[cfg(test)]
impl Syscall for Recorder {
    fn mount(&self, m: &Mount<'_>) -> nix::Result<()> {
        self.push(format!(
            "mount {:?} {} {:?} {:?}",
            m.source.map(|s| s.display().to_string()),
            m.target.display(),
            m.fstype,
            m.flags
        ));
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path) -> nix::Result<()> {
        self.push(format!("pivot {}", new_root.display()));
        Ok(())
    }
    fn mknod(&self, path: &Path, _k: SFlag, _m: Mode, _d: u64) -> nix::Result<()> {
        std::fs::write(path, b"").map_err(|_| nix::errno::Errno::EIO)?;
        self.push(format!("mknod {}", path.display()));
        Ok(())
    }
    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.push(format!("sethostname {name}"));
        Ok(())
    }
    fn write_sysctl(&self, key: &str, value: &str) -> std::io::Result<()> {
        self.push(format!("sysctl {key}={value}"));
        Ok(())
    }
}
