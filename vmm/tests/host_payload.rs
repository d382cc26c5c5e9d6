//! Host tests: the real `hull-vmm` binary runs tiny hand-written payloads on this host's
//! `/dev/kvm` (a software KVM is fine for these); they fail without one.

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hull_contract::vmm_args::{flag, Console, VmmArgs};
use hull_vmm::hostcheck::HostKvm;
use support::{require_kvm, wait_until};

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hull-vmm"))
}

/// How a test payload starts.
#[derive(Clone, Copy)]
enum Mode {
    Real,
    Protected32,
}

/// hull-vmm's arguments: `a`'s flags, then the test-only ones that run `payload` in `mode`.
fn payload_args(payload: &Path, mode: Mode, a: &VmmArgs) -> Vec<OsString> {
    let mut v = a.to_args();
    v.push(format!("--{}", flag::RAW_PAYLOAD).into());
    v.push(payload.into());
    if let Mode::Protected32 = mode {
        v.push(format!("--{}", flag::RAW_PAYLOAD_32BIT).into());
    }
    v
}

fn console_file(p: &Path) -> VmmArgs {
    VmmArgs {
        console: Console::File(p.to_path_buf()),
        ..VmmArgs::default()
    }
}

/// 16-bit code: `out` each byte of `text` to COM1.
fn serial_out16(text: &[u8]) -> Vec<u8> {
    let mut c = vec![0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for b in text {
        c.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    c
}

/// Boot-timer write (`mov dx, 0x3f0; mov al, 123; out dx, al`), valid in 16- and 32-bit code
/// only with the operand-size prefix in 32-bit; this is the 16-bit form.
const BOOT_TIMER16: &[u8] = &[0xba, 0xf0, 0x03, 0xb0, 123, 0xee];
/// i8042 reset: `mov al, 0xfe; out 0x64, al`, then `hlt; jmp $-1`.
const RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];

fn write_payload(dir: &Path, code: &[u8]) -> PathBuf {
    let p = dir.join("payload.bin");
    std::fs::write(&p, code).unwrap();
    p
}

fn run(args: &[OsString], timeout: Duration) -> Output {
    let mut child = vmm()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hull-vmm did not exit within {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serial_output_boot_timer_and_i8042_reset() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let mut code = serial_out16(b"hello from the guest\n");
    code.extend_from_slice(BOOT_TIMER16);
    code.extend_from_slice(RESET);
    let payload = write_payload(dir.path(), &code);
    let console = dir.path().join("console.log");
    let out = run(
        &payload_args(
            &payload,
            Mode::Real,
            &VmmArgs {
                boot_timer: true,
                metrics_on_exit: true,
                ..console_file(&console)
            },
        ),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        std::fs::read_to_string(&console).unwrap(),
        "hello from the guest\n"
    );
    assert!(stderr.contains("guest agent ready"), "stderr: {stderr}");
    assert!(stderr.contains("GuestReset"), "stderr: {stderr}");
    let metrics_line = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("metrics json");
    let m: serde_json::Value = serde_json::from_str(metrics_line).unwrap();
    assert_ne!(m["boot"]["guest_boot_timer_us"], 0);
    assert_ne!(m["boot"]["first_kvm_run_us"], 0);
}

#[test]
fn console_to_stdout_and_off() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let mut code = serial_out16(b"out\n");
    code.extend_from_slice(RESET);
    let payload = write_payload(dir.path(), &code);
    let out = run(
        &payload_args(&payload, Mode::Real, &VmmArgs::default()),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"out\n");
    let out = run(
        &payload_args(
            &payload,
            Mode::Real,
            &VmmArgs {
                console: Console::Off,
                ..VmmArgs::default()
            },
        ),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn mmio_exits_reach_devices_and_unmapped_addresses_are_harmless() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    // 32-bit flat mode.
    let mut c: Vec<u8> = vec![];
    c.extend_from_slice(&[0xa1, 0x00, 0x10, 0x00, 0xc8]); // mov eax, [0xc8001000] (MMIO hole)
    c.extend_from_slice(&[0xa3, 0x00, 0x20, 0x00, 0xc8]); // mov [0xc8002000], eax
    c.extend_from_slice(&[0xa1, 0x00, 0x00, 0x00, 0xd0]); // mov eax, [0xd0000000] (virtio magic)
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    c.extend_from_slice(&[0x3d, 0x76, 0x69, 0x72, 0x74]); // cmp eax, "virt"
    c.extend_from_slice(&[0x75, 0x03]); // jne +3
    c.extend_from_slice(&[0xb0, b'V', 0xee]); // mov al,'V'; out dx,al
    c.extend_from_slice(&[0xb0, b'\n', 0xee]);
    c.extend_from_slice(RESET);
    let payload = write_payload(dir.path(), &c);
    let console = dir.path().join("console.log");
    let out = run(
        &payload_args(
            &payload,
            Mode::Protected32,
            &VmmArgs {
                metrics_on_exit: true,
                ..console_file(&console)
            },
        ),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(std::fs::read_to_string(&console).unwrap(), "V\n");
    let metrics_line = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("metrics json");
    let m: serde_json::Value = serde_json::from_str(metrics_line).unwrap();
    assert_eq!(m["vcpu"]["unhandled_mmio"], 2, "{m}");
}

/// hull-vmm running a payload that prints `up` and idles, with a vsock socket at `uds`.
fn idle_guest_with_vsock(dir: &Path, uds: &Path) -> std::process::Child {
    let mut code = serial_out16(b"up\n");
    code.extend_from_slice(&[0xfb, 0xf4, 0xeb, 0xfd]); // sti; hlt; jmp: idle, not over
    let payload = write_payload(dir, &code);
    let console = dir.join("console.log");
    let child = vmm()
        .args(payload_args(
            &payload,
            Mode::Real,
            &VmmArgs {
                vsock_uds: Some(uds.to_path_buf()),
                ..console_file(&console)
            },
        ))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("guest output", Duration::from_secs(20), || {
        (std::fs::read_to_string(&console).unwrap_or_default() == "up\n").then_some(())
    });
    child
}

/// Sends SIGTERM and expects a clean exit.
fn sigterm_exits_cleanly(child: &mut std::process::Child) {
    let pid = i32::try_from(child.id()).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    let status = wait_until("exit after SIGTERM", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_stops_an_idle_guest_cleanly() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mut child = idle_guest_with_vsock(dir.path(), &uds);
    assert!(uds.exists());
    sigterm_exits_cleanly(&mut child);
    // Left for the directory's owner: once the VM runs hull-vmm unlinks nothing (seccomp).
    assert!(uds.exists(), "vsock socket file left in place");
}

#[test]
fn a_vsock_connection_the_guest_never_answers_is_closed() {
    // The payload has no vsock driver: the REQUEST stays unanswered. The muxer arms its
    // timer (timerfd_settime on the seccomp-confined VMM thread) and closes the host stream
    // after hull-vmm's 2 s timeout; the VMM goes on.
    use std::io::{Read, Write};
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mut child = idle_guest_with_vsock(dir.path(), &uds);
    let mut s = std::os::unix::net::UnixStream::connect(&uds).unwrap();
    s.write_all(hull_contract::vsock::connect_request(1024).as_bytes())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).unwrap(), 0, "closed without an OK");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(child.try_wait().unwrap().is_none(), "hull-vmm still runs");
    sigterm_exits_cleanly(&mut child);
}

/// What a guest kernel without ACPI does on `poweroff`: every CPU halts with interrupts off
/// inside the in-kernel irqchip. The VMM must notice and exit 0 (with 2 vCPUs the AP is never
/// started by this payload, which must not keep the VM alive either).
#[test]
fn halt_with_interrupts_off_is_poweroff() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let mut code = serial_out16(b"bye\n");
    code.extend_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]); // cli; hlt; jmp
    let payload = write_payload(dir.path(), &code);
    for vcpus in [1, 2] {
        let a = VmmArgs {
            vcpus: Some(vcpus),
            ..VmmArgs::default()
        };
        let out = run(
            &payload_args(&payload, Mode::Real, &a),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
        assert_eq!(out.stdout, b"bye\n");
        assert!(stderr.contains("GuestPoweroff"), "stderr: {stderr}");
    }
}

/// A guest kernel that panics prints its panic line and, with hull's `panic=1`, resets the
/// machine through the i8042 a second later. KVM sees a plain reset; hull-vmm must report a
/// guest crash (status 3), with the console output intact, even with the console off.
#[test]
fn a_reset_after_a_panic_line_is_a_crash() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let mut code = serial_out16(b"[    0.4] Kernel panic - not syncing: VFS: test\n");
    code.extend_from_slice(RESET);
    let payload = write_payload(dir.path(), &code);
    for console in [Console::Stdout, Console::Off] {
        let a = VmmArgs {
            console: console.clone(),
            ..VmmArgs::default()
        };
        let out = run(
            &payload_args(&payload, Mode::Real, &a),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(3),
            "console {console:?}; stderr: {stderr}"
        );
        assert!(stderr.contains("GuestPanic"), "stderr: {stderr}");
        if console == Console::Stdout {
            assert_eq!(
                out.stdout,
                b"[    0.4] Kernel panic - not syncing: VFS: test\n"
            );
        }
    }
}

/// 32-bit code: `out` each byte of `text` to COM1.
fn serial_out32(text: &[u8]) -> Vec<u8> {
    let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for b in text {
        c.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    c
}

/// A guest that crashes the way a kernel with a broken IDT does: load an IDT with limit 0,
/// then raise #UD. Neither it, nor the #GP, nor the #DF that follow can be delivered, so the
/// CPU shuts down (a triple fault, `KVM_EXIT_SHUTDOWN`). That is a guest crash, not a reboot:
/// hull-vmm must say so, with the registers, and exit 3. (`ud2` rather than `int3`: the
/// software KVM here (kvm_pvm) reports `int3` in this mode as an emulation failure instead.)
#[test]
fn triple_fault_is_a_crash_with_registers_not_a_reset() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let base = 0x1000u32; // where the VMM loads and enters the payload
    let mut code = serial_out32(b"crash\n");
    let lidt_len = 7; // 0f 01 1d disp32
    let ud2_at = base + u32::try_from(code.len()).unwrap() + lidt_len;
    let idt_desc = ud2_at + 2 + 2; // after ud2 and jmp $
    code.extend_from_slice(&[0x0f, 0x01, 0x1d]); // lidt [idt_desc]
    code.extend_from_slice(&idt_desc.to_le_bytes());
    code.extend_from_slice(&[0x0f, 0x0b, 0xeb, 0xfe]); // ud2; jmp $
    code.extend_from_slice(&[0; 6]); // the IDT descriptor: limit 0, base 0
    let payload = write_payload(dir.path(), &code);
    let out = run(
        &payload_args(&payload, Mode::Protected32, &VmmArgs::default()),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.stdout, b"crash\n", "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(
        stderr.contains("VM ended: TripleFault { vcpu: 0 } (exit status 3)"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("GuestReset"), "stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("hull-vmm: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN); "))
        .unwrap_or_else(|| panic!("no fault line: {stderr}"));
    for reg in [
        "rsp=", "rflags=", "cr0=", "cr3=", "cr4=", "efer=", "cs=", "cs.base=",
    ] {
        assert!(line.contains(reg), "{reg} missing: {line}");
    }
    // Intel and kvm_pvm keep the crash state; AMD re-initialises the vCPU on shutdown, and
    // the line says so.
    assert!(
        line.contains(&format!("rip={ud2_at:#x} ")) || line.contains("reset state"),
        "rip of the ud2 ({ud2_at:#x}) expected: {line}"
    );
}

/// A Linux guest on a software KVM is refused with one line naming the lab; on a hardware
/// KVM the same (bogus) kernel gets as far as the loader, which rejects it.
#[test]
fn linux_guest_refused_on_software_kvm() {
    let host = HostKvm::detect(&Default::default());
    assert_ne!(host, HostKvm::Absent, "host tests need /dev/kvm");
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("vmlinux");
    std::fs::write(&k, b"\x7fELF").unwrap();
    let out = run(&VmmArgs::new(&k, 1, 128).to_args(), Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let names_lab = stderr.contains("lab/run") && stderr.lines().count() == 1;
    assert_eq!(names_lab, host == HostKvm::Software, "{host:?}: {stderr}");
}
