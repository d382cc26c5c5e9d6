//! Lab tests: hull pods through containerd's CRI plugin, next to runc, on the three containerd
//! lines nodes run (issue 16's matrix). Inside the nested-KVM lab a private containerd with CRI
//! (sandbox image hull-pause, a CNI bridge, runtime handlers `runc` and `hull`, the hull runtime
//! added as `deploy/containerd` tells an operator) runs the same pods for each handler, driven
//! by `hull-cri`. See `tests/cri/lab/cri_vm.sh`.
//!
//! - Debian 12's containerd 1.6: the full suite (pods, exec, network, namespaces, volumes,
//!   stats, resources, OOM, logs, port-forward, host-namespace refusals, sysctls, 20
//!   create/remove cycles, no leftovers).
//! - Debian trixie's 1.7 and sid's 2.x (`scripts/ensure-containerd`, cached; run with Debian
//!   12's runc): the `smoke` suite, which keeps what depends on containerd's version (the
//!   config version and drop-in, the shim bootstrap, the CRI plugin's sandbox spec and its
//!   defaults, e.g. 2.x's net.* sysctls in every sandbox and how it writes a host namespace,
//!   which hull's refusals read) and leaves out what does not.
//!
//! Slow (lab boot, then VM boots under nested KVM). One alone:
//! `cargo test -p hull-cri-tests --test lab_cri -- --ignored --exact NAME --nocapture`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// `scripts/ensure-containerd SUITE`'s bin directory (fetched once, on the host: the lab has
/// no uplink).
fn containerd_of(suite: &str) -> PathBuf {
    let script = hull_tests::repo_root().join("scripts/ensure-containerd");
    let out = Command::new(&script)
        .arg(suite)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/ensure-containerd {suite} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("containerd="))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("scripts/ensure-containerd {suite} printed no containerd=: {stdout}")
        })
}

/// Runs `cri_vm.sh` with `containerd` (None: the system's) and `suite` (full or smoke), its
/// logs in `target/lab-out/<out>`.
/// Fills the cache with Debian's prometheus and promtool on the host (the lab has no network;
/// the full suite's node-metrics check finds them there with the same script).
fn ensure_prometheus() {
    let script = hull_tests::repo_root().join("scripts/ensure-prometheus");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/ensure-prometheus failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_suite(out: &str, containerd: Option<PathBuf>, suite: &str) {
    if suite == "full" {
        ensure_prometheus();
    }
    let pod = hull_tests::pod_stack().expect("build the shim, hull-vmm, guest and virtiofsd");
    // This package's own binary: cargo builds it for the package's integration tests.
    let cri = std::path::Path::new(env!("CARGO_BIN_EXE_hull-cri"));
    let out_dir = hull_tests::lab_out_dir(out);
    let containerd = containerd.unwrap_or_default();
    // Two reruns after a lab defect (exit 125): a 2.x run of the rehearsal of 2026-12-06 met a
    // guest triple fault and then a lab kernel crash, one after the other.
    hull_tests::assert_lab_script_with_reruns(
        1200,
        "tests/cri/lab/cri_vm.sh",
        &[
            pod.bin_dir.as_os_str(),
            cri.as_os_str(),
            pod.image.vmlinux.as_os_str(),
            pod.image.initrd.as_os_str(),
            pod.virtiofsd.as_os_str(),
            out_dir.as_os_str(),
            containerd.as_os_str(),
            OsStr::new(suite),
        ],
        &out_dir,
        2,
    );
}

#[test]
#[ignore = "lab"]
fn cri_runs_pods_in_hull_vms_like_runc() {
    run_suite("cri", None, "full");
}

#[test]
#[ignore = "lab"]
fn cri_on_containerd_1_7_runs_pods_like_runc() {
    run_suite("cri-1.7", Some(containerd_of("trixie")), "smoke");
}

#[test]
#[ignore = "lab"]
fn cri_on_containerd_2_runs_pods_like_runc() {
    run_suite("cri-2", Some(containerd_of("sid")), "smoke");
}
