//! AttachDisk and DetachDisk against a fake kernel: a sysfs/procfs tree in a temporary
//! directory whose `bind`/`unbind` writes a hook answers the way the driver core does.

use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::testing::{FakeTree, Recorder};
use super::*;

const BASE: u64 = 0xd000_4000;
const SLOT: &str = "virtio-mmio.4";
const VSOCK_BASE: u64 = 0xd000_0000;
const SHORT: Duration = Duration::from_millis(100);

const IOMEM: &str = "\
00100000-0fffffff : System RAM
  01000000-01e01d46 : Kernel code
d0000000-d00001ff : virtio-mmio.0
  d0000000-d00001ff : virtio-mmio.0
d0004000-d00041ff : virtio-mmio.4
fee00000-fee00fff : Local APIC
";

/// A guest with the vsock bound in slot 0 and an empty, unbound slot 4; `/dev` is not a
/// devtmpfs unless `devtmpfs`.
fn guest(devtmpfs: bool) -> FakeTree {
    let tree = FakeTree::new();
    tree.put("proc/iomem", IOMEM);
    tree.put(&format!("sys/{DRIVER_DIR}/bind"), "");
    tree.put(&format!("sys/{DRIVER_DIR}/unbind"), "");
    tree.put(&format!("sys/{DEVICES_DIR}/{SLOT}/uevent"), "");
    plug(&tree.roots.sys, "virtio-mmio.0", 0, 19, None);
    let fstype = if devtmpfs { "devtmpfs" } else { "tmpfs" };
    tree.put(
        "proc/self/mountinfo",
        &format!(
            "21 1 0:20 / / rw - tmpfs tmpfs rw\n22 21 0:5 / {} rw,nosuid - {fstype} {fstype} rw\n",
            tree.roots.dev.display()
        ),
    );
    tree
}

/// A disk's name, its `MAJ:MIN` and its partitions' (name, `MAJ:MIN`).
type DiskSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Writes `path` whole at once, as sysfs shows an attribute: a reader polling from another
/// thread never sees it empty or half written (a plain write raced the agent's wait).
fn put(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-put");
    fs::write(&tmp, content).expect("write");
    fs::rename(&tmp, path).expect("rename");
}

/// What the driver core and virtio-blk do on a bind: the `driver` link, the virtio device
/// with its ID, the disk with `dev` and its partitions.
fn plug(sys: &Path, slot: &str, index: u32, id: u32, disk: Option<DiskSpec<'_>>) {
    let dir = sys.join(DEVICES_DIR).join(slot);
    fs::create_dir_all(&dir).expect("mkdir");
    symlink(
        format!("../../../bus/platform/drivers/{DRIVER}"),
        dir.join("driver"),
    )
    .expect("link");
    let virtio = dir.join(format!("virtio{index}"));
    fs::create_dir_all(&virtio).expect("mkdir");
    put(&virtio.join("device"), &format!("0x{id:04x}\n"));
    if let Some((name, dev, parts)) = disk {
        let d = virtio.join("block").join(name);
        fs::create_dir_all(&d).expect("mkdir");
        put(&d.join("dev"), &format!("{dev}\n"));
        put(&d.join("size"), "2048\n");
        for (p, pdev) in parts {
            fs::create_dir_all(d.join(p)).expect("mkdir");
            put(&d.join(p).join("dev"), &format!("{pdev}\n"));
        }
    }
}

fn unplug(sys: &Path, slot: &str) {
    let dir = sys.join(DEVICES_DIR).join(slot);
    fs::remove_file(dir.join("driver")).expect("unlink");
    for e in fs::read_dir(&dir).expect("ls").filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with("virtio") {
            fs::remove_dir_all(e.path()).expect("rm");
        }
    }
}

fn bind_path(tree: &FakeTree) -> PathBuf {
    tree.roots.sys.join(DRIVER_DIR).join("bind")
}

fn unbind_path(tree: &FakeTree) -> PathBuf {
    tree.roots.sys.join(DRIVER_DIR).join("unbind")
}

/// A writer whose bind of slot 4 plugs a disk vdb (254:16) after `delay`, as a probe on
/// another CPU would; with `devtmpfs`, the node follows (mode 0600, to tell it from the
/// agent's).
fn binding_disk(tree: &FakeTree, delay: Duration, devtmpfs: bool) -> Recorder {
    let (sys, dev) = (tree.roots.sys.clone(), tree.roots.dev.clone());
    Recorder::default().on(
        bind_path(tree),
        Box::new(move |_, name| {
            assert_eq!(name, SLOT);
            let (sys, dev) = (sys.clone(), dev.clone());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                plug(&sys, SLOT, 5, 2, Some(("vdb", "254:16", &[])));
                if devtmpfs {
                    std::thread::sleep(Duration::from_millis(30));
                    mknod(
                        &dev.join("vdb"),
                        SFlag::S_IFBLK,
                        Mode::from_bits_truncate(0o600),
                        makedev(254, 16),
                    )
                    .expect("devtmpfs mknod (needs CAP_MKNOD)");
                }
            });
            Ok(())
        }),
    )
}

fn assert_block_node(path: &Path, major: u64, minor: u64) -> u32 {
    let m = fs::symlink_metadata(path).expect("node");
    assert!(m.file_type().is_block_device(), "{}", path.display());
    assert_eq!(m.rdev(), makedev(major, minor));
    m.permissions().mode() & 0o777
}

#[test]
fn attach_binds_waits_for_the_disk_and_makes_its_node() {
    let tree = guest(false);
    let w = binding_disk(&tree, Duration::from_millis(50), false);
    let disk = attach_disk(&tree.roots, &w, BASE, ATTACH_WAIT).expect("attach");
    assert_eq!(
        disk,
        AttachedDisk {
            node: tree.roots.dev.join("vdb"),
            major: 254,
            minor: 16
        }
    );
    assert_eq!(w.writes(), [(bind_path(&tree), SLOT.to_owned())]);
    assert_block_node(&disk.node, 254, 16);

    // Again: bound already, the same disk, no write.
    let again = Recorder::default();
    assert_eq!(
        attach_disk(&tree.roots, &again, BASE, SHORT).expect("again"),
        disk
    );
    assert!(again.writes().is_empty());

    // A stale node of another device under the name is replaced.
    fs::remove_file(&disk.node).expect("rm");
    fs::write(&disk.node, "not a node").expect("write");
    attach_disk(&tree.roots, &again, BASE, SHORT).expect("replaced");
    assert_block_node(&disk.node, 254, 16);
}

#[test]
fn on_devtmpfs_the_kernels_node_is_waited_for() {
    let tree = guest(true);
    let w = binding_disk(&tree, Duration::from_millis(20), true);
    let disk = attach_disk(&tree.roots, &w, BASE, ATTACH_WAIT).expect("attach");
    assert_eq!(
        assert_block_node(&disk.node, 254, 16),
        0o600,
        "devtmpfs's node, not one the agent made"
    );

    // devtmpfs that never makes it: the agent does, after the grace.
    let tree = guest(true);
    let w = binding_disk(&tree, Duration::ZERO, false);
    let start = Instant::now();
    let disk = attach_disk(&tree.roots, &w, BASE, SHORT).expect("attach");
    assert!(start.elapsed() >= NODE_GRACE, "{:?}", start.elapsed());
    assert_block_node(&disk.node, 254, 16);
}

#[test]
fn bases_that_are_not_virtio_mmio_slots_are_refused() {
    let tree = guest(false);
    let w = Recorder::default();
    let e = attach_disk(&tree.roots, &w, 0xd000_8000, SHORT).expect_err("nothing there");
    assert!(
        matches!(e, DiskError::NoDevice { base: 0xd000_8000 }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "no device at MMIO base 0xd0008000: no range of /proc/iomem starts there"
    );
    let e = detach_disk(&tree.roots, &w, 0xd000_4001).expect_err("inside a slot");
    assert!(matches!(e, DiskError::NoDevice { .. }), "{e:?}");

    for f in [attach, detach] {
        let e = f(&tree, &w, 0xfee0_0000).expect_err("the APIC");
        assert!(matches!(e, DiskError::NotVirtioMmio { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "MMIO base 0xfee00000 is \"Local APIC\", not a virtio-mmio device"
        );
        // The vsock's slot, bound: never bound again, never unbound.
        let e = f(&tree, &w, VSOCK_BASE).expect_err("the vsock");
        assert!(
            matches!(e, DiskError::NotABlockDevice { id: 19, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "virtio-mmio.0 holds a virtio vsock device (ID 19), not a block device"
        );
    }
    assert!(w.writes().is_empty(), "{:?}", w.writes());
}

fn attach(tree: &FakeTree, w: &Recorder, base: u64) -> Result<(), DiskError> {
    attach_disk(&tree.roots, w, base, SHORT).map(drop)
}

fn detach(tree: &FakeTree, w: &Recorder, base: u64) -> Result<(), DiskError> {
    detach_disk(&tree.roots, w, base).map(drop)
}

#[test]
fn hostile_iomem_and_sysfs_are_errors_not_paths() {
    let tree = guest(false);
    let w = Recorder::default();
    // A name that would lead a sysfs path elsewhere is not a virtio-mmio device.
    tree.put(
        "proc/iomem",
        "d0004000-d00041ff : virtio-mmio.4/../../../../../etc\n",
    );
    let e = attach_disk(&tree.roots, &w, BASE, SHORT).expect_err("hostile name");
    assert!(matches!(e, DiskError::NotVirtioMmio { .. }), "{e:?}");
    tree.put(
        "proc/iomem",
        &format!("d0004000-d00041ff : {}\n", "x".repeat(200)),
    );
    let e = attach_disk(&tree.roots, &w, BASE, SHORT).expect_err("long name");
    assert!(e.to_string().len() < 160, "{e}");

    // An iomem past the cap is refused, not half read.
    tree.put(
        "proc/iomem",
        &format!("{IOMEM}{}", "# padding\n".repeat(110_000)),
    );
    let e = attach_disk(&tree.roots, &w, BASE, SHORT).expect_err("too large");
    assert!(matches!(e, DiskError::Read { .. }), "{e:?}");

    // In iomem but not in sysfs.
    tree.put("proc/iomem", "d0009000-d00091ff : virtio-mmio.9\n");
    let e = attach_disk(&tree.roots, &w, 0xd000_9000, SHORT).expect_err("no sysfs dir");
    assert!(matches!(e, DiskError::NotInSysfs { .. }), "{e:?}");

    // A bound slot whose sysfs says nonsense.
    tree.put("proc/iomem", IOMEM);
    plug(
        &tree.roots.sys,
        SLOT,
        5,
        2,
        Some(("vdb", "254:banana", &[])),
    );
    let e = attach_disk(&tree.roots, &w, BASE, SHORT).expect_err("bad dev");
    assert!(matches!(e, DiskError::Malformed { .. }), "{e:?}");
    assert!(
        e.to_string().ends_with("dev: not MAJ:MIN: \"254:banana\""),
        "{e}"
    );
    unplug(&tree.roots.sys, SLOT);
    plug(
        &tree.roots.sys,
        SLOT,
        5,
        2,
        Some(("../../etc", "254:16", &[])),
    );
    let e = attach_disk(&tree.roots, &w, BASE, SHORT).expect_err("no disk name");
    assert!(matches!(e, DiskError::NoDisk { virtio: true, .. }), "{e:?}");
    unplug(&tree.roots.sys, SLOT);
    plug(&tree.roots.sys, SLOT, 5, 2, None);
    fs::write(
        tree.roots
            .sys
            .join(DEVICES_DIR)
            .join(SLOT)
            .join("virtio5/device"),
        "2\n",
    )
    .expect("write");
    let e = attach_disk(&tree.roots, &w, BASE, SHORT).expect_err("bad id");
    assert!(matches!(e, DiskError::Malformed { .. }), "{e:?}");
    assert!(w.writes().is_empty());
}

#[test]
fn bind_failures_map_by_what_the_slot_is_afterwards() {
    // The slot is still empty: the probe read device ID 0.
    let tree = guest(false);
    let w = Recorder::default().failing(bind_path(&tree), libc::ENODEV);
    let e = attach_disk(&tree.roots, &w, BASE, SHORT).expect_err("empty slot");
    assert!(matches!(e, DiskError::Bind { empty: true, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "bind virtio-mmio.4 to virtio-mmio: ENODEV: No such device (no device in the slot yet?)"
    );

    // EBUSY because someone else bound it meanwhile: fine.
    let sys = tree.roots.sys.clone();
    let w = Recorder::default().on(
        bind_path(&tree),
        Box::new(move |_, _| {
            plug(&sys, SLOT, 5, 2, Some(("vdb", "254:16", &[])));
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        }),
    );
    let disk = attach_disk(&tree.roots, &w, BASE, SHORT).expect("bound meanwhile");
    assert_eq!((disk.major, disk.minor), (254, 16));

    // Bound to another driver.
    let tree = guest(false);
    let dir = tree.roots.sys.join(DEVICES_DIR).join(SLOT);
    symlink("../../../bus/platform/drivers/evil", dir.join("driver")).expect("link");
    for f in [attach, detach] {
        let e = f(&tree, &Recorder::default(), BASE).expect_err("other driver");
        assert_eq!(
            e.to_string(),
            "virtio-mmio.4 is bound to driver \"evil\", not virtio-mmio"
        );
    }
}

#[test]
fn a_slot_that_registers_no_disk_in_time_fails() {
    let tree = guest(false);
    let w = Recorder::default();
    let e = {
        let sys = tree.roots.sys.clone();
        let w = w.on(
            bind_path(&tree),
            Box::new(move |_, _| {
                plug(&sys, SLOT, 5, 2, None);
                Ok(())
            }),
        );
        let start = Instant::now();
        let e = attach_disk(&tree.roots, &w, BASE, SHORT).expect_err("no disk");
        assert!(start.elapsed() >= SHORT);
        e
    };
    assert_eq!(
        e.to_string(),
        "virtio-mmio.4 is bound, but its virtio device registered no disk within 100ms"
    );
    // Bind "succeeded" but nothing bound.
    let tree = guest(false);
    let e = attach_disk(&tree.roots, &Recorder::default(), BASE, SHORT).expect_err("nothing");
    assert!(
        matches!(e, DiskError::NoDisk { virtio: false, .. }),
        "{e:?}"
    );
    // Another kind of device put in the slot.
    let sys = tree.roots.sys.clone();
    let w = Recorder::default().on(
        bind_path(&tree),
        Box::new(move |_, _| {
            plug(&sys, SLOT, 5, 1, None);
            Ok(())
        }),
    );
    let e = attach_disk(&tree.roots, &w, BASE, ATTACH_WAIT).expect_err("a NIC");
    assert!(
        matches!(e, DiskError::NotABlockDevice { id: 1, .. }),
        "{e:?}"
    );
}

/// Slot 4 bound with disk vdb (254:16) and its partition vdb1 (254:17); processes in `/proc`
/// with the given mount namespace and mountinfo text.
fn attached_guest(processes: &[(&str, Option<&str>, &str)]) -> FakeTree {
    let tree = guest(false);
    plug(
        &tree.roots.sys,
        SLOT,
        5,
        2,
        Some(("vdb", "254:16", &[("vdb1", "254:17")])),
    );
    for (pid, ns, mountinfo) in processes {
        tree.put(&format!("proc/{pid}/mountinfo"), mountinfo);
        if let Some(ns) = ns {
            fs::create_dir_all(tree.path(&format!("proc/{pid}/ns"))).expect("mkdir");
            symlink(ns, tree.path(&format!("proc/{pid}/ns/mnt"))).expect("link");
        }
    }
    tree
}

const ROOT_NS: &str = "1 0 0:20 / / rw - tmpfs tmpfs rw\n";

/// A writer whose unbind of slot 4 removes its disk, as the driver core does.
fn unbinding(tree: &FakeTree) -> Recorder {
    let sys = tree.roots.sys.clone();
    Recorder::default().on(
        unbind_path(tree),
        Box::new(move |_, name| {
            assert_eq!(name, SLOT);
            unplug(&sys, SLOT);
            Ok(())
        }),
    )
}

#[test]
fn detach_unbinds_an_unmounted_disk_and_is_idempotent() {
    let tree = attached_guest(&[
        ("1", Some("mnt:[1]"), ROOT_NS),
        ("57", Some("mnt:[2]"), ROOT_NS),
    ]);
    let w = unbinding(&tree);
    assert_eq!(
        detach_disk(&tree.roots, &w, BASE).expect("detach"),
        Detached::Unbound(SLOT.into())
    );
    assert_eq!(w.writes(), [(unbind_path(&tree), SLOT.to_owned())]);
    assert_eq!(
        detach_disk(&tree.roots, &w, BASE).expect("again"),
        Detached::NotBound(SLOT.into())
    );
    assert_eq!(w.writes().len(), 1);

    // The unbind fails, but the slot is unbound after all (unbound meanwhile): fine.
    let tree = attached_guest(&[]);
    let sys = tree.roots.sys.clone();
    let w = Recorder::default().on(
        unbind_path(&tree),
        Box::new(move |_, _| {
            unplug(&sys, SLOT);
            Err(io::Error::from_raw_os_error(libc::ENODEV))
        }),
    );
    assert_eq!(
        detach_disk(&tree.roots, &w, BASE).expect("meanwhile"),
        Detached::Unbound(SLOT.into())
    );
    // The unbind fails and the slot stays bound.
    let tree = attached_guest(&[]);
    let w = Recorder::default().failing(unbind_path(&tree), libc::EIO);
    let e = detach_disk(&tree.roots, &w, BASE).expect_err("stays bound");
    assert_eq!(
        e.to_string(),
        "unbind virtio-mmio.4 from virtio-mmio: EIO: I/O error"
    );
}

#[test]
fn a_mounted_disk_or_partition_in_any_namespace_is_not_detached() {
    let in_container = "\
1 0 0:40 / / rw - overlay overlay rw
2 1 254:16 / /data rw,relatime - ext4 /dev/vdb rw
";
    let tree = attached_guest(&[
        ("1", Some("mnt:[1]"), ROOT_NS),
        ("340", Some("mnt:[9]"), in_container),
    ]);
    let w = unbinding(&tree);
    let e = detach_disk(&tree.roots, &w, BASE).expect_err("mounted");
    assert_eq!(
        e.to_string(),
        "/dev/vdb (254:16) is mounted at /data (in the mount namespace of pid 340); unmount it first"
    );
    let partition = "1 0 254:17 / /run/hull/vol\\040x rw - xfs /dev/vdb1 rw\n";
    let tree = attached_guest(&[("12", None, partition)]);
    let e = detach_disk(&tree.roots, &w, BASE).expect_err("partition mounted");
    assert!(
        matches!(e, DiskError::Mounted { dev: (254, 17), .. }),
        "{e:?}"
    );
    assert!(w.writes().is_empty(), "{:?}", w.writes());

    // Another disk's mount, garbage lines, non-pid entries and exited processes do not count.
    let other = "1 0 254:32 / /other rw - ext4 /dev/vdc rw\ngarbage\n254:16 254:16 254:16\n";
    let tree = attached_guest(&[("1", Some("mnt:[1]"), other), ("2", None, "")]);
    tree.put(
        "proc/self/mountinfo",
        "2 1 254:16 / /ignored rw - ext4 /dev/vdb rw\n",
    );
    fs::create_dir_all(tree.path("proc/99")).expect("exited: no mountinfo");
    let w = unbinding(&tree);
    assert_eq!(
        detach_disk(&tree.roots, &w, BASE).expect("detach"),
        Detached::Unbound(SLOT.into())
    );
}

#[test]
fn each_mount_namespace_is_read_once_and_unreadable_ones_refuse() {
    // pid 8 shares pid 7's namespace: its (unreadable) table is not read again.
    let tree = attached_guest(&[("7", Some("mnt:[5]"), ROOT_NS)]);
    fs::create_dir_all(tree.path("proc/8/mountinfo")).expect("unreadable table");
    fs::create_dir_all(tree.path("proc/8/ns")).expect("mkdir");
    symlink("mnt:[5]", tree.path("proc/8/ns/mnt")).expect("link");
    let w = unbinding(&tree);
    // pid 10 names no namespace: read, and its unreadable table refuses the detach.
    fs::create_dir_all(tree.path("proc/10/mountinfo")).expect("unreadable table");
    let e = detach_disk(&tree.roots, &w, BASE).expect_err("pid 10 unreadable");
    assert!(
        matches!(&e, DiskError::Read { path, .. } if path.ends_with("10/mountinfo")),
        "{e:?}"
    );
    assert!(w.writes().is_empty());
    fs::remove_dir(tree.path("proc/10/mountinfo")).expect("rm");
    assert_eq!(
        detach_disk(&tree.roots, &w, BASE).expect("detach"),
        Detached::Unbound(SLOT.into())
    );
}
