//! The narrow system-call interface the init side builds a container with. [`Linux`] is the
//! real one; tests use a recorder to check what would be done, in which order, without root.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

/// File-system and identity operations of container setup.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    fn pivot_root(&self, new_root: &Path) -> nix::Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, mode: Mode, dev: u64) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
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
}
