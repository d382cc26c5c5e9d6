//! The real `hull-vmm` under the conditions of the shim's jail: PID 1 of its own pid
//! namespace, its own mount, network, IPC and UTS namespaces, a root holding only its binary,
//! its payload or kernel, `/dev/kvm` and `/dev/urandom` (no /proc, /sys or /tmp), the console
//! an inherited fd, stopped with SIGTERM from the parent namespace. This test binary is not
//! static, so the jail root also gets the host's `/usr` read-only for the dynamic loader; the
//! production jail needs none (hull-vmm is linked statically there). Needs root (`unshare`,
//! `mount`) and `/dev/kvm`.

mod support;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hull_contract::vmm_args::{flag, Console, VmmArgs};
use hull_vmm::hostcheck::HostKvm;
use support::{require_kvm, wait_until};

/// The fd the console file is handed over as, as the shim does.
const CONSOLE_FD: i32 = 3;

/// Makes `root` a jail root: the binary, `/dev/kvm`, `/dev/urandom` mount points, `/usr` and
/// the loader's symlinks; `files` are copied in.
fn jail_root(root: &Path, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::create_dir_all(root.join("usr")).unwrap();
    for f in ["hull-vmm", "dev/kvm", "dev/urandom"] {
        std::fs::write(root.join(f), b"").unwrap();
    }
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
    for (name, data) in files {
        std::fs::write(root.join(name), data).unwrap();
    }
}

/// `hull-vmm ARGS` jailed in `root` as PID 1 of new namespaces, with `console` as fd 3.
/// The binds are made inside the new mount namespace, so they go with it.
fn jailed(root: &Path, args: &[OsString], console: Option<&std::fs::File>) -> Command {
    let script = r#"set -e
R=$1; shift
mount --bind -o ro "$HULL_VMM" "$R/hull-vmm"
mount --bind /dev/kvm "$R/dev/kvm"
mount --bind /dev/urandom "$R/dev/urandom"
mount --rbind /usr "$R/usr"
mount -o remount,bind,ro "$R/usr"
exec chroot "$R" /hull-vmm "$@""#;
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--pid",
        "--fork",
        "--net",
        "--ipc",
        "--uts",
        "--kill-child",
        "--",
        "sh",
        "-c",
    ])
    .arg(script)
    .arg("sh")
    .arg(root)
    .args(args)
    .env("HULL_VMM", env!("CARGO_BIN_EXE_hull-vmm"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(f) = console {
        let fd = f.as_raw_fd();
        let place = move || {
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let rc = if fd == CONSOLE_FD {
                // SAFETY: F_SETFD on an fd this process has open; no pointer.
                unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }
            } else {
                // SAFETY: both are fd numbers; `fd` is open until the child has exec'd.
                unsafe { libc::dup2(fd, CONSOLE_FD) }
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: `place` makes only async-signal-safe calls and allocates nothing (the error
        // path builds an io::Error from errno, which does not allocate).
        unsafe { c.pre_exec(place) };
    }
    c
}

/// The pid (in this namespace) of the jailed hull-vmm: the one child of `unshare`.
fn vmm_pid(unshare: &Child) -> i32 {
    let p = format!("/proc/{0}/task/{0}/children", unshare.id());
    wait_until("hull-vmm started", Duration::from_secs(10), || {
        std::fs::read_to_string(&p)
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn output(child: Child) -> (std::process::ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status, text)
}

/// 16-bit code: print `up` on COM1, then idle with interrupts on (`sti; hlt; jmp`).
const UP_AND_IDLE: &[u8] = &[
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'u', 0xee, 0xb0, b'p', 0xee, 0xb0, b'\n', 0xee, // out "up\n"
    0xfb, 0xf4, 0xeb, 0xfd, // sti; hlt; jmp
];

#[test]
fn runs_as_pid_1_without_proc_and_stops_on_sigterm() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    jail_root(&root, &[("payload", UP_AND_IDLE)]);
    let console_path = dir.path().join("console.log");
    let console = std::fs::File::create(&console_path).unwrap();
    let mut args = VmmArgs {
        console: Console::Fd(CONSOLE_FD),
        vsock_uds: Some("/vsock.sock".into()),
        ..VmmArgs::default()
    }
    .to_args();
    args.extend([format!("--{}", flag::RAW_PAYLOAD).into(), "/payload".into()]);
    let mut child = jailed(&root, &args, Some(&console)).spawn().unwrap();
    drop(console);
    let pid = vmm_pid(&child);
    wait_until(
        "guest output on the console fd",
        Duration::from_secs(20),
        || {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                let _ =
                    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
                panic!("jailed hull-vmm ended early ({status}): {stderr}");
            }
            (std::fs::read_to_string(&console_path).unwrap_or_default() == "up\n").then_some(())
        },
    );
    assert!(
        root.join("vsock.sock").exists(),
        "vsock socket in the jail root"
    );
    // From the parent namespace: reaches a namespace's init only because hull-vmm blocks it
    // (and reads it from its signalfd); a default action would be discarded.
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    let (status, stderr) = output(child);
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("VM ended: Stopped"), "stderr: {stderr}");
}

/// Without /proc/cpuinfo and /sys/module, a Linux guest is refused on this host exactly when
/// it is refused outside the jail.
#[test]
fn the_software_kvm_check_works_without_proc_and_sys() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    jail_root(&root, &[("kernel", b"\x7fELF")]);
    let args = VmmArgs::new("/kernel", 1, 128).to_args();
    let child = jailed(&root, &args, None).spawn().unwrap();
    let (status, stderr) = output(child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let host = HostKvm::detect(&Default::default());
    let names_lab = stderr.contains("lab/run") && stderr.lines().count() == 1;
    assert_eq!(names_lab, host == HostKvm::Software, "{host:?}: {stderr}");
}
