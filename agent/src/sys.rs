//! The few raw system calls the agent needs that `nix` does not wrap safely. Every `unsafe`
//! block of the crate lives here, each with the invariant it relies on.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::{fork, ForkResult};

use hull_contract::boot_timer::PORT as BOOT_TIMER_PORT;

/// Writes a boot-timer mark ([`hull_contract::boot_timer`]). Only meaningful as PID 1 inside
/// a hull VM, where the VMM traps the port; on a host it is never called.
pub fn boot_timer_mark(mark: u8) -> io::Result<()> {
    // SAFETY: ioperm only changes this thread's I/O permission bitmap for one port; it has no
    // memory effects. It fails with EPERM without CAP_SYS_RAWIO, which we report.
    let rc = unsafe { libc::ioperm(libc::c_ulong::from(BOOT_TIMER_PORT), 1, 1) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioperm above granted access to exactly this port on this thread, so `out`
    // cannot fault; the instruction touches no memory and clobbers only the named registers.
    unsafe {
        std::arch::asm!("out dx, al", in("dx") BOOT_TIMER_PORT, in("al") mark,
            options(nomem, nostack, preserves_flags));
    }
    Ok(())
}

/// Brings the loopback interface up (SIOCSIFFLAGS |= IFF_UP), as init must in a fresh guest.
pub fn loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: `req` is a valid, NUL-terminated ifreq that outlives the call; SIOCGIFFLAGS writes
    // only into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a terminal's window size.
pub(crate) fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is a live descriptor for the call's duration and `ws` is a valid winsize
    // that TIOCSWINSZ only reads.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the terminal on `fd` the controlling terminal of the calling session leader.
pub(crate) fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument and touches no user memory.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the slave of the pseudo-terminal whose master is `master` (TIOCGPTPEER, Linux 4.13),
/// close-on-exec and without making it the controlling terminal. Unlike opening the path
/// `ptsname` names, this cannot pick up a terminal of another devpts instance.
pub(crate) fn open_pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open(2) flags as an integer argument and touches no user
    // memory; `master` is live for the call.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Most descriptors one [`recv_with_fds`] accepts; the kernel closes any beyond (MSG_CTRUNC).
const MAX_RECV_FDS: usize = 4;

/// Reads from a Unix stream socket like read(2), and also takes the descriptors sent along
/// with the bytes (SCM_RIGHTS), close-on-exec, appending them to `fds`; a plain read would
/// make the kernel close them. Returns 0 at end of stream.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!([RawFd; MAX_RECV_FDS]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => {}
            r => break r?,
        }
    };
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel installed `fd` in this process for this message just
                // now; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(msg.bytes)
}

/// Closes every descriptor from `first` up, so nothing the agent holds leaks into a container.
pub(crate) fn close_fds_from(first: u32) {
    // SAFETY: close_range only closes descriptors; the caller (the single-threaded init helper)
    // owns no Rust object backed by a descriptor >= `first`.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
    }
}

/// Forks the calling process. Only the init helper calls it, and it is single-threaded (a
/// fresh exec of the agent binary that never starts a runtime), so the child may allocate.
pub(crate) fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: the caller is single-threaded (see above), so no lock can be held by a thread
    // that does not exist in the child.
    unsafe { fork() }
}

/// Arranges for `fd` to be descriptor 3 of the process `cmd` spawns (the init helper's sync
/// socket), without the close-on-exec flag.
pub(crate) fn pass_fd_as_3(cmd: &mut Command, fd: RawFd) {
    #[allow(clippy::multiple_unsafe_ops_per_block)]
    // SAFETY: the closure runs between fork and exec and calls only dup2 and fcntl, which are
    // async-signal-safe; it allocates nothing and touches no lock. Those libc calls are the
    // block's other unsafe operations, with no memory arguments.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of descriptor 3, the init helper's sync socket, if it is open.
pub(crate) fn adopt_fd3() -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(3, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: fd 3 is open (checked above) and, in the freshly exec'd helper, owned by
    // nothing else: the agent passed it for exactly this purpose.
    Some(unsafe { OwnedFd::from_raw_fd(3) })
}

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn` (the device cgroup's
/// emitter, `engine::devices`, builds them).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BpfInsn {
    pub(crate) code: u8,
    /// dst register in the low nibble, src in the high one.
    pub(crate) regs: u8,
    pub(crate) off: i16,
    pub(crate) imm: i32,
}

/// The BPF_PROG_LOAD part of `union bpf_attr` (fields the kernel does not know of yet are
/// omitted; it accepts a shorter attribute).
#[repr(C)]
#[derive(Debug, Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The BPF_PROG_ATTACH / BPF_PROG_DETACH part of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct BpfAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Other programs (a parent's, or the one being replaced on update) may stay attached.
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of `union bpf_attr` for `cmd`,
    // passed with its exact size; every pointer inside it points into memory the caller keeps
    // alive for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads a BPF_PROG_TYPE_CGROUP_DEVICE program. On failure, returns the error and the
/// verifier's log (from a second attempt with logging on).
pub(crate) fn bpf_load_cgroup_device(insns: &[BpfInsn]) -> Result<OwnedFd, (io::Error, String)> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 1 << 16];
    let mut attempt = |with_log: bool| {
        let mut attr = BpfProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..Default::default()
        };
        if with_log {
            attr.log_level = 1;
            attr.log_size = u32::try_from(log.len()).unwrap_or(0);
            attr.log_buf = log.as_mut_ptr() as u64;
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    match attempt(false) {
        Ok(fd) => {
            let fd = i32::try_from(fd).map_err(|_| (io::Error::other("bad fd"), String::new()))?;
            // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        Err(e) => {
            let _ = attempt(true);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..end]).into_owned()))
        }
    }
}

/// What [`bpf_cgroup_device`] does with a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BpfLink {
    /// BPF_PROG_ATTACH, next to the programs already attached.
    Attach,
    /// BPF_PROG_DETACH.
    Detach,
}

/// Attaches a device program to, or detaches it from, the cgroup open as `cgroup`.
pub(crate) fn bpf_cgroup_device(
    op: BpfLink,
    cgroup: &impl AsRawFd,
    prog: &impl AsRawFd,
) -> io::Result<()> {
    let (cmd, attach_flags) = match op {
        BpfLink::Attach => (BPF_PROG_ATTACH, BPF_F_ALLOW_MULTI),
        BpfLink::Detach => (BPF_PROG_DETACH, 0),
    };
    let mut attr = BpfAttachAttr {
        target_fd: u32::try_from(cgroup.as_raw_fd()).unwrap_or(u32::MAX),
        attach_bpf_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags,
        ..Default::default()
    };
    bpf(cmd, &mut attr).map(drop)
}
