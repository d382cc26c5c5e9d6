//! Lab test: what privileged containers and setuid binaries get in a hull guest, next to runc,
//! through a real containerd: bridges, veth, VLAN, macvlan, ipvlan, tun/tap, iptables-nft,
//! iptables-legacy and nft in a privileged container and in one with only NET_ADMIN added;
//! a setuid-root, a setgid and a file-capability binary run as uid 1000 gain euid 0, the
//! group and the capability with no_new_privs off, and nothing with it on. See
//! `agent/tests/lab/privileged.sh`.
//!
//! Slow (a lab boot, then eight `ctr run`s, four of them hull VMs), so `#[ignore = "lab"]`.
//! Alone: `cargo test -p hull-agent --test lab_privileged -- --ignored --nocapture`.

use std::process::Command;

/// Host packages whose binaries the script copies into its test image (the lab has no
/// network, and it sees the host's root): iproute2's `ip`, iptables, nftables' `nft`,
/// libcap2-bin's `getcap`/`setcap`, busybox-static, and a static libc for the helper.
const IMAGE_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "libcap2-bin",
    "busybox-static",
    "gcc",
    "libc6-dev",
];

#[test]
#[ignore = "lab"]
fn privileged_containers_and_setuid_binaries_work_as_on_runc() {
    let root = hull_tests::repo_root();
    let status = Command::new(root.join("scripts/ensure-packages"))
        .args(IMAGE_PACKAGES)
        .status()
        .expect("run scripts/ensure-packages");
    assert!(
        status.success(),
        "scripts/ensure-packages {IMAGE_PACKAGES:?}: {status}"
    );
    hull_tests::assert_pod_lab_script(1200, "agent/tests/lab/privileged.sh", "agent-privileged");
}
