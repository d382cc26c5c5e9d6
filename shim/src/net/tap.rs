//! The pod's tap: made by the shim inside the pod's netns (hull-vmm runs in the host's) and
//! handed to hull-vmm by fd, which then owns it.
//!
//! Not persistent (no `TUNSETPERSIST`): the kernel deletes the tap when its last fd closes,
//! i.e. when hull-vmm exits however it exits, so a crashed pod leaks no tap (Kata makes them
//! persistent and must find and delete them). hull-vmm's `Tap::open_named` has the same
//! ioctl for manual runs; the shim cannot link hull-vmm, hence this small copy.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use libc::{c_char, c_short};

use super::NetError;

/// The flags hull-vmm requires: an Ethernet tap, no packet info, virtio-net headers; as
/// `ifreq`'s short flags field (0x5002 fits).
#[allow(clippy::cast_possible_truncation)]
const FLAGS: c_short = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as c_short;

/// Creates the tap `name` in the calling thread's network namespace.
pub(crate) fn create(name: &str) -> Result<OwnedFd, NetError> {
    let bad = |cause: std::io::Error| NetError::Tap {
        name: name.to_owned(),
        cause,
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['\0', '/']) {
        return Err(bad(std::io::Error::from(std::io::ErrorKind::InvalidInput)));
    }
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(bad)?;
    // SAFETY: ifreq is plain old data (bytes and a union of integers/structs of integers);
    // all-zero is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = c_char::from_ne_bytes([s]);
    }
    req.ifr_ifru.ifru_flags = FLAGS;
    // SAFETY: TUNSETIFF reads `req` (a NUL-terminated name, checked shorter than IFNAMSIZ,
    // and the flags) and writes the name back into it; `req` outlives the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if ret < 0 {
        return Err(bad(std::io::Error::last_os_error()));
    }
    Ok(file.into())
}
