//! The virtio-fs frontend against the recording back end: what is negotiated when the VM is
//! built, what activation hands over, and how failures end the VM without a panic.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vhost::vhost_user::{Frontend, Listener, VhostUserProtocolFeatures};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::frontend::Backend;
use super::test_backend::{serve, Msg, Recorder};
use super::{FsError, VhostUserFs};
use crate::device_manager::bus::{lock, BusDevice};
use crate::devices::virtio::mmio::tests::drive_to_ok;
use crate::devices::virtio::mmio::STATUS_NEEDS_RESET;
use crate::devices::virtio::{IrqTrigger, MmioTransport, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::exit::{ExitReason, VmExit};
use crate::vstate::memory::{self, GuestMemoryMmap};

const BIT30: u64 = 1 << 30;
const RING_BITS: u64 = (1 << 28) | (1 << 29);

/// A back end negotiated over a socket pair with the recorder serving the other end.
fn mock_backend(rec: Recorder) -> Result<(Backend, Arc<Mutex<Recorder>>, UnixStream), FsError> {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = theirs.try_clone().unwrap();
    let rec = Arc::new(Mutex::new(rec));
    serve(theirs, rec.clone());
    let backend = Backend::negotiate(Frontend::from_stream(ours, 2), "mock.sock".into())?;
    Ok((backend, rec, peer))
}

struct Rig {
    dev: Arc<Mutex<VhostUserFs>>,
    rec: Arc<Mutex<Recorder>>,
    exit: Arc<VmExit>,
    /// The back end's end of the socket, to hang up on the frontend.
    peer: UnixStream,
    events: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>,
}

impl Rig {
    fn new(rec: Recorder) -> Result<Self, FsError> {
        let (backend, rec, peer) = mock_backend(rec)?;
        let exit = Arc::new(VmExit::new().unwrap());
        let dev = Arc::new(Mutex::new(VhostUserFs::new(backend, "hull", exit.clone())?));
        let mut events: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
            EventManager::new().unwrap();
        events.add_subscriber(dev.clone());
        Ok(Rig {
            dev,
            rec,
            exit,
            peer,
            events,
        })
    }

    fn transport(&self, mem: &GuestMemoryMmap) -> (MmioTransport, Arc<IrqTrigger>) {
        let irq = Arc::new(IrqTrigger::new(EventFd::new(0).unwrap()));
        let dev: Arc<Mutex<dyn VirtioDevice>> = self.dev.clone();
        (MmioTransport::new(dev, mem.clone(), irq.clone()), irq)
    }

    /// Names of the messages after the first `skip`.
    fn names_after(&self, skip: usize) -> Vec<&'static str> {
        lock(&self.rec).names()[skip..].to_vec()
    }
}

fn read_cfg(d: &VhostUserFs, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0xaa; len];
    d.read_config(off, &mut b);
    b
}

#[test]
fn build_negotiates_owner_features_and_protocol() {
    let rig = Rig::new(Recorder::like_virtiofsd()).unwrap();
    let rec = lock(&rig.rec);
    assert_eq!(
        rec.names(),
        [
            "SET_OWNER",
            "GET_FEATURES",
            "GET_PROTOCOL_FEATURES",
            "SET_PROTOCOL_FEATURES",
            "GET_QUEUE_NUM"
        ]
    );
    // Only MQ and REPLY_ACK of what virtiofsd offers.
    let want = (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK).bits();
    assert!(matches!(rec.log[3], Msg::SetProtocolFeatures(f) if f == want));
    // The guest sees VERSION_1 and the ring features, never the vhost-user bit 30.
    let d = lock(&rig.dev);
    assert_eq!(d.avail_features(), VIRTIO_F_VERSION_1 | RING_BITS);
    assert_eq!(d.device_type(), 26);
    assert_eq!(d.queues().len(), 2);
    assert_eq!(d.queues()[1].max_size(), super::device::QUEUE_SIZE);
}

#[test]
fn build_refuses_back_ends_that_cannot_serve() {
    let mut few = Recorder::like_virtiofsd();
    few.queue_num = 1;
    let e = Rig::new(few).err().unwrap();
    assert!(matches!(e, FsError::TooFewQueues { got: 1, .. }), "{e}");
    let mut old = Recorder::like_virtiofsd();
    old.features = BIT30;
    let e = Rig::new(old).err().unwrap();
    assert!(matches!(e, FsError::NoVersion1 { .. }), "{e}");
}

#[test]
fn connect_by_path_and_clear_error_without_a_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.sock");
    let exit = Arc::new(VmExit::new().unwrap());
    let e = VhostUserFs::connect(&path, "hull", exit.clone()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cannot connect to the virtio-fs back end") && msg.contains("fs.sock"),
        "{msg}"
    );
    let listener = Listener::new(&path, true).unwrap();
    let rec = Arc::new(Mutex::new(Recorder::like_virtiofsd()));
    let r = rec.clone();
    let t = std::thread::spawn(move || {
        let sock = loop {
            if let Some(s) = listener.accept().unwrap() {
                break s;
            }
        };
        serve(sock, r).join().unwrap();
    });
    let dev = VhostUserFs::connect(&path, "hull", exit).unwrap();
    assert_eq!(lock(&rec).names()[0], "SET_OWNER");
    drop(dev);
    t.join().unwrap();
}

#[test]
fn config_space_holds_the_padded_tag_and_one_request_queue() {
    let rig = Rig::new(Recorder::like_virtiofsd()).unwrap();
    let d = lock(&rig.dev);
    let mut tag = b"hull".to_vec();
    tag.resize(36, 0);
    assert_eq!(read_cfg(&d, 0, 36), tag);
    assert_eq!(read_cfg(&d, 36, 4), 1u32.to_le_bytes());
    assert_eq!(read_cfg(&d, 1, 2), b"ul");
    // Past the end, straddling the end, absurd offsets: zeros, no panic.
    assert_eq!(read_cfg(&d, 40, 4), [0; 4]);
    assert_eq!(read_cfg(&d, 38, 4), [0; 4]);
    assert_eq!(read_cfg(&d, u64::MAX, 8), [0; 8]);
    // The config space is read-only.
    drop(d);
    lock(&rig.dev).write_config(0, b"evil");
    assert_eq!(read_cfg(&lock(&rig.dev), 0, 4), b"hull");
}

#[test]
fn tags_must_fit_the_config_field() {
    for (tag, ok) in [
        ("", false),
        (&"t".repeat(36)[..], true),
        (&"t".repeat(37)[..], false),
    ] {
        let (backend, _, _) = mock_backend(Recorder::like_virtiofsd()).unwrap();
        let r = VhostUserFs::new(backend, tag, Arc::new(VmExit::new().unwrap()));
        assert_eq!(r.is_ok(), ok, "{tag:?}");
        if let Ok(d) = r {
            assert_eq!(read_cfg(&d, 0, 36), tag.as_bytes());
        }
    }
}

/// Guest RAM in two regions (below the MMIO gap and above 4 GiB), as `memory::create` makes it
/// for VMs over 3 GiB; only touched pages cost memory.
fn two_region_memory() -> GuestMemoryMmap {
    let mem = memory::create((3 << 30) + (16 << 20)).unwrap();
    assert_eq!(mem.num_regions(), 2);
    mem
}

const HI: u64 = 1 << 32;
/// desc, avail, used, size: hiprio low, request queue in the high region.
const QUEUES: [(u64, u64, u64, u16); 2] = [
    (0x10_0000, 0x11_0000, 0x12_0000, 64),
    (HI + 0x10_0000, HI + 0x20_0000, HI + 0x30_0000, 1024),
];

#[test]
fn activation_hands_memory_and_vrings_to_the_back_end() {
    let mut rig = Rig::new(Recorder::like_virtiofsd()).unwrap();
    let mem = two_region_memory();
    let (mut t, irq) = rig.transport(&mem);
    drive_to_ok(&mut t, &QUEUES);
    assert!(lock(&rig.dev).is_activated());
    // The vCPU thread only queued the work: nothing went to the back end yet.
    assert_eq!(lock(&rig.rec).log.len(), 5);
    rig.events.run_with_timeout(1000).unwrap();
    assert_eq!(rig.exit.reason(), None);

    let per_ring = [
        "SET_VRING_NUM",
        "SET_VRING_ADDR",
        "SET_VRING_BASE",
        "SET_VRING_CALL",
        "SET_VRING_KICK",
        "SET_VRING_ENABLE",
    ];
    let mut want = vec!["SET_FEATURES", "SET_MEM_TABLE"];
    want.extend(per_ring);
    want.extend(per_ring);
    assert_eq!(rig.names_after(5), want);

    let mut rec = lock(&rig.rec);
    let log = &mut rec.log[5..];
    assert!(matches!(log[0], Msg::SetFeatures(f) if f == VIRTIO_F_VERSION_1 | RING_BITS | BIT30));
    let Msg::SetMemTable(regions, files) = &log[1] else {
        panic!("{:?}", log[1]);
    };
    assert_eq!(regions.len(), 2);
    assert_eq!(files.len(), 2);
    let mut offset = 0;
    for ((r, f), g) in regions.iter().zip(files).zip(mem.iter()) {
        assert_eq!(r.gpa, g.start_addr().0);
        assert_eq!(r.size, g.len());
        assert_eq!(r.user_addr, g.as_ptr() as u64);
        assert_eq!(r.offset, offset);
        // The very memfd the guest runs on.
        let ours = g.file_offset().unwrap().file().metadata().unwrap();
        let theirs = f.metadata().unwrap();
        assert_eq!((theirs.dev(), theirs.ino()), (ours.dev(), ours.ino()));
        offset += g.len();
    }
    let hva = |a: u64| mem.get_host_address(GuestAddress(a)).unwrap() as u64;
    let d = lock(&rig.dev);
    for (i, (desc, avail, used, size)) in QUEUES.iter().enumerate() {
        let m = &mut log[2 + 6 * i..8 + 6 * i];
        let q = u32::try_from(i).unwrap();
        assert!(matches!(m[0], Msg::SetVringNum(x, n) if x == q && n == u32::from(*size)));
        assert!(matches!(m[1], Msg::SetVringAddr(x, d, u, a)
            if x == q && d == hva(*desc) && u == hva(*used) && a == hva(*avail)));
        assert!(matches!(m[2], Msg::SetVringBase(x, 0) if x == q));
        assert!(matches!(m[5], Msg::SetVringEnable(x, true) if x == q));
        // The kick fd is the queue's ioeventfd, the call fd the device's irqfd.
        let Msg::SetVringKick(k, Some(kick)) = &mut m[4] else {
            panic!("no kick fd")
        };
        assert_eq!(u32::from(*k), q);
        kick.write_all(&1u64.to_le_bytes()).unwrap();
        assert_eq!(d.queue_events()[i].read().unwrap(), 1);
        let Msg::SetVringCall(c, Some(call)) = &mut m[3] else {
            panic!("no call fd")
        };
        assert_eq!(u32::from(*c), q);
        call.write_all(&1u64.to_le_bytes()).unwrap();
        assert_eq!(irq.eventfd().read().unwrap(), 1);
    }
    assert_eq!(d.metrics.vrings_started.get(), 2);
}

#[test]
fn rings_outside_guest_memory_fail_activation_only() {
    let bad = [
        // Beyond RAM, in the MMIO gap, straddling the end of the low region.
        (0xffff_0000_0000, 0x11_0000, 0x12_0000, 16),
        (0x10_0000, 0xd000_0000, 0x12_0000, 16),
        (0x10_0000, 0x11_0000, 0xc000_0000 - 0x40, 16),
    ];
    for q in bad {
        let mut rig = Rig::new(Recorder::like_virtiofsd()).unwrap();
        let mem = two_region_memory();
        let (mut t, _) = rig.transport(&mem);
        drive_to_ok(&mut t, &[q, QUEUES[1]]);
        assert!(!lock(&rig.dev).is_activated(), "{q:x?}");
        let mut st = [0u8; 4];
        t.read(0x70, &mut st);
        assert_ne!(u32::from_le_bytes(st) & STATUS_NEEDS_RESET, 0);
        rig.events.run_with_timeout(0).unwrap();
        assert_eq!(lock(&rig.rec).log.len(), 5, "nothing sent for {q:x?}");
        assert_eq!(rig.exit.reason(), None);
    }
}

#[test]
fn back_end_without_protocol_features_gets_no_enable() {
    let mut plain = Recorder::like_virtiofsd();
    plain.features = VIRTIO_F_VERSION_1;
    let mut rig = Rig::new(plain).unwrap();
    assert_eq!(lock(&rig.rec).names(), ["SET_OWNER", "GET_FEATURES"]);
    assert_eq!(lock(&rig.dev).avail_features(), VIRTIO_F_VERSION_1);
    let mem = memory::create(16 << 20).unwrap();
    let (mut t, _) = rig.transport(&mem);
    drive_to_ok(&mut t, &QUEUES[..1]);
    rig.events.run_with_timeout(1000).unwrap();
    // Without REPLY_ACK nothing confirms the last message; wait until the queue's last one
    // (the kick) arrived. Waiting for a count instead raced the queue set-up's messages under
    // load (a CI rehearsal saw SET_VRING_BASE last).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lock(&rig.rec).names().last() != Some(&"SET_VRING_KICK")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let rec = lock(&rig.rec);
    assert_eq!(rec.names()[2..4], ["SET_FEATURES", "SET_MEM_TABLE"]);
    assert!(matches!(rec.log[2], Msg::SetFeatures(VIRTIO_F_VERSION_1)));
    assert_eq!(rec.names().last(), Some(&"SET_VRING_KICK"));
    assert!(!rec.names().contains(&"SET_VRING_ENABLE"));
}

#[test]
fn back_end_refusal_ends_the_vm_with_the_reason() {
    let mut refusing = Recorder::like_virtiofsd();
    refusing.refuse_mem_table = true;
    let mut rig = Rig::new(refusing).unwrap();
    let mem = memory::create(16 << 20).unwrap();
    let (mut t, _) = rig.transport(&mem);
    drive_to_ok(&mut t, &QUEUES[..1]);
    rig.events.run_with_timeout(1000).unwrap();
    let Some(ExitReason::Error(e)) = rig.exit.reason() else {
        panic!("{:?}", rig.exit.reason());
    };
    assert!(e.contains("SET_MEM_TABLE"), "{e}");
    assert_eq!(lock(&rig.rec).names().last(), Some(&"SET_MEM_TABLE"));
}

#[test]
fn back_end_hang_up_ends_the_vm() {
    let mut rig = Rig::new(Recorder::like_virtiofsd()).unwrap();
    rig.events.run_with_timeout(0).unwrap();
    assert_eq!(rig.exit.reason(), None, "an idle back end is fine");
    rig.peer.shutdown(std::net::Shutdown::Both).unwrap();
    rig.events.run_with_timeout(1000).unwrap();
    let Some(ExitReason::Error(e)) = rig.exit.reason() else {
        panic!("{:?}", rig.exit.reason());
    };
    assert!(e.contains("mock.sock closed the connection"), "{e}");
    // The dead socket is no longer watched: the loop does not spin on it.
    assert_eq!(rig.events.run_with_timeout(0).unwrap(), 0);
}
