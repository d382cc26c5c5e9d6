//! The host end of a virtio-net device: a tap file descriptor that carries virtio-net headers.
//! This is the net device's only file with `unsafe`: the tap ioctls, taking over a file
//! descriptor the caller handed to hull-vmm, and vectored I/O between the tap and guest memory.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use libc::{c_char, c_int, c_short, c_uint};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use vm_memory::VolatileSlice;

/// `virtio_net_hdr_v1`: what VIRTIO_F_VERSION_1 makes every frame start with, `num_buffers`
/// included (spec 5.1.6), so the tap and the guest use the same 12 bytes.
pub const VNET_HDR_LEN: usize = 12;
/// Longest interface name (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// What a tap must be for hull: Ethernet frames (TAP), no packet-info prefix (NO_PI), a
/// virtio-net header on every frame (VNET_HDR).
const REQUIRED_FLAGS: c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
/// The same as `ifreq`'s short flags field (0x5002 fits).
#[allow(clippy::cast_possible_truncation)]
const REQUIRED_FLAGS_SHORT: c_short = REQUIRED_FLAGS as c_short;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("fd {0} is not an open file descriptor hull-vmm may take over (0-2 are stdio)")]
    BadFd(RawFd),
    #[error("tap name {0:?} must be 1..={MAX_NAME_LEN} bytes without NUL or '/'")]
    BadName(String),
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(std::io::Error),
    // Causes are in the messages and not `source`s, so chain printers do not repeat them.
    #[error("{op} failed: {cause} (is it a tap?)")]
    Ioctl {
        op: &'static str,
        cause: std::io::Error,
    },
    #[error("{name} is not a tap with virtio-net headers (flags {flags:#x}; hull needs IFF_TAP|IFF_NO_PI|IFF_VNET_HDR)")]
    NotVnetTap { name: String, flags: c_int },
    #[error("cannot make the tap non-blocking: {0}")]
    NonBlocking(nix::Error),
}

/// An open tap queue, non-blocking, with 12-byte virtio-net headers.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    /// A socket standing in for a tap in the fuzz targets ([`Tap::fake`]).
    #[cfg(fuzzing)]
    fake: bool,
}

/// An all-zero `ifreq` (plain data: names, integers and pointers, all valid as zero).
fn ifreq_zeroed() -> libc::ifreq {
    // SAFETY: `ifreq` is a C struct of byte arrays and a union of integers, sockaddrs and a
    // pointer; the all-zero bit pattern is a valid value of each.
    unsafe { std::mem::zeroed() }
}

fn ioctl_result(op: &'static str, ret: c_int) -> Result<(), TapError> {
    if ret < 0 {
        return Err(TapError::Ioctl {
            op,
            cause: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

impl Tap {
    /// Takes over `fd`, a tap the caller opened (normally the shim, in the pod's network
    /// namespace) and handed to hull-vmm for this device alone.
    pub fn from_fd(fd: RawFd) -> Result<Self, TapError> {
        if fd <= 2 {
            return Err(TapError::BadFd(fd));
        }
        // SAFETY: F_GETFD takes no pointer; it only tells whether `fd` is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(TapError::BadFd(fd));
        }
        // SAFETY: `fd` is open (checked above) and belongs to this device: the caller passed it
        // for hull-vmm to own (vmm/API.md), and config validation refuses a fd named by two
        // devices, so nothing else in the process uses or closes it.
        let file = unsafe { File::from_raw_fd(fd) };
        Self::setup(file)
    }

    /// Opens the tap called `name`, creating it (not persistent) if it does not exist; for
    /// manual runs: under hull the shim hands over an opened tap instead.
    pub fn open_named(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(['\0', '/']) {
            return Err(TapError::BadName(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = ifreq_zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = c_char::from_ne_bytes([s]);
        }
        req.ifr_ifru.ifru_flags = REQUIRED_FLAGS_SHORT;
        // SAFETY: TUNSETIFF reads `req` and writes the interface name back into it; `req` is a
        // valid, NUL-terminated (name ≤ 15 bytes) ifreq that outlives the call.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        ioctl_result("TUNSETIFF", ret)?;
        Self::setup(file)
    }

    /// Checks that `file` is a tap with virtio-net headers, makes it non-blocking (the event
    /// loop must never wait on it) and sets the header size to the virtio 1.x one.
    fn setup(file: File) -> Result<Self, TapError> {
        let fd = file.as_raw_fd();
        let mut req = ifreq_zeroed();
        // SAFETY: TUNGETIFF writes the name and flags into `req`, a valid ifreq that outlives
        // the call.
        let ret = unsafe { libc::ioctl(fd, libc::TUNGETIFF, &mut req) };
        ioctl_result("TUNGETIFF", ret)?;
        let name: String = req
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| char::from(u8::from_ne_bytes(c.to_ne_bytes())))
            .collect();
        // SAFETY: TUNGETIFF filled `ifru_flags`; any short is a valid value of it.
        let flags = c_int::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff;
        if flags & REQUIRED_FLAGS != REQUIRED_FLAGS {
            return Err(TapError::NotVnetTap { name, flags });
        }
        let fl = fcntl(&file, FcntlArg::F_GETFL).map_err(TapError::NonBlocking)?;
        let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
        fcntl(&file, FcntlArg::F_SETFL(fl)).map_err(TapError::NonBlocking)?;
        let hdr_len = c_int::try_from(VNET_HDR_LEN).unwrap_or(c_int::MAX);
        // SAFETY: TUNSETVNETHDRSZ reads one int from `hdr_len`, which outlives the call.
        let ret = unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &hdr_len) };
        ioctl_result("TUNSETVNETHDRSZ", ret)?;
        Ok(Tap {
            file,
            name,
            #[cfg(fuzzing)]
            fake: false,
        })
    }

    /// Tells the kernel which offloads the guest accepted (`TUN_F_*`): with 0 it hands the
    /// tap only complete, checksummed frames, whatever an earlier user of the tap set.
    pub fn set_offload(&self, flags: c_uint) -> Result<(), TapError> {
        #[cfg(fuzzing)]
        if self.fake {
            return Ok(());
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long); no memory is
        // passed.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        ioctl_result("TUNSETOFFLOAD", ret)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (header included) straight into guest memory, spread over `bufs` in
    /// order; `WouldBlock` when the tap has none. A frame longer than `bufs` is cut (the tap
    /// drops the rest): callers offer room for the largest frame they accepted.
    pub fn read_frame_into(&self, bufs: &[VolatileSlice<'_, ()>]) -> std::io::Result<usize> {
        with_iovecs(&[], bufs, true, |iov, n| {
            // SAFETY: `iov` holds `n` iovecs, each pointing at a live, writable part of guest
            // memory (see `with_iovecs`); readv writes at most their lengths.
            unsafe { libc::readv(self.file.as_raw_fd(), iov, n) }
        })
    }

    /// Writes one frame in one `writev(2)`, as the tap requires: `hdr` (the virtio-net header,
    /// in our memory, so the guest cannot change it while the kernel parses it) and the frame
    /// itself straight from guest memory.
    pub fn write_frame_from(
        &self,
        hdr: &[u8; VNET_HDR_LEN],
        bufs: &[VolatileSlice<'_, ()>],
    ) -> std::io::Result<usize> {
        with_iovecs(hdr, bufs, false, |iov, n| {
            // SAFETY: `iov` holds `n` iovecs, each pointing at live memory (see `with_iovecs`);
            // writev only reads them.
            unsafe { libc::writev(self.file.as_raw_fd(), iov, n) }
        })
    }
}

/// Plain-buffer I/O for the device-model bench's peer (and tests): one frame, header included.
#[cfg(any(test, feature = "bench"))]
impl Tap {
    pub fn read_frame_into_buf(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::io::Read::read(&mut &self.file, buf)
    }

    pub fn write_frame_from_buf(&self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::Write::write(&mut &self.file, buf)
    }
}

/// The fuzz targets' tap (`fuzz/fuzz_targets/queue_net.rs`): one end of a datagram socket
/// pair carries the frames, header included, one per datagram, as a tap does; the tap ioctls
/// (checks, header size, offloads) are not made. Never built outside `cargo fuzz`.
#[cfg(fuzzing)]
impl Tap {
    pub(crate) fn fake(sock: std::os::fd::OwnedFd) -> Tap {
        Tap {
            file: File::from(sock),
            name: "fuzz0".to_owned(),
            fake: true,
        }
    }
}

/// Calls `f(iov, n)` with iovecs for `head` (our memory, may be empty) and then each guest
/// memory slice; the pointers are valid for the call: `head` is borrowed and vm-memory's
/// guards of the slices are held until `f` returns. The kernel copies to or from them during
/// the call and keeps nothing after it.
fn with_iovecs(
    head: &[u8],
    bufs: &[VolatileSlice<'_, ()>],
    into_guest: bool,
    f: impl FnOnce(*const libc::iovec, c_int) -> isize,
) -> std::io::Result<usize> {
    if bufs.len() + 1 > IOV_MAX {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iov = Vec::with_capacity(bufs.len() + 1);
    if !head.is_empty() {
        iov.push(libc::iovec {
            iov_base: head.as_ptr().cast_mut().cast(),
            iov_len: head.len(),
        });
    }
    // Guards for writing when the kernel writes guest memory, for reading otherwise (the
    // difference matters to mappings that track access, e.g. Xen's).
    let (mut read_guards, mut write_guards) = (Vec::new(), Vec::new());
    for b in bufs {
        let (ptr, len) = if into_guest {
            let g = b.ptr_guard_mut();
            let p = (g.as_ptr(), g.len());
            write_guards.push(g);
            p
        } else {
            let g = b.ptr_guard();
            let p = (g.as_ptr().cast_mut(), g.len());
            read_guards.push(g);
            p
        };
        iov.push(libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        });
    }
    let n = c_int::try_from(iov.len()).unwrap_or(c_int::MAX);
    let ret = f(iov.as_ptr(), n);
    // errno before anything else can change it (the guards are dropped after).
    let res = usize::try_from(ret).map_err(|_| std::io::Error::last_os_error());
    drop((read_guards, write_guards));
    res
}

/// The kernel's limit on iovecs per call (UIO_MAXIOV).
const IOV_MAX: usize = 1024;

impl std::os::fd::AsFd for Tap {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
