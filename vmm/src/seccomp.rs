//! Seccomp filters per thread type, built with seccompiler. The main thread installs the
//! `PreBoot` filter as soon as the API socket listens (or before a boot from flags): it covers
//! waiting for API requests and building the VM. Once the VM runs, each thread adds its own
//! narrower filter on top (filters stack; every one must allow a call): the VMM thread
//! (event loop: devices, vsock, API) before its loop, each vCPU thread before its first
//! `KVM_RUN`. Arguments are checked where they decide what a call can reach: `ioctl` only for
//! the request numbers that thread issues, `socket` only for `AF_UNIX`, `tgkill` only within
//! this process and for the vCPU kick or `SIGABRT`, `mmap`/`mprotect` never executable.
//!
//! Anything else kills the whole process (`SECCOMP_RET_KILL_PROCESS`), not a SIGSYS handler:
//! the call came from a thread whose state may be the guest's doing, so no code of ours runs
//! after it (a handler would run on that thread's stack and need its own syscalls allowed);
//! the kernel ends every thread at once, also when hull-vmm is PID 1 of a pid namespace (a
//! forced signal clears the init's protection); and the parent sees a death by SIGSYS, which
//! no exit path of hull-vmm produces, so the shim can tell it from every exit status. The
//! kernel's audit record (type 1326: syscall number, thread name) says which call it was.
//! `--no-seccomp` turns this off for debugging.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::{
    kvm_cpuid2, kvm_fpu, kvm_ioeventfd, kvm_irqfd, kvm_lapic_state, kvm_mp_state, kvm_msrs,
    kvm_pit_config, kvm_regs, kvm_sregs, kvm_userspace_memory_region, KVMIO,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The kinds of threads (and phases) the VMM runs; each gets its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread from API-ready until the VM is built (inherited by the vCPU threads,
    /// so it is a superset of the two below).
    PreBoot,
    Vmm,
    Vcpu,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SeccompError {
    #[error("cannot build the {0:?} filter: {1}")]
    Build(ThreadKind, String),
    #[error("cannot install the {0:?} filter: {1}")]
    Install(ThreadKind, seccompiler::Error),
}

/// Syscalls every thread needs (memory, locks, signals, time, exit). `mmap`, `mprotect` and
/// `tgkill` are here too, with argument rules (see [`arg_rules`]).
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_getrandom,
    libc::SYS_rseq,
    libc::SYS_getpid,
    libc::SYS_gettid,
];

/// The VMM thread: epoll loop, eventfds, timerfd, device files, vsock Unix sockets, API
/// socket, the vhost-user (virtio-fs) back end's socket, vCPU control (tgkill), teardown.
/// No `unlink`: hull-vmm removes nothing once the VM runs (its socket files are removed by
/// whoever owns their directory; a stale one is replaced at the next start, while booting).
const VMM: &[i64] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    // The vsock muxer arms its deadline timer whenever a connection starts waiting for the
    // guest (`devices/vsock/muxer.rs`); the halt watch's periodic timer is set while building.
    libc::SYS_timerfd_settime,
    libc::SYS_accept4,
    // `socket` (AF_UNIX only, see `arg_rules`) and `connect` stay after boot: a connection the
    // guest opens to host port P is a new Unix stream to `<uds>_P` (hybrid vsock), made on
    // this thread while the VM runs. `connect`'s address cannot be checked here (a pointer);
    // AF_UNIX confines it to socket files, and in the shim's jail those are the jail root's
    // (its own mount namespace) and its abstract ones the jail's (its own network namespace).
    // vCPU threads never connect.
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    // vhost-user messages: guest memory, eventfds and irqfds travel as SCM_RIGHTS.
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_fcntl,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_lseek,
];

/// A vCPU thread: KVM_RUN and the device accesses it dispatches (serial output, irqfds).
const VCPU: &[i64] = &[
    // Teardown: the thread drops its vCPU fd (std checks fds with F_GETFD in debug builds).
    libc::SYS_fcntl,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
];

/// What building the VM adds to the two above: probing the host, guest memory, KVM objects,
/// device files and sockets, the kernel image, spawning the vCPU threads (which then install
/// their own filter) and the VMM thread's filter. `unlink` replaces a stale socket file before
/// a listener binds its path.
const BOOT: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_rt_sigaction,
    libc::SYS_clone3,
    libc::SYS_clone,
    libc::SYS_set_robust_list,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_seccomp,
];

/// Signals std installs handlers for (stack overflow, faults) and resets to the default before
/// it lets a fault kill the process. Allowed at run time so a crash dies of its own signal
/// instead of the seccomp kill, which would name the wrong cause.
const CRASH_SIGNALS: &[libc::c_int] = &[libc::SIGSEGV, libc::SIGBUS];

/// The kernel's ioctl request number (`_IOC`); the size is the argument struct's.
const fn ioc(dir: u32, nr: u32, size: usize) -> u64 {
    // Every KVM argument struct is far below the 14-bit size limit of an ioctl number.
    #[allow(clippy::cast_possible_truncation)]
    let size = size as u32;
    ioctl_expr(dir, KVMIO, nr, size) as u64
}
const fn kvm_io(nr: u32) -> u64 {
    ioc(_IOC_NONE, nr, 0)
}
const fn kvm_ior<T>(nr: u32) -> u64 {
    ioc(_IOC_READ, nr, std::mem::size_of::<T>())
}
const fn kvm_iow<T>(nr: u32) -> u64 {
    ioc(_IOC_WRITE, nr, std::mem::size_of::<T>())
}
const fn kvm_iowr<T>(nr: u32) -> u64 {
    ioc(_IOC_READ | _IOC_WRITE, nr, std::mem::size_of::<T>())
}

/// `ioctl` requests by number (see `linux/kvm.h`; kvm-ioctls keeps its own private).
pub(crate) mod ioctls {
    use super::*;
    pub const KVM_CREATE_VM: u64 = kvm_io(0x01);
    pub const KVM_CHECK_EXTENSION: u64 = kvm_io(0x03);
    pub const KVM_GET_VCPU_MMAP_SIZE: u64 = kvm_io(0x04);
    pub const KVM_GET_SUPPORTED_CPUID: u64 = kvm_iowr::<kvm_cpuid2>(0x05);
    pub const KVM_CREATE_VCPU: u64 = kvm_io(0x41);
    pub const KVM_SET_USER_MEMORY_REGION: u64 = kvm_iow::<kvm_userspace_memory_region>(0x46);
    pub const KVM_SET_TSS_ADDR: u64 = kvm_io(0x47);
    pub const KVM_CREATE_IRQCHIP: u64 = kvm_io(0x60);
    pub const KVM_IRQFD: u64 = kvm_iow::<kvm_irqfd>(0x76);
    pub const KVM_CREATE_PIT2: u64 = kvm_iow::<kvm_pit_config>(0x77);
    pub const KVM_IOEVENTFD: u64 = kvm_iow::<kvm_ioeventfd>(0x79);
    pub const KVM_RUN: u64 = kvm_io(0x80);
    pub const KVM_GET_REGS: u64 = kvm_ior::<kvm_regs>(0x81);
    pub const KVM_SET_REGS: u64 = kvm_iow::<kvm_regs>(0x82);
    pub const KVM_GET_SREGS: u64 = kvm_ior::<kvm_sregs>(0x83);
    pub const KVM_SET_SREGS: u64 = kvm_iow::<kvm_sregs>(0x84);
    pub const KVM_SET_MSRS: u64 = kvm_iow::<kvm_msrs>(0x89);
    pub const KVM_SET_FPU: u64 = kvm_iow::<kvm_fpu>(0x8d);
    pub const KVM_GET_LAPIC: u64 = kvm_ior::<kvm_lapic_state>(0x8e);
    pub const KVM_SET_LAPIC: u64 = kvm_iow::<kvm_lapic_state>(0x8f);
    pub const KVM_SET_CPUID2: u64 = kvm_iow::<kvm_cpuid2>(0x90);
    pub const KVM_GET_MP_STATE: u64 = kvm_ior::<kvm_mp_state>(0x98);
    /// std's `set_nonblocking` on sockets.
    pub const FIONBIO: u64 = libc::FIONBIO;
    /// Tap set-up (`devices/net/tap.rs`, see `linux/if_tun.h`).
    pub const TUNSETIFF: u64 = libc::TUNSETIFF;
    pub const TUNGETIFF: u64 = libc::TUNGETIFF;
    pub const TUNSETVNETHDRSZ: u64 = libc::TUNSETVNETHDRSZ;
    pub const TUNSETOFFLOAD: u64 = libc::TUNSETOFFLOAD;
}

/// The VMM thread's ioctls at run time: making accepted sockets (non-)blocking, and a NIC's
/// tap offloads, set when the driver activates the device (handed from the vCPU thread to the
/// event loop, so vCPU threads never touch a tap).
const VMM_IOCTLS: &[u64] = &[ioctls::FIONBIO, ioctls::TUNSETOFFLOAD];
/// A vCPU thread's: running it, answering the halt watch (`vstate/halt.rs`: MP state, RFLAGS),
/// and the register report when it stops on a fault (`vstate/vcpu_exit.rs`: REGS, SREGS).
const VCPU_IOCTLS: &[u64] = &[
    ioctls::KVM_RUN,
    ioctls::KVM_GET_MP_STATE,
    ioctls::KVM_GET_REGS,
    ioctls::KVM_GET_SREGS,
];
/// Building the VM, NICs included: attaching to a tap by name (`tap=`), checking a tap handed
/// over (`fd=`) and setting its header size.
const BOOT_IOCTLS: &[u64] = &[
    ioctls::TUNSETIFF,
    ioctls::TUNGETIFF,
    ioctls::TUNSETVNETHDRSZ,
    ioctls::KVM_CREATE_VM,
    ioctls::KVM_GET_VCPU_MMAP_SIZE,
    // A read-only query; the CPUID set-up asks for the TSC-deadline timer (vstate/vm.rs).
    ioctls::KVM_CHECK_EXTENSION,
    ioctls::KVM_GET_SUPPORTED_CPUID,
    ioctls::KVM_CREATE_VCPU,
    ioctls::KVM_SET_USER_MEMORY_REGION,
    ioctls::KVM_SET_TSS_ADDR,
    ioctls::KVM_CREATE_IRQCHIP,
    ioctls::KVM_IRQFD,
    ioctls::KVM_CREATE_PIT2,
    ioctls::KVM_IOEVENTFD,
    ioctls::KVM_SET_REGS,
    ioctls::KVM_GET_SREGS,
    ioctls::KVM_SET_SREGS,
    ioctls::KVM_SET_MSRS,
    ioctls::KVM_SET_FPU,
    ioctls::KVM_GET_LAPIC,
    ioctls::KVM_SET_LAPIC,
    ioctls::KVM_SET_CPUID2,
];

fn cond(
    kind: ThreadKind,
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Build(kind, e.to_string()))
}

fn rule(kind: ThreadKind, conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Build(kind, e.to_string()))
}

/// `ioctl(fd, request, ...)` allowed for these requests only. The kernel takes the request
/// as a 32-bit `unsigned int`, so only the low 32 bits are compared (as for every `Dword`
/// rule below, whose argument the kernel takes as an `int`).
fn ioctl_rules(kind: ThreadKind, requests: &[u64]) -> Result<Vec<SeccompRule>, SeccompError> {
    requests
        .iter()
        .map(|r| rule(kind, vec![cond(kind, 1, SeccompCmpOp::Eq, *r)?]))
        .collect()
}

/// The vCPU kick (`vstate/vcpu.rs`): the first real-time signal glibc leaves to programs.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Syscalls every thread may make with these arguments only (one rule matching is enough):
/// - `mmap`/`mprotect` never with `PROT_EXEC`: hull-vmm maps no code after exec (a static
///   binary loads no library), so a new executable mapping can only be an exploit's.
/// - `socket` only `AF_UNIX` (vsock, API, vhost-user): no network, no netlink, no packet
///   sockets; taps come as fds. (Only the VMM and pre-boot filters list `socket` at all.)
/// - `tgkill` only to this process (`tgid`: what getpid() returns, 1 as PID 1 of a pid
///   namespace), with the kick signal (the VMM thread stops vCPUs with it) or SIGABRT (a
///   panic that aborts raises it on its own thread; it must die of that, see
///   `vmm::install_crash_handlers`). No `kill`/`tkill` at all: nothing else is signalled.
/// - `rt_sigaction` for [`CRASH_SIGNALS`] (the pre-boot filter allows it for every signal).
/// - `fallocate` only to punch a hole (the VMM thread; the balloon's free page reporting).
fn arg_rules(
    kind: ThreadKind,
    tgid: libc::pid_t,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let not_exec = || -> Result<Vec<SeccompRule>, SeccompError> {
        let c = cond(kind, 2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?;
        Ok(vec![rule(kind, vec![c])?])
    };
    let own = u64::from(tgid.unsigned_abs());
    let signal = |sig: libc::c_int| u64::from(sig.unsigned_abs());
    let tgkill = [kick_signal(), libc::SIGABRT]
        .into_iter()
        .map(|sig| {
            rule(
                kind,
                vec![
                    cond(kind, 0, SeccompCmpOp::Eq, own)?,
                    cond(kind, 2, SeccompCmpOp::Eq, signal(sig))?,
                ],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sigaction = CRASH_SIGNALS
        .iter()
        .map(|sig| rule(kind, vec![cond(kind, 0, SeccompCmpOp::Eq, signal(*sig))?]))
        .collect::<Result<Vec<_>, _>>()?;
    let mut m = BTreeMap::from([
        (libc::SYS_mmap, not_exec()?),
        (libc::SYS_mprotect, not_exec()?),
        (libc::SYS_tgkill, tgkill),
        (libc::SYS_rt_sigaction, sigaction),
    ]);
    if kind != ThreadKind::Vcpu {
        let unix = cond(
            kind,
            0,
            SeccompCmpOp::Eq,
            u64::from(libc::AF_UNIX.unsigned_abs()),
        )?;
        m.insert(libc::SYS_socket, vec![rule(kind, vec![unix])?]);
        // The balloon releases guest RAM the guest reported free (`devices/balloon`): a
        // hole punched in the memfd, never a size change or an allocation.
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let punch = cond(kind, 1, SeccompCmpOp::Eq, u64::from(punch.unsigned_abs()))?;
        m.insert(libc::SYS_fallocate, vec![rule(kind, vec![punch])?]);
    }
    Ok(m)
}

/// The BPF program for `kind` in the process whose pid is `tgid`.
pub(crate) fn filter(kind: ThreadKind, tgid: libc::pid_t) -> Result<BpfProgram, SeccompError> {
    let (syscalls, mut requests): (Vec<i64>, Vec<u64>) = match kind {
        ThreadKind::Vmm => (VMM.to_vec(), VMM_IOCTLS.to_vec()),
        ThreadKind::Vcpu => (VCPU.to_vec(), VCPU_IOCTLS.to_vec()),
        ThreadKind::PreBoot => (
            [VMM, VCPU, BOOT].concat(),
            [VMM_IOCTLS, VCPU_IOCTLS, BOOT_IOCTLS].concat(),
        ),
    };
    // The pre-boot union lists some requests twice (KVM_GET_SREGS: building and vCPU faults).
    requests.sort_unstable();
    requests.dedup();
    let mut rules = arg_rules(kind, tgid)?;
    // A syscall listed plainly for this kind needs no argument rule (the pre-boot filter's
    // rt_sigaction installs every handler; `socket` is listed for the rule above to apply).
    for s in COMMON.iter().chain(&syscalls) {
        if *s != libc::SYS_socket {
            rules.insert(*s, vec![]);
        }
    }
    rules.insert(libc::SYS_ioctl, ioctl_rules(kind, &requests)?);
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(kind, e.to_string()))?;
    BpfProgram::try_from(f).map_err(|e| SeccompError::Build(kind, e.to_string()))
}

/// Turns filtering on (or off) for threads that call `apply_for_thread` afterwards.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// Installs the filter for `kind` on the calling thread when filtering is enabled. A failure
/// is fatal for the VMM (running unconfined silently would be worse).
pub fn apply_for_thread(kind: ThreadKind) {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    let tgid = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    let res = filter(kind, tgid)
        .and_then(|p| seccompiler::apply_filter(&p).map_err(|e| SeccompError::Install(kind, e)));
    if let Err(e) = res {
        eprintln!("hull-vmm: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        for k in [ThreadKind::PreBoot, ThreadKind::Vmm, ThreadKind::Vcpu] {
            assert!(!filter(k, 1).unwrap().is_empty());
        }
    }

    #[test]
    fn ioctl_numbers_match_kvm_ioctls() {
        // Spot checks against linux/kvm.h.
        assert_eq!(ioctls::KVM_RUN, 0xae80);
        assert_eq!(ioctls::KVM_CREATE_VM, 0xae01);
        assert_eq!(ioctls::KVM_CHECK_EXTENSION, 0xae03);
        assert_eq!(ioctls::KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(ioctls::KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(ioctls::KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(ioctls::KVM_GET_MP_STATE, 0x8004_ae98);
        assert_eq!(ioctls::KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
    }

    /// What became of a forked child.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Exited(i32),
        Signaled(i32),
    }
    /// The call went through (it may have failed, e.g. with EBADF).
    const ALLOWED: Outcome = Outcome::Exited(0);
    /// The filter killed the process.
    const KILLED: Outcome = Outcome::Signaled(libc::SIGSYS);

    /// Runs `f` in a forked child that first installs the `kind` filter. Calls that signal
    /// this process are tested against the real binary (`tests/seccomp.rs`): the program is
    /// built here, in the parent, whose pid it names.
    fn in_filtered_child(kind: ThreadKind, f: fn()) -> Outcome {
        let tgid = libc::pid_t::try_from(std::process::id()).unwrap();
        let prog = filter(kind, tgid).unwrap();
        // SAFETY: fork in a test; the child only installs the filter and makes raw syscalls,
        // then leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            if seccompiler::apply_filter(&prog).is_err() {
                // SAFETY: leave the child without running the parent's destructors.
                unsafe { libc::_exit(2) };
            }
            f();
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFSIGNALED(status) {
            Outcome::Signaled(libc::WTERMSIG(status))
        } else {
            Outcome::Exited(libc::WEXITSTATUS(status))
        }
    }

    #[test]
    fn blocked_syscall_ends_the_process() {
        let socket = || {
            // SAFETY: a plain syscall with no pointers; the vCPU filter lacks it.
            unsafe { libc::syscall(libc::SYS_socket, 1, 1, 0) };
        };
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, socket), KILLED);
    }

    /// Which kinds let `f` through, in the order PreBoot, Vmm, Vcpu.
    fn outcomes(f: fn()) -> [Outcome; 3] {
        [ThreadKind::PreBoot, ThreadKind::Vmm, ThreadKind::Vcpu].map(|k| in_filtered_child(k, f))
    }

    #[test]
    fn sockets_are_unix_only() {
        let inet = || {
            // SAFETY: no pointers; creates (at most) a socket the child never uses.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        };
        let netlink = || {
            // SAFETY: as above.
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) };
        };
        let unix = || {
            // SAFETY: as above.
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        };
        // The upper half of the int argument is not where a family can hide.
        let unix_high = || {
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_socket, (1u64 << 32) | 1, 1, 0) };
        };
        assert_eq!(outcomes(inet), [KILLED, KILLED, KILLED]);
        assert_eq!(outcomes(netlink), [KILLED, KILLED, KILLED]);
        assert_eq!(outcomes(unix), [ALLOWED, ALLOWED, KILLED]);
        assert_eq!(outcomes(unix_high), [ALLOWED, ALLOWED, KILLED]);
    }

    #[test]
    fn fallocate_only_punches_holes() {
        let punch = || {
            // SAFETY: no pointers; fd -1 makes the call fail (EBADF) when allowed.
            unsafe {
                libc::fallocate(
                    -1,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    4096,
                )
            };
        };
        let allocate = || {
            // SAFETY: as above.
            unsafe { libc::fallocate(-1, 0, 0, 4096) };
        };
        assert_eq!(outcomes(punch), [ALLOWED, ALLOWED, KILLED]);
        assert_eq!(outcomes(allocate), [KILLED, KILLED, KILLED]);
    }

    #[test]
    fn nothing_becomes_executable() {
        fn mmap_anon(prot: libc::c_int) {
            // SAFETY: a fresh anonymous mapping nothing else uses (the child exits next).
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
        }
        let mmap_exec = || mmap_anon(libc::PROT_READ | libc::PROT_EXEC);
        let mmap_rw = || mmap_anon(libc::PROT_READ | libc::PROT_WRITE);
        let mprotect_exec = || {
            // SAFETY: address 0 is not mapped: the call fails (ENOMEM) when allowed.
            unsafe { libc::mprotect(std::ptr::null_mut(), 4096, libc::PROT_EXEC) };
        };
        assert_eq!(outcomes(mmap_exec), [KILLED, KILLED, KILLED]);
        assert_eq!(outcomes(mprotect_exec), [KILLED, KILLED, KILLED]);
        assert_eq!(outcomes(mmap_rw), [ALLOWED, ALLOWED, ALLOWED]);
    }

    #[test]
    fn no_unlink_once_the_vm_runs_and_no_connect_from_vcpus() {
        let unlink = || {
            // SAFETY: a NUL-terminated path that does not exist: ENOENT when allowed.
            unsafe { libc::unlink(c"/nonexistent/hull-seccomp-test".as_ptr()) };
        };
        let unlinkat = || {
            // SAFETY: as above.
            unsafe { libc::unlinkat(libc::AT_FDCWD, c"/nonexistent/x".as_ptr(), 0) };
        };
        let connect = || {
            // SAFETY: fd -1 fails with EBADF before the (null) address is read.
            unsafe { libc::connect(-1, std::ptr::null(), 0) };
        };
        assert_eq!(outcomes(unlink), [ALLOWED, KILLED, KILLED]);
        assert_eq!(outcomes(unlinkat), [ALLOWED, KILLED, KILLED]);
        assert_eq!(outcomes(connect), [ALLOWED, ALLOWED, KILLED]);
    }

    #[test]
    fn signal_handlers_change_only_before_boot_or_for_a_crash() {
        // Queries (no new action): the filter judges the signal number only.
        fn query(sig: libc::c_int) {
            // SAFETY: null new and old actions: the kernel reads and writes nothing.
            unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, 0usize, 0usize, 8) };
        }
        let segv = || query(libc::SIGSEGV);
        let usr1 = || query(libc::SIGUSR1);
        assert_eq!(outcomes(segv), [ALLOWED, ALLOWED, ALLOWED]);
        assert_eq!(outcomes(usr1), [ALLOWED, KILLED, KILLED]);
        // kill(2) and tkill(2) are never needed (tgkill is, see tests/seccomp.rs).
        let kill = || {
            // SAFETY: signal 0 to a pid that cannot exist only checks.
            unsafe { libc::kill(i32::MAX, 0) };
        };
        assert_eq!(outcomes(kill), [KILLED, KILLED, KILLED]);
    }

    #[test]
    fn vhost_user_messages_only_from_the_vmm_thread() {
        // sendmsg/recvmsg on a bad fd: EBADF for the VMM thread (and before boot), SIGSYS for
        // a vCPU thread, which never talks to the back end.
        let sendmsg = || {
            // SAFETY: fd -1 fails before the (null) header is read.
            unsafe { libc::syscall(libc::SYS_sendmsg, -1, 0usize, 0) };
        };
        let recvmsg = || {
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_recvmsg, -1, 0usize, 0) };
        };
        for f in [sendmsg, recvmsg] {
            assert_eq!(in_filtered_child(ThreadKind::Vmm, f), ALLOWED);
            assert_eq!(in_filtered_child(ThreadKind::PreBoot, f), ALLOWED);
            assert_eq!(in_filtered_child(ThreadKind::Vcpu, f), KILLED);
        }
    }

    #[test]
    fn timers_are_armed_by_the_event_loop_only() {
        // timerfd_settime on a bad fd: EBADF where allowed, killed where not. The vsock
        // muxer arms its deadline timer on the VMM thread at run time.
        let settime = || {
            // SAFETY: fd -1 fails before the kernel reads the (null) timer spec.
            unsafe { libc::syscall(libc::SYS_timerfd_settime, -1, 0, 0usize, 0usize) };
        };
        assert_eq!(in_filtered_child(ThreadKind::Vmm, settime), ALLOWED);
        assert_eq!(in_filtered_child(ThreadKind::PreBoot, settime), ALLOWED);
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, settime), KILLED);
        // Creating one stays a build-time call (the muxer's timer is made with the device).
        let create = || {
            // SAFETY: an invalid clock id fails with EINVAL; no pointers.
            unsafe { libc::syscall(libc::SYS_timerfd_create, -1, 0) };
        };
        assert_eq!(in_filtered_child(ThreadKind::PreBoot, create), ALLOWED);
        assert_eq!(in_filtered_child(ThreadKind::Vmm, create), KILLED);
    }

    #[test]
    fn vcpu_thread_may_read_its_registers_for_the_fault_report() {
        // KVM_GET_REGS/KVM_GET_SREGS on a bad fd: EBADF (exit 0) where allowed, killed
        // where not. A vCPU that triple-faults reads both before it logs; without them the
        // report itself would kill the VMM with no line about the crash.
        let get_regs = || {
            let mut r = kvm_regs::default();
            // SAFETY: fd -1 fails before the kernel writes `r`, a valid buffer of the size the
            // request names anyway.
            unsafe { libc::ioctl(-1, ioctls::KVM_GET_REGS, &mut r) };
        };
        let get_sregs = || {
            let mut s = kvm_sregs::default();
            // SAFETY: as above.
            unsafe { libc::ioctl(-1, ioctls::KVM_GET_SREGS, &mut s) };
        };
        for f in [get_regs, get_sregs] {
            assert_eq!(in_filtered_child(ThreadKind::Vcpu, f), ALLOWED);
            assert_eq!(in_filtered_child(ThreadKind::PreBoot, f), ALLOWED);
            assert_eq!(in_filtered_child(ThreadKind::Vmm, f), KILLED);
        }
    }

    #[test]
    fn tap_ioctls() {
        // On fd -1: EBADF where allowed, killed where not. Offloads are set by the
        // event loop at activation; attaching and checking a tap happen while building.
        let offload = || {
            // SAFETY: ioctl on fd -1 touches no memory; the argument is a plain integer.
            unsafe { libc::ioctl(-1, ioctls::TUNSETOFFLOAD, 0 as libc::c_ulong) };
        };
        assert_eq!(in_filtered_child(ThreadKind::Vmm, offload), ALLOWED);
        assert_eq!(in_filtered_child(ThreadKind::PreBoot, offload), ALLOWED);
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, offload), KILLED);
        let setiff = || {
            // SAFETY: as above.
            unsafe { libc::ioctl(-1, ioctls::TUNSETIFF, 0usize) };
        };
        assert_eq!(in_filtered_child(ThreadKind::PreBoot, setiff), ALLOWED);
        assert_eq!(in_filtered_child(ThreadKind::Vmm, setiff), KILLED);
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, setiff), KILLED);
        assert_eq!(ioctls::TUNSETIFF, 0x4004_54ca);
        assert_eq!(ioctls::TUNGETIFF, 0x8004_54d2);
        assert_eq!(ioctls::TUNSETVNETHDRSZ, 0x4004_54d8);
        assert_eq!(ioctls::TUNSETOFFLOAD, 0x4004_54d0);
    }

    #[test]
    fn only_listed_ioctl_requests_pass() {
        // KVM_RUN on a bad fd: allowed for a vCPU thread (fails with EBADF, not SIGSYS).
        let run = || {
            // SAFETY: ioctl on fd -1 touches no memory.
            unsafe { libc::ioctl(-1, ioctls::KVM_RUN) };
        };
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, run), ALLOWED);
        // KVM_CREATE_VM: only while booting, so a vCPU or VMM thread cannot make a new VM.
        let create_vm = || {
            // SAFETY: as above.
            unsafe { libc::ioctl(-1, ioctls::KVM_CREATE_VM, 0) };
        };
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, create_vm), KILLED);
        assert_eq!(in_filtered_child(ThreadKind::Vmm, create_vm), KILLED);
        assert_eq!(in_filtered_child(ThreadKind::PreBoot, create_vm), ALLOWED);
        // A terminal ioctl nobody needs.
        let tcgets = || {
            let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
            // SAFETY: `t` is a valid out buffer of the size TCGETS writes.
            unsafe { libc::ioctl(0, libc::TCGETS, t.as_mut_ptr()) };
        };
        assert_eq!(in_filtered_child(ThreadKind::PreBoot, tcgets), KILLED);
        // The upper 32 bits of the request are ignored, as the kernel does.
        let run_high = || {
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_ioctl, -1, (1u64 << 32) | ioctls::KVM_RUN) };
        };
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, run_high), ALLOWED);
    }
}
