//! The guest image as `guest/build` produces it (no VM needed).

use hull_tests::{bzimage_version, guest_image};

#[test]
fn guest_kernel_is_a_hull_build_within_size_budget() {
    let image = guest_image().expect("guest/build");
    let bz = std::fs::read(&image.bzimage).expect("read bzImage");
    let version = bzimage_version(&bz).expect("bzImage version");
    let release = version.split_whitespace().next().unwrap_or_default();
    assert!(
        release.ends_with("-hull"),
        "kernel release {release:?} (from {version:?})"
    );
    assert!(
        bz.len() <= 6 << 20,
        "bzImage is {} bytes, budget 6 MiB",
        bz.len()
    );
    assert!(
        image.vmlinux.is_file(),
        "vmlinux at {}",
        image.vmlinux.display()
    );
    let initrd = std::fs::read(&image.initrd).expect("read initrd");
    assert_eq!(&initrd[..2], &[0x1f, 0x8b], "initrd is gzip");
}
