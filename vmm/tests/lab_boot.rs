//! Lab test: boots the real hull guest (kernel + initrd with hull-agent as PID 1) with
//! `hull-vmm` inside the nested-KVM lab and checks, through `hullctl agent-health`, that the
//! agent answers over hybrid vsock; console capture, boot timer, 1 and 2 vCPUs, bzImage and
//! PVH, guest `reboot -f` and `poweroff -f` (1 and 2 vCPUs) → exit 0, a guest kernel panic →
//! exit 3, SIGTERM → exit 0 with nothing left behind.
//!
//! Slow (minutes); `make test` runs it in its lab tier. Alone:
//! `cargo test -p hull-vmm --test lab_boot -- --ignored --nocapture`.

#[test]
#[ignore = "lab"]
fn lab_boot() {
    let vmm = env!("CARGO_BIN_EXE_hull-vmm");
    let hullctl = hull_tests::build_bin("hullctl").expect("build hullctl");
    // One parser of guest/build's output for every suite: hull-tests' guest_image().
    let image = hull_tests::guest_image().expect("guest/build");
    let out_dir = hull_tests::lab_out_dir("vmm");
    // Boots in a row that must leave nothing behind (~6 s each in the lab): 10, down from 20
    // when the hot-plug checks came, to keep `make test` within its budget (every boot above
    // also checks its leftovers). `HULL_LAB_REPEAT` changes the count.
    let repeat = std::env::var("HULL_LAB_REPEAT").unwrap_or_else(|_| "10".to_owned());
    // A passing run takes ~5 min; a stall should not eat the whole CI budget.
    hull_tests::assert_lab_script(
        600,
        "vmm/tests/lab/boot.sh",
        &[
            vmm.as_ref(),
            hullctl.as_os_str(),
            image.vmlinux.as_os_str(),
            image.bzimage.as_os_str(),
            image.initrd.as_os_str(),
            out_dir.as_os_str(),
            repeat.as_ref(),
        ],
        &out_dir,
    );
}
