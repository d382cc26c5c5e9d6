//! Host test of the API socket: configure, boot, pause, resume, metrics, shutdown through the
//! real binary, with a tiny payload; the socket file is gone afterwards.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hull_contract::vmm_args::VmmArgs;
use support::{require_kvm, wait_until};

/// hull-vmm serving its API on `sock`, started and waited for until it accepts.
fn spawn_api(sock: &Path, stderr: Stdio) -> Child {
    let args = VmmArgs {
        api_sock: Some(sock.to_path_buf()),
        ..VmmArgs::default()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_hull-vmm"))
        .args(args.to_args())
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_until("API socket up", Duration::from_secs(10), || {
        UnixStream::connect(sock).ok()
    });
    child
}

fn request(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    reply(s)
}

/// The status and body of the reply on `s`.
fn reply(mut s: UnixStream) -> (u16, String) {
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn configure_boot_pause_resume_metrics_shutdown() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("p.bin");
    // out 'A' to COM1, then idle (sti; hlt; jmp): halted with interrupts on, the guest may
    // still wake, so the VM runs until shut down.
    std::fs::write(
        &payload,
        [0xba, 0xf8, 0x03, 0xb0, b'A', 0xee, 0xfb, 0xf4, 0xeb, 0xfd],
    )
    .unwrap();
    let sock = dir.path().join("api.sock");
    let console = dir.path().join("console");
    let mut child = spawn_api(&sock, Stdio::piped());
    let (code, body) = request(&sock, "GET", "/vm", "");
    assert_eq!(code, 200);
    assert!(body.contains("not_configured"), "{body}");
    assert_eq!(
        request(&sock, "PUT", "/actions", r#"{"action":"boot"}"#).0,
        409
    );
    assert_eq!(request(&sock, "PUT", "/vm", r#"{"vcpus":0}"#).0, 400);
    assert_eq!(request(&sock, "PUT", "/nope", "").0, 404);
    let cfg = serde_json::json!({
        "raw_payload": payload,
        "console": { "file": console },
        "vcpus": 2,
        "mem_mib": 32,
    });
    let (code, body) = request(&sock, "PUT", "/vm", &cfg.to_string());
    assert_eq!(code, 204, "{body}");
    assert_eq!(
        request(&sock, "PUT", "/actions", r#"{"action":"boot"}"#).0,
        204
    );
    wait_until("guest output", Duration::from_secs(10), || {
        (std::fs::read_to_string(&console).unwrap_or_default() == "A").then_some(())
    });
    assert_eq!(
        request(&sock, "PUT", "/actions", r#"{"action":"pause"}"#).0,
        204
    );
    let (_, body) = request(&sock, "GET", "/vm", "");
    assert!(
        body.contains(r#""state":"paused""#) && body.contains("Paused"),
        "{body}"
    );
    assert_eq!(
        request(&sock, "PUT", "/actions", r#"{"action":"resume"}"#).0,
        204
    );
    let (code, body) = request(&sock, "GET", "/metrics", "");
    assert_eq!(code, 200);
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(m["boot"]["api_ready_us"], 0);
    assert_ne!(m["boot"]["first_kvm_run_us"], 0);
    assert_eq!(m["devices"][0]["type"], 4, "rng attached: {m}");
    // The same report in Prometheus' text format, served under the running VM's filter.
    let (code, text) = request(&sock, "GET", "/metrics/prometheus", "");
    assert_eq!(code, 200);
    for want in [
        "# TYPE hull_vmm_boot_phase_seconds gauge",
        "hull_vmm_boot_phase_seconds{phase=\"first_kvm_run\"} ",
        "# TYPE hull_vmm_rng_invalid_chains_total counter",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    shutdown_and_wait(&sock, &mut child);
    // Left for the directory's owner: once the VM runs hull-vmm unlinks nothing (seccomp).
    assert!(sock.exists(), "API socket left in place");
}

#[test]
fn shutdown_before_boot_and_sigterm_before_boot() {
    let dir = tempfile::tempdir().unwrap();
    for via_signal in [false, true] {
        let sock = dir.path().join("api.sock");
        let mut child = spawn_api(&sock, Stdio::inherit());
        if via_signal {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
        } else {
            assert_eq!(
                request(&sock, "PUT", "/actions", r#"{"action":"shutdown"}"#).0,
                204
            );
        }
        // The second round binds over the socket file the first one left.
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}

/// `shutdown` through the API; hull-vmm must then exit 0 within 10 s.
fn shutdown_and_wait(sock: &Path, child: &mut Child) {
    assert_eq!(
        request(sock, "PUT", "/actions", r#"{"action":"shutdown"}"#).0,
        204
    );
    let status = wait_until("exit after shutdown", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(status.code(), Some(0), "stderr: {err}");
}

/// `request` with `file`'s descriptor passed along (SCM_RIGHTS), as a disk attach needs.
fn request_with_file(sock: &Path, path: &str, body: &str, file: &std::fs::File) -> (u16, String) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let s = UnixStream::connect(sock).unwrap();
    let req = format!(
        "PUT {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let fds = [file.as_raw_fd()];
    let n = sendmsg::<()>(
        s.as_raw_fd(),
        &[std::io::IoSlice::new(req.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(n, req.len());
    reply(s)
}

/// Growing a running VM through the API, under the VMM's run-time seccomp filter: vCPUs
/// granted and taken away, memory requested from the virtio-mem device, a disk image passed
/// as a descriptor into a slot, taken out and put in again.
#[test]
fn a_running_vm_grows_through_the_api() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("p.bin");
    // sti; hlt; jmp: idle with interrupts on.
    std::fs::write(&payload, [0xfb, 0xf4, 0xeb, 0xfd]).unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = spawn_api(&sock, Stdio::piped());
    let cfg = serde_json::json!({
        "raw_payload": payload,
        "console": "off",
        "vcpus": 1,
        "mem_mib": 32,
        "hotplug": { "max_vcpus": 2, "memory_mib": 128, "disk_slots": 2 },
    });
    assert_eq!(request(&sock, "PUT", "/vm", &cfg.to_string()).0, 204);
    assert_eq!(request(&sock, "GET", "/hotplug", "").0, 409, "not booted");
    assert_eq!(
        request(&sock, "PUT", "/actions", r#"{"action":"boot"}"#).0,
        204
    );
    let hotplug = || {
        let (code, body) = request(&sock, "GET", "/hotplug", "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let h = hotplug();
    assert_eq!(
        (h["vcpus"].as_u64(), h["max_vcpus"].as_u64()),
        (Some(1), Some(2)),
        "{h}"
    );
    assert_eq!(h["memory"]["region_bytes"], 128 << 20, "{h}");
    let states = || {
        let v: serde_json::Value =
            serde_json::from_str(&request(&sock, "GET", "/vm", "").1).unwrap();
        v["vcpus"].clone()
    };
    assert_eq!(states(), serde_json::json!(["Running", "Created"]));
    assert_eq!(
        request(&sock, "PUT", "/hotplug/vcpus", r#"{"count":2}"#).0,
        204
    );
    assert_eq!(states(), serde_json::json!(["Running", "Running"]));
    assert_eq!(
        request(&sock, "PUT", "/hotplug/vcpus", r#"{"count":1}"#).0,
        204
    );
    assert_eq!(states(), serde_json::json!(["Running", "Paused"]));
    assert_eq!(
        request(&sock, "PUT", "/hotplug/vcpus", r#"{"count":3}"#).0,
        400
    );
    assert_eq!(
        request(&sock, "PUT", "/hotplug/memory", r#"{"size_mib":64}"#).0,
        204
    );
    assert_eq!(hotplug()["memory"]["requested_bytes"], 64 << 20);
    assert_eq!(
        request(&sock, "PUT", "/hotplug/memory", r#"{"size_mib":256}"#).0,
        400
    );

    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let open = || std::fs::File::open(&image).unwrap();
    let ro = r#"{"read_only":true}"#;
    assert_eq!(
        request(&sock, "PUT", "/hotplug/disks/0", ro).0,
        400,
        "no descriptor"
    );
    let (code, body) = request_with_file(&sock, "/hotplug/disks/0", ro, &open());
    assert_eq!(code, 200, "{body}");
    let base: serde_json::Value = serde_json::from_str(&body).unwrap();
    let h = hotplug();
    assert_eq!(h["disks"][0]["mmio_base"], base["mmio_base"], "{h}");
    assert_eq!(
        (
            h["disks"][0]["attached"].as_bool(),
            h["disks"][1]["attached"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(
        request_with_file(&sock, "/hotplug/disks/0", ro, &open()).0,
        409
    );
    assert_eq!(
        request_with_file(&sock, "/hotplug/disks/2", ro, &open()).0,
        404
    );
    let dir_fd = std::fs::File::open(dir.path()).unwrap();
    assert_eq!(
        request_with_file(&sock, "/hotplug/disks/1", ro, &dir_fd).0,
        400,
        "a directory is no disk image"
    );
    assert_eq!(request(&sock, "DELETE", "/hotplug/disks/0", "").0, 204);
    assert_eq!(request(&sock, "DELETE", "/hotplug/disks/0", "").0, 409);
    assert_eq!(hotplug()["disks"][0]["attached"], false);
    // The slot's kit came back: a second disk goes in.
    assert_eq!(
        request_with_file(&sock, "/hotplug/disks/0", "{}", &open()).0,
        200
    );
    assert_eq!(hotplug()["disks"][0]["attached"], true);

    shutdown_and_wait(&sock, &mut child);
}
