//! Seccomp filters per thread type, built with seccompiler and installed by each thread on
//! itself once its setup is done: the VMM thread (event loop: devices, vsock, API) before its
//! loop, each vCPU thread before its first `KVM_RUN`. Syscalls outside the allow list raise
//! SIGSYS; the handler prints the syscall number and ends the process (a guest cannot make us
//! run code outside the list). `--no-seccomp` turns this off for debugging.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The kinds of threads the VMM runs; each gets its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    Vmm,
    Vcpu,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the {0:?} filter: {1}")]
    Build(ThreadKind, String),
    #[error("cannot install the {0:?} filter: {1}")]
    Install(ThreadKind, seccompiler::Error),
}

/// Syscalls every thread needs (memory, locks, signals, time, exit).
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
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
];

/// The VMM thread: epoll loop, eventfds, device files, vsock Unix sockets, API socket,
/// vCPU control (tgkill), teardown.
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
    libc::SYS_accept4,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_ioctl,
    libc::SYS_fcntl,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_lseek,
];

/// A vCPU thread: KVM_RUN and the device accesses it dispatches (serial output, irqfds).
const VCPU: &[i64] = &[
    libc::SYS_ioctl,
    // Teardown: the thread drops its vCPU fd (std checks fds with F_GETFD in debug builds).
    libc::SYS_fcntl,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
];

/// The BPF program for `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let extra = match kind {
        ThreadKind::Vmm => VMM,
        ThreadKind::Vcpu => VCPU,
    };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        COMMON.iter().chain(extra).map(|s| (*s, vec![])).collect();
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(kind, e.to_string()))?;
    BpfProgram::try_from(f).map_err(|e| SeccompError::Build(kind, e.to_string()))
}

/// Offset of `si_syscall` in `siginfo_t` for SIGSYS on x86_64 (after signo, errno, code,
/// padding and `si_call_addr`).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn sigsys_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t (128 bytes) for SIGSYS with SA_SIGINFO, so
    // the offset stays inside it.
    let field = unsafe { info.cast::<u8>().add(SI_SYSCALL_OFFSET) };
    // SAFETY: for SIGSYS that field is the 32-bit syscall number; read_unaligned needs no
    // alignment.
    let nr = unsafe { field.cast::<i32>().read_unaligned() };
    // SAFETY: no arguments; allowed in every filter.
    let tid = unsafe { libc::gettid() };
    // SAFETY: no arguments; allowed in every filter.
    let pid = unsafe { libc::getpid() };
    let mut msg = *b"hull-vmm: seccomp: blocked syscall 000000 in vcpu thread\n";
    let mut n = nr.unsigned_abs();
    for i in (35..41).rev() {
        msg[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
    }
    if tid == pid {
        msg[45..49].copy_from_slice(b"main");
    }
    // SAFETY: write(2) is async-signal-safe; `msg` is a valid buffer of that length.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    // SAFETY: _exit(2) is async-signal-safe and does not return.
    unsafe { libc::_exit(31) }
}

/// Turns filtering on (or off) for threads that call `apply_for_thread` afterwards.
pub fn enable(on: bool) {
    static HANDLER: Once = Once::new();
    if on {
        HANDLER.call_once(|| {
            let _ = vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, sigsys_handler);
        });
    }
    ENABLED.store(on, Ordering::SeqCst);
}

/// Installs the filter for `kind` on the calling thread when filtering is enabled. A failure
/// is fatal for the VMM (running unconfined silently would be worse).
pub fn apply_for_thread(kind: ThreadKind) {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    let res = filter(kind)
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
        assert!(!filter(ThreadKind::Vmm).unwrap().is_empty());
        assert!(!filter(ThreadKind::Vcpu).unwrap().is_empty());
    }

    #[test]
    fn blocked_syscall_ends_a_child_process() {
        // In a forked child: install the vCPU filter, then call something it lacks.
        // SAFETY: fork in a test; the child only calls async-signal-safe functions and the
        // seccomp install (which allocates: acceptable in a test child that exits at once).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            enable(true);
            apply_for_thread(ThreadKind::Vcpu);
            // SAFETY: a plain syscall with no pointers; it is expected to be blocked.
            unsafe { libc::syscall(libc::SYS_socket, 1, 1, 0) };
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 31);
    }
}
