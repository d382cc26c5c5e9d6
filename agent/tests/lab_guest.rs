//! Lab test: the agent as PID 1 of the real hull guest runs containers. Boots the guest
//! (kernel + initrd from guest/build, hull-agent as /init) with hull-vmm inside the nested-KVM
//! lab and drives CreateSandbox, run (create, start, stdout/stderr, exit status, remove), exec
//! and remove through the hybrid vsock socket with `hullctl`; see `agent/tests/lab/guest_container.sh`.
//!
//! Slow (minutes: lab boot, then the guest under nested KVM), so `#[ignore = "lab"]`:
//! `scripts/run-tests` runs the lab tier. Alone:
//! `cargo test -p hull-agent --test lab_guest -- --include-ignored --nocapture`.

mod common;

#[test]
#[ignore = "lab"]
fn agent_as_pid1_runs_a_container_in_the_guest() {
    let hullctl = common::build_bin("hullctl");
    let vmm = common::build_bin("hull-vmm");
    let image = hull_tests::guest_image().expect("guest/build");
    let out_dir = hull_tests::lab_out_dir("agent-guest");
    hull_tests::assert_lab_script(
        600,
        "agent/tests/lab/guest_container.sh",
        &[
            vmm.as_os_str(),
            hullctl.as_os_str(),
            image.vmlinux.as_os_str(),
            image.initrd.as_os_str(),
            out_dir.as_os_str(),
        ],
        &out_dir,
    );
}
