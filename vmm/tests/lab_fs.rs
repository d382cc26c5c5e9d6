//! Lab test: virtio-fs through a real virtiofsd (`scripts/ensure-virtiofsd`). Inside the
//! nested-KVM lab, a busybox guest on the hull kernel mounts the share and exchanges files with
//! the host both ways; killing virtiofsd must end hull-vmm with an error. Prints virtiofsd's idle
//! memory. See `vmm/tests/lab/fs.sh`; the real guest with a container rootfs on virtio-fs is
//! tested through containerd in `shim/tests/lab_containerd.rs`.
//!
//! Slow (lab boot, then the guest under TCG). Alone:
//! `cargo test -p hull-vmm --test lab_fs -- --ignored --nocapture`.

#[test]
#[ignore = "lab"]
fn lab_virtio_fs() {
    let vmm = env!("CARGO_BIN_EXE_hull-vmm");
    let image = hull_tests::guest_image().expect("guest/build");
    let vfsd = hull_tests::virtiofsd().expect("scripts/ensure-virtiofsd");
    let out_dir = hull_tests::lab_out_dir("vmm-fs");
    // A passing run takes ~2 min; bound a stall.
    hull_tests::assert_lab_script(
        600,
        "vmm/tests/lab/fs.sh",
        &[
            vmm.as_ref(),
            image.vmlinux.as_os_str(),
            vfsd.as_os_str(),
            out_dir.as_os_str(),
        ],
        &out_dir,
    );
}
