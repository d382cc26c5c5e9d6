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

/// What privileged containers (and ones with NET_ADMIN) use on a runc node must be in the
/// guest kernel (issue 16): the guest has no module loader, so built in. guest/build already
/// checks the fragment against the final .config; this pins the list itself, so dropping an
/// option from the fragment fails here.
#[test]
fn guest_kernel_has_what_privileged_containers_use() {
    let image = guest_image().expect("guest/build");
    let dir = image.vmlinux.parent().expect("kernel directory");
    let config = std::fs::read_to_string(dir.join("config")).expect("read the kernel's config");
    let missing: Vec<&str> = [
        "BRIDGE",
        "BRIDGE_NETFILTER",
        "VETH",
        "VLAN_8021Q",
        "MACVLAN",
        "IPVLAN",
        "TUN",
        "NETFILTER",
        "NF_CONNTRACK",
        "NF_NAT",
        "NF_TABLES",
        "NF_TABLES_INET",
        "NFT_COMPAT",
        "NFT_NAT",
        "NFT_CT",
        "IP_NF_IPTABLES",
        "IP_NF_NAT",
        "IP6_NF_IPTABLES",
        "NETFILTER_XT_TARGET_REDIRECT",
        "NETFILTER_XT_MATCH_OWNER",
        "IP_SET",
        "BLK_DEV_LOOP",
        "OVERLAY_FS",
        "FUSE_FS",
    ]
    .into_iter()
    .filter(|o| !config.lines().any(|l| l == format!("CONFIG_{o}=y")))
    .collect();
    assert!(
        missing.is_empty(),
        "guest kernel lacks (as built-ins): {missing:?}"
    );
}
