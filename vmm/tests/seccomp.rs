//! hull-vmm's real seccomp filters (`hull_vmm::seccomp`, what the binary installs) against
//! calls from threads set up exactly as in hull-vmm: the pre-boot filter on the thread that
//! spawns the others, the VMM or vCPU filter stacked on it. Each probe runs in a fresh copy of
//! this test binary (re-executed with `PROBE_ENV` set, so nothing leaks into the test runner);
//! the parent asserts how that process ended. No KVM is needed.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hull_vmm::exit::STATUS_ABORTED;
use hull_vmm::seccomp::{self, ThreadKind};

/// Set in a re-executed copy: `KIND:PROBE`.
const PROBE_ENV: &str = "HULL_SECCOMP_PROBE";
/// The pid of a process a probe tries to signal.
const VICTIM_ENV: &str = "HULL_SECCOMP_VICTIM";
/// Printed by a probe whose call returned and whose process went on.
const SURVIVED: &str = "probe survived";

extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn gettid() -> libc::pid_t {
    // SAFETY: no arguments.
    unsafe { libc::gettid() }
}

/// The forbidden or allowed call itself, made on a thread under the probed filter: the
/// syscall and its arguments, and whether it must succeed (when the filter lets it through).
fn call(probe: &str) {
    let victim: i64 = std::env::var(VICTIM_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(i64::from(i32::MAX));
    let own = i64::from(std::process::id());
    let tid = i64::from(gettid());
    let kick = i64::from(vmm_sys_util::signal::SIGRTMIN());
    let path = c"/nonexistent/hull-seccomp-probe".as_ptr() as i64;
    let (nr, args, must_succeed): (i64, [i64; 6], bool) = match probe {
        "socket-inet" => (
            libc::SYS_socket,
            [libc::AF_INET.into(), 1, 0, 0, 0, 0],
            false,
        ),
        "socket-unix" => (
            libc::SYS_socket,
            [libc::AF_UNIX.into(), 1, 0, 0, 0, 0],
            true,
        ),
        "kick-own-thread" => (libc::SYS_tgkill, [own, tid, kick, 0, 0, 0], true),
        "kick-other-process" => (libc::SYS_tgkill, [victim, victim, kick, 0, 0, 0], false),
        "term-own-thread" => (
            libc::SYS_tgkill,
            [own, tid, libc::SIGTERM.into(), 0, 0, 0],
            false,
        ),
        "abort" => std::process::abort(),
        "mmap-exec" => {
            let prot = libc::PROT_READ | libc::PROT_EXEC;
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            (
                libc::SYS_mmap,
                [0, 4096, prot.into(), flags.into(), -1, 0],
                false,
            )
        }
        "unlink" => (libc::SYS_unlink, [path, 0, 0, 0, 0, 0], false),
        "connect" => (libc::SYS_connect, [-1, 0, 0, 0, 0, 0], false),
        other => panic!("unknown probe {other}"),
    };
    // SAFETY: every pointer argument above is null or a NUL-terminated string that lives for
    // the whole program; what a call creates (a socket, a mapping) is never used.
    let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    assert!(
        !must_succeed || rc >= 0,
        "{probe} failed: {}",
        std::io::Error::last_os_error()
    );
}

/// The child's side: the process set up as hull-vmm's `main` sets itself up, then the call
/// on a thread of `kind`. Never returns.
fn run_probe(spec: &str) -> ! {
    let (kind, probe) = spec.split_once(':').expect("KIND:PROBE");
    let kind = match kind {
        "preboot" => None,
        "vmm" => Some(ThreadKind::Vmm),
        "vcpu" => Some(ThreadKind::Vcpu),
        other => panic!("unknown thread kind {other}"),
    };
    hull_vmm::vmm::install_crash_handlers().expect("crash handlers");
    // What the vCPU kick handler is to hull-vmm: the kick must arrive, not end the process.
    vmm_sys_util::signal::register_signal_handler(vmm_sys_util::signal::SIGRTMIN(), noop)
        .expect("kick handler");
    seccomp::enable(true);
    seccomp::apply_for_thread(ThreadKind::PreBoot);
    let probe = probe.to_owned();
    let t = std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            if let Some(k) = kind {
                seccomp::apply_for_thread(k);
            }
            call(&probe);
        })
        .expect("spawn under the pre-boot filter");
    let _ = t.join();
    // Only the main thread of a whole process that is still alive gets here.
    println!("{SURVIVED}");
    std::process::exit(0)
}

/// If this process is a re-executed probe, runs it (never returns).
fn probe_if_child() {
    if let Ok(spec) = std::env::var(PROBE_ENV) {
        run_probe(&spec);
    }
}

/// Runs `KIND:PROBE` in a copy of this binary, wrapped by `wrap` (e.g. `unshare`), and
/// returns how it ended and its output.
fn probe(test: &str, spec: &str, wrap: &[&str], victim: Option<u32>) -> (ExitStatus, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut argv: Vec<std::ffi::OsString> = wrap.iter().map(Into::into).collect();
    argv.push(exe.into());
    argv.extend(["--exact", test, "--nocapture", "--test-threads=1"].map(Into::into));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env(PROBE_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = victim {
        cmd.env(VICTIM_ENV, v.to_string());
    }
    let child = cmd.spawn().expect("re-exec the test binary");
    let out = child.wait_with_output().expect("wait for the probe");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

fn killed_by_seccomp(s: &ExitStatus) -> bool {
    std::os::unix::process::ExitStatusExt::signal(s) == Some(libc::SIGSYS)
}

/// How a probe must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The call went through and the process went on.
    Survives,
    /// The filter killed the whole process (SIGSYS), not just the calling thread.
    Killed,
    /// hull-vmm's abort status: a panic stays a panic under the filters.
    Aborted,
}

fn check(test: &str, spec: &str, want: Want, wrap: &[&str], victim: Option<u32>) {
    let (status, out) = probe(test, spec, wrap, victim);
    let ok = match want {
        Want::Survives => status.success() && out.contains(SURVIVED),
        Want::Killed => killed_by_seccomp(&status) && !out.contains(SURVIVED),
        Want::Aborted => status.code() == Some(STATUS_ABORTED) && !out.contains(SURVIVED),
    };
    assert!(
        ok,
        "{spec} under {wrap:?}: want {want:?}, got {status}; output:\n{out}"
    );
}

#[test]
fn forbidden_calls_kill_the_whole_vmm_allowed_ones_pass() {
    probe_if_child();
    const TEST: &str = "forbidden_calls_kill_the_whole_vmm_allowed_ones_pass";
    // A process the probes may try to signal; it must outlive them all.
    let mut victim = Command::new("sleep").arg("60").spawn().expect("sleep");
    use Want::*;
    let cases = [
        ("vmm:socket-inet", Killed),
        ("vcpu:socket-inet", Killed),
        ("preboot:socket-inet", Killed),
        ("vmm:socket-unix", Survives),
        ("preboot:socket-unix", Survives),
        ("vcpu:socket-unix", Killed),
        ("vmm:kick-own-thread", Survives),
        ("vcpu:kick-own-thread", Survives),
        ("vmm:kick-other-process", Killed),
        ("preboot:kick-other-process", Killed),
        ("vmm:term-own-thread", Killed),
        ("vmm:abort", Aborted),
        ("vcpu:abort", Aborted),
        ("vmm:mmap-exec", Killed),
        ("preboot:mmap-exec", Killed),
        ("vmm:unlink", Killed),
        ("vcpu:unlink", Killed),
        ("preboot:unlink", Survives),
        ("vmm:connect", Survives),
        ("vcpu:connect", Killed),
    ];
    for (spec, want) in cases {
        check(TEST, spec, want, &[], Some(victim.id()));
    }
    assert!(
        victim.try_wait().expect("victim").is_none(),
        "no probe may signal another process"
    );
    let _ = victim.kill();
    let _ = victim.wait();
}

/// As PID 1 of its own pid namespace (how the shim's jail starts hull-vmm): a violation
/// still ends it (the kernel's forced SIGSYS overrides the init's protection), the kick still
/// reaches its own thread (getpid() is 1 there), and an abort still ends it as an abort,
/// although the kernel drops the SIGABRT an init sends itself while its action is the default.
/// Needs root (`unshare --pid`).
#[test]
fn as_pid_1_of_a_pid_namespace() {
    probe_if_child();
    const TEST: &str = "as_pid_1_of_a_pid_namespace";
    let wrap = ["unshare", "--pid", "--fork", "--kill-child"];
    let start = Instant::now();
    for (spec, want) in [
        ("vmm:socket-inet", Want::Killed),
        ("vcpu:kick-own-thread", Want::Survives),
        ("vmm:abort", Want::Aborted),
    ] {
        check(TEST, spec, want, &wrap, None);
    }
    assert!(start.elapsed() < Duration::from_secs(30));
}
