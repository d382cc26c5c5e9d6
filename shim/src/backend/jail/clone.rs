//! The jailer step (issue 17 §1): the shim clones hull-vmm straight into new pid, mount, ipc,
//! uts and network namespaces (fork semantics: it stays the shim's child and is PID 1 of its
//! pid namespace) and the child confines itself before it execs.
//!
//! The shim is multi-threaded (tokio, virtiofsd's spawner), so between clone and exec the
//! child may only make raw system calls: every path, argument and descriptor is prepared
//! before the clone ([`Prepared`]), and the child allocates nothing, takes no lock and calls
//! no libc function that keeps per-process state (setresuid(3) and setgroups(3) of glibc
//! would signal the parent's other threads, so the raw system calls are used). A failing
//! step writes its number and errno to a close-on-exec pipe and exits; the parent reads
//! that pipe until exec closes it, as std's `Command::spawn` does.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::{c_char, c_int, c_long, c_ulong};

use super::JailError;

/// A host file bound into the jail.
#[derive(Debug, Clone)]
pub(crate) struct Bind {
    pub(crate) source: PathBuf,
    /// Where, relative to the jail root (`hull-vmm`, `dev/kvm`).
    pub(crate) target: &'static str,
    /// Read-only, no exec, no devices (the binary gets `exec`, device nodes get `dev`).
    pub(crate) read_only: bool,
    pub(crate) exec: bool,
    pub(crate) dev: bool,
}

/// Everything the jailed child is set up with.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The jail directory on the host; it becomes `/`.
    pub(crate) root: PathBuf,
    pub(crate) binds: Vec<Bind>,
    /// The program inside the jail (`/hull-vmm`).
    pub(crate) exe: &'static str,
    /// argv, argv[0] included.
    pub(crate) argv: Vec<OsString>,
    /// `KEY=VALUE` entries: the whole environment.
    pub(crate) env: Vec<OsString>,
    /// Passed as fds 3, 4, … in this order.
    pub(crate) fds: Vec<RawFd>,
    /// Standard output and error (`/dev/null` when `None`); stdin is always `/dev/null`.
    pub(crate) stdout: Option<RawFd>,
    pub(crate) stderr: Option<RawFd>,
    /// An open `cgroup.procs` the child writes itself into first.
    pub(crate) cgroup_procs: Option<RawFd>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups (the group that owns /dev/kvm).
    pub(crate) groups: Vec<u32>,
    pub(crate) nofile: u64,
    pub(crate) fsize: u64,
}

/// The child's steps, named in errors (the index travels through the error pipe).
const STEPS: [&str; 20] = [
    "join the pod cgroup",
    "set the parent-death signal",
    "check that the shim is alive",
    "make / private",
    "bind the jail onto itself",
    "remount the jail root nosuid,nodev,noexec",
    "bind a file into the jail",
    "remount a bound file",
    "enter the jail",
    "pivot_root",
    "detach the old root",
    "place the passed fds",
    "close the other fds",
    "set rlimits",
    "drop the capability bounding set",
    "set the supplementary groups",
    "set the gid",
    "set the uid",
    "clear the capabilities",
    "set no_new_privs",
];
const EXEC_STEP: u32 = 20;
/// Sources of the passed fds are moved here first, above every target, so one that happens
/// to be a target of an earlier dup2 is not overwritten.
const PARKED_FD_MIN: c_int = 64;
/// The report pipe and the shim's pidfd sit here, above the targets and the parked copies.
const KEPT_FD_MIN: c_int = 128;
/// prctl(2) `PR_CAP_AMBIENT` and its `PR_CAP_AMBIENT_CLEAR_ALL` (not in the libc crate for
/// Linux).
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;

/// Creates the mount points of `binds` under `root` (empty files, parents as needed).
pub(crate) fn make_mount_points(root: &Path, binds: &[Bind]) -> Result<(), JailError> {
    for b in binds {
        let at = root.join(b.target);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(JailError::io("create", parent))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&at)
            .map_err(JailError::io("create the mount point", &at))?;
    }
    Ok(())
}

fn cstring(p: &std::ffi::OsStr) -> Result<CString, JailError> {
    CString::new(p.as_bytes()).map_err(|_| JailError::Nul(PathBuf::from(p)))
}

/// One bind as the child needs it.
struct PreparedBind {
    source: CString,
    target: CString,
    remount: c_ulong,
}

/// [`Spec`] turned into C strings and pointers, before the clone.
struct Prepared {
    root: CString,
    binds: Vec<PreparedBind>,
    exe: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const c_char>,
    /// (target, source) pairs: 0, 1, 2, then 3…
    fds: Vec<(c_int, c_int)>,
    cgroup_procs: Option<c_int>,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    nofile: libc::rlimit,
    fsize: libc::rlimit,
    /// Readable once the shim has exited: a shim that died before the child set its
    /// parent-death signal would never send it.
    parent: c_int,
    /// The write end of the error pipe.
    report: c_int,
}

/// Clones and jails `spec`; returns the child's pid (in the shim's namespace) and a pidfd
/// for it, once it has exec'd.
pub(crate) fn spawn(spec: &Spec) -> Result<(u32, OwnedFd), JailError> {
    let clone_err = |step: &'static str| {
        let source = std::io::Error::last_os_error();
        move || JailError::Clone { step, source }
    };
    let dev_null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(JailError::io("open", Path::new("/dev/null")))?;
    let me = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: pidfd_open(2) of this process with no flags; the result is checked.
    let parent = unsafe { libc::syscall(libc::SYS_pidfd_open, me, 0) };
    let parent = c_int::try_from(parent).unwrap_or(-1);
    if parent < 0 {
        return Err(clone_err("pidfd_open the shim")());
    }
    // SAFETY: a fresh descriptor this function owns from here on (pidfds are close-on-exec).
    let parent = unsafe { OwnedFd::from_raw_fd(parent) };
    let mut pipe = [0 as c_int; 2];
    // SAFETY: pipe2(2) writes two descriptors into `pipe`.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(clone_err("pipe2")());
    }
    // SAFETY: both ends are fresh descriptors owned from here on.
    let read_end = unsafe { OwnedFd::from_raw_fd(pipe[0]) };
    // SAFETY: as above.
    let write_end = unsafe { OwnedFd::from_raw_fd(pipe[1]) };
    // The child dup2s onto its low fds: what it still needs afterwards must live above them.
    let write_end =
        above_targets(write_end).map_err(JailError::io("dup", Path::new("the report pipe")))?;
    let parent =
        above_targets(parent).map_err(JailError::io("dup", Path::new("the shim's pidfd")))?;

    let root = cstring(spec.root.as_os_str())?;
    let binds = spec
        .binds
        .iter()
        .map(|b| {
            let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
            if b.read_only {
                flags |= libc::MS_RDONLY;
            }
            if !b.exec {
                flags |= libc::MS_NOEXEC;
            }
            if !b.dev {
                flags |= libc::MS_NODEV;
            }
            Ok(PreparedBind {
                source: cstring(b.source.as_os_str())?,
                target: cstring(spec.root.join(b.target).as_os_str())?,
                remount: flags,
            })
        })
        .collect::<Result<Vec<_>, JailError>>()?;
    let argv = spec
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let null = dev_null.as_raw_fd();
    let mut fds = vec![
        (0, null),
        (1, spec.stdout.unwrap_or(null)),
        (2, spec.stderr.unwrap_or(null)),
    ];
    fds.extend((3..).zip(spec.fds.iter().copied()));
    let p = Prepared {
        root,
        binds,
        exe: cstring(std::ffi::OsStr::new(spec.exe))?,
        argv_ptrs: ptrs(&argv),
        _argv: argv,
        env_ptrs: ptrs(&env),
        _env: env,
        fds,
        cgroup_procs: spec.cgroup_procs,
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
        nofile: libc::rlimit {
            rlim_cur: spec.nofile,
            rlim_max: spec.nofile,
        },
        fsize: libc::rlimit {
            rlim_cur: spec.fsize,
            rlim_max: spec.fsize,
        },
        parent: parent.as_raw_fd(),
        report: write_end.as_raw_fd(),
    };

    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWNET
        | libc::CLONE_PIDFD
        | libc::SIGCHLD;
    // The flags are positive constants; a failed conversion must never become a clone without
    // the namespaces.
    let flags = c_ulong::try_from(flags).map_err(|_| JailError::Clone {
        step: "clone flags",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    // clone(2) without CLONE_VM and with a null stack is fork(2); x86_64 argument order:
    // flags, stack, parent_tid (the pidfd with CLONE_PIDFD), child_tid, tls.
    // SAFETY: the child gets a copy of this address space and only this thread; it runs
    // `child` alone, which makes only raw system calls on memory prepared above and never
    // returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as c_ulong,
            &raw mut pidfd,
            std::ptr::null_mut::<c_int>(),
            0 as c_ulong,
        )
    };
    if ret == 0 {
        child(&p);
    }
    if ret < 0 {
        return Err(clone_err("clone")());
    }
    drop(write_end);
    // SAFETY: CLONE_PIDFD stored a fresh descriptor for the child in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = u32::try_from(ret).unwrap_or(0);
    drop(p);
    match read_report(&read_end) {
        None => Ok((pid, pidfd)),
        Some((step, errno)) => {
            // The child exits right after its report: reap it, so no zombie is left.
            let _ = crate::child::reap_pidfd(&pidfd, 0);
            let step = usize::try_from(step)
                .ok()
                .and_then(|i| STEPS.get(i).copied())
                .unwrap_or("exec");
            Err(JailError::Child {
                step,
                source: std::io::Error::from_raw_os_error(errno),
            })
        }
    }
}

/// `fd` moved to a close-on-exec descriptor at or above [`KEPT_FD_MIN`] (the original is
/// closed: a stray copy of the report pipe's write end would hide the child's exec).
fn above_targets(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(2) F_DUPFD_CLOEXEC of a descriptor this process owns.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, KEPT_FD_MIN) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned by the result.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Blocks until the child has exec'd (EOF) or reported a failed step.
fn read_report(fd: &OwnedFd) -> Option<(u32, i32)> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: read(2) into the unfilled tail of `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            Err(_) => break,
        }
    }
    if got < buf.len() {
        return None;
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Some((step, errno))
}

/// A failed step: its number and errno.
type Fail = (u32, c_int);

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `r < 0` → the step failed with errno.
fn check(step: u32, r: c_long) -> Result<(), Fail> {
    if r < 0 {
        Err((step, errno()))
    } else {
        Ok(())
    }
}

/// The cloned child: jails itself and execs, or reports the step that failed and exits.
fn child(p: &Prepared) -> ! {
    let (step, err) = match setup(p) {
        Err(f) => f,
        Ok(()) => {
            // SAFETY: execve(2) with NUL-terminated strings and null-terminated pointer
            // arrays that live in `p`; it returns only on failure.
            unsafe { libc::execve(p.exe.as_ptr(), p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr()) };
            (EXEC_STEP, errno())
        }
    };
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&step.to_ne_bytes());
    buf[4..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: write(2) of a stack buffer to the report pipe; _exit(2) ends the child without
    // running the parent's atexit handlers or destructors.
    unsafe { libc::write(p.report, buf.as_ptr().cast(), buf.len()) };
    // SAFETY: see above.
    unsafe { libc::_exit(127) }
}

fn mount(step: u32, src: *const c_char, target: *const c_char, flags: c_ulong) -> Result<(), Fail> {
    // SAFETY: mount(2) with NUL-terminated strings (or null) that outlive the call.
    let r = unsafe { libc::mount(src, target, std::ptr::null(), flags, std::ptr::null()) };
    check(step, c_long::from(r))
}

fn prctl(step: u32, op: c_int, arg: c_ulong) -> Result<(), Fail> {
    // SAFETY: prctl(2) with integer arguments only.
    let r = unsafe { libc::prctl(op, arg, 0 as c_ulong, 0 as c_ulong, 0 as c_ulong) };
    check(step, c_long::from(r))
}

fn setrlimit(resource: libc::__rlimit_resource_t, limit: &libc::rlimit) -> Result<(), Fail> {
    // SAFETY: setrlimit(2) reading one rlimit through a reference.
    let r = unsafe { libc::setrlimit(resource, limit) };
    check(13, c_long::from(r))
}

fn setup(p: &Prepared) -> Result<(), Fail> {
    if let Some(fd) = p.cgroup_procs {
        // "0" is the writing process (cgroup v2 cgroup.procs): all its memory, guest RAM
        // included, is charged to the pod from the first page.
        // SAFETY: write(2) of a static 1-byte buffer to an fd the parent keeps open.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err((0, errno()));
        }
    }
    // Nothing mounted below propagates back to the host's namespace.
    mount(
        3,
        std::ptr::null(),
        c"/".as_ptr(),
        libc::MS_REC | libc::MS_PRIVATE,
    )?;
    // pivot_root needs the new root to be a mount point.
    mount(4, p.root.as_ptr(), p.root.as_ptr(), libc::MS_BIND)?;
    let root_flags =
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(5, std::ptr::null(), p.root.as_ptr(), root_flags)?;
    for b in &p.binds {
        mount(6, b.source.as_ptr(), b.target.as_ptr(), libc::MS_BIND)?;
        mount(7, std::ptr::null(), b.target.as_ptr(), b.remount)?;
    }
    // SAFETY: chdir(2) with a NUL-terminated path.
    check(8, c_long::from(unsafe { libc::chdir(p.root.as_ptr()) }))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one, and the detach
    // below removes it, with every host mount this namespace copied.
    // SAFETY: pivot_root(2) with two NUL-terminated paths.
    check(9, unsafe {
        libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr())
    })?;
    // SAFETY: umount2(2) with a NUL-terminated path.
    let r = unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) };
    check(10, c_long::from(r))?;
    // SAFETY: chdir(2) with a NUL-terminated path.
    check(8, c_long::from(unsafe { libc::chdir(c"/".as_ptr()) }))?;
    place_fds(p)?;
    setrlimit(libc::RLIMIT_NOFILE, &p.nofile)?;
    setrlimit(libc::RLIMIT_FSIZE, &p.fsize)?;
    // A core dump would write out guest memory.
    setrlimit(
        libc::RLIMIT_CORE,
        &libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        },
    )?;
    // Every capability number the kernel may know (cap_last_cap is 40 on 6.x); EINVAL past
    // the last one.
    for cap in 0..64 {
        if let Err(f) = prctl(14, libc::PR_CAPBSET_DROP, cap) {
            if f.1 != libc::EINVAL {
                return Err(f);
            }
        }
    }
    prctl(14, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)?;
    // SAFETY: setgroups(2) reading `groups.len()` gids from the vector in `p`.
    check(15, unsafe {
        libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr())
    })?;
    // SAFETY: setresgid(2) with integer arguments.
    check(16, unsafe {
        libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid)
    })?;
    // Leaving uid 0 clears the permitted and effective sets (no SECBIT_KEEP_CAPS).
    // SAFETY: setresuid(2) with integer arguments.
    check(17, unsafe {
        libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid)
    })?;
    // The inheritable set survives setresuid: empty it too.
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset(2) reading a v3 header and its two data structs from the stack.
    check(18, unsafe {
        libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr())
    })?;
    // Set only now: a change of uid clears the parent-death signal (commit_creds).
    prctl(1, libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong)?;
    // getppid(2) says 0 from inside a new pid namespace, so the shim's pidfd answers: it is
    // readable once the shim has exited, and then nobody would send the signal.
    let mut pfd = libc::pollfd {
        fd: p.parent,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd on the stack, without waiting.
    let r = unsafe { libc::poll(&raw mut pfd, 1, 0) };
    check(2, c_long::from(r))?;
    if r > 0 {
        return Err((2, libc::ESRCH));
    }
    prctl(19, libc::PR_SET_NO_NEW_PRIVS, 1)?;
    // The shim's mask and ignored signals (SIGPIPE) would survive exec.
    // SAFETY: an all-zero sigset_t is the empty set.
    let empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: rt_sigprocmask(2) reading a sigset on the stack; the size is the kernel's.
    check(19, unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            std::ptr::null_mut::<libc::sigset_t>(),
            8usize,
        )
    })?;
    // SAFETY: signal(2) to the default disposition (glibc makes it one rt_sigaction call).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    Ok(())
}

/// dup2 each source to its target (parking them all above the targets first), then mark
/// every other descriptor close-on-exec: hull-vmm gets exactly 0, 1, 2 and its passed fds
/// (closing them now would close the report pipe before a later step could fail).
fn place_fds(p: &Prepared) -> Result<(), Fail> {
    let mut parked = [0 as c_int; 16];
    if p.fds.len() > parked.len() {
        return Err((11, libc::EMFILE));
    }
    for (slot, (_, src)) in parked.iter_mut().zip(&p.fds) {
        // SAFETY: fcntl(2) F_DUPFD_CLOEXEC of an fd the parent keeps open.
        let fd = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, PARKED_FD_MIN) };
        check(11, c_long::from(fd))?;
        *slot = fd;
    }
    for (parked, (target, _)) in parked.iter().zip(&p.fds) {
        // dup2 clears FD_CLOEXEC on the target, so it survives exec.
        // SAFETY: dup2(2) between two descriptors of this process.
        check(11, c_long::from(unsafe { libc::dup2(*parked, *target) }))?;
    }
    let first_free = p.fds.iter().map(|(t, _)| *t).max().unwrap_or(2) + 1;
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC (Linux 5.11) on every descriptor from
    // `first_free` up.
    check(12, unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_free,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    })
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
