//! Lab suite: tests that need a real (nested) KVM host. Each call boots the lab (QEMU TCG,
//! emulated SVM) through `lab/run`; boots are serialised because two lab VMs on a 2-core
//! machine would only slow each other down. Marked `#[ignore = "lab"]`: `scripts/run-tests`
//! runs them; alone, `cargo test -p hull-tests --test lab -- --include-ignored`.

use std::process::{Command, Output};
use std::sync::Mutex;

use hull_tests::{guest_image, repo_root};

static LAB: Mutex<()> = Mutex::new(());

fn lab_run(args: &[&str]) -> Output {
    let _serial = LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let lab = repo_root().join("lab/run");
    Command::new(&lab)
        .args(["--timeout", "600", "--"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", lab.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[ignore = "lab"]
fn lab_host_has_svm_kvm_and_passes_exit_codes_through() {
    let ok = lab_run(&[
        "sh",
        "-c",
        "test -c /dev/kvm && grep -qw svm /proc/cpuinfo && echo LAB-OK",
    ]);
    assert_eq!(ok.status.code(), Some(0), "stderr: {}", text(&ok.stderr));
    assert_eq!(text(&ok.stdout).trim(), "LAB-OK");

    let f = lab_run(&["false"]);
    assert_eq!(f.status.code(), Some(1), "stderr: {}", text(&f.stderr));

    let seven = lab_run(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(
        seven.status.code(),
        Some(7),
        "stderr: {}",
        text(&seven.stderr)
    );
    assert_eq!(text(&seven.stdout), "out\n");
    assert!(
        text(&seven.stderr).contains("err\n"),
        "stderr: {}",
        text(&seven.stderr)
    );
}

#[test]
#[ignore = "lab"]
fn guest_image_boots_to_a_serving_agent_under_qemu_microvm() {
    let image = guest_image().expect("guest/build");
    let smoke = repo_root().join("tests/lab/guest-smoke.sh");
    let out = lab_run(&[
        smoke.to_str().expect("utf-8 path"),
        image.bzimage.to_str().expect("utf-8 path"),
        image.initrd.to_str().expect("utf-8 path"),
        env!("CARGO_BIN_EXE_hull-test-probe"),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("agent-health: SERVING"), "{stdout}");
    assert!(
        stdout.contains("-hull"),
        "agent reports the hull guest kernel: {stdout}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        stdout.contains(&format!(
            "console-first-agent-line: hull-agent {version} starting as PID 1"
        )),
        "{stdout}"
    );
}
