//! Lab test: virtio-fs through a real virtiofsd (`scripts/ensure-virtiofsd`). Inside the
//! nested-KVM lab, a busybox guest on the hull kernel mounts the share and exchanges files with
//! the host both ways; killing virtiofsd must end hull-vmm with an error. Prints virtiofsd's idle
//! memory. See `vmm/tests/lab/fs.sh`; the real guest with a container rootfs on virtio-fs is
//! tested through containerd in `shim/tests/lab_containerd.rs`.
//!
//! Slow (lab boot, then the guest under TCG). Alone:
//! `cargo test -p hull-vmm --test lab_fs -- --nocapture`.

use std::process::Command;

#[test]
fn lab_virtio_fs() {
    let root = hull_tests::repo_root();
    let vmm = env!("CARGO_BIN_EXE_hull-vmm");
    let image = hull_tests::guest_image().expect("guest/build");
    let vfsd = hull_tests::virtiofsd().expect("scripts/ensure-virtiofsd");
    let out_dir = root.join("target/lab-out/vmm-fs");
    let status = Command::new(root.join("lab/run"))
        // A passing run takes ~2 min; bound a stall.
        .args(["--timeout", "600", "--"])
        .arg("bash")
        .arg(root.join("vmm/tests/lab/fs.sh"))
        .arg(vmm)
        .arg(&image.vmlinux)
        .arg(&vfsd)
        .arg(&out_dir)
        .current_dir(&root)
        .status()
        .expect("run lab/run");
    assert!(
        status.success(),
        "lab checks failed ({status}); logs in {}",
        out_dir.display()
    );
}
