//! virtio-net against a real tap: each test runs in a thread that moved into a private network
//! namespace (root and /dev/net/tun, as in CI: `make test` runs as root), where the tap gets
//! 10.99.0.1/24 and the "guest" behind the mock queues is 10.99.0.2. Frames are UDP, so the
//! host side is plain sockets.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::offload::{self, GSO_NONE};
use super::tap::Tap;
use super::*;
use crate::device_manager::bus::{lock, BusDevice};
use crate::devices::virtio::chain::test_util::{desc, NEXT, WRITE};
use crate::devices::virtio::mmio::{MmioTransport, STATUS_ACKNOWLEDGE, STATUS_DRIVER};
use crate::devices::virtio::mmio::{STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use crate::devices::virtio::{IrqTrigger, VirtioDevice, INT_VRING, VIRTIO_F_VERSION_1};
use crate::vstate::memory::{self, GuestMemoryMmap};

const TAP: &str = "hullnet0";
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const F_MAC: u64 = 1 << 5;
const F_MTU: u64 = 1 << 3;

/// Runs `f` in a thread of its own in a fresh network namespace; the namespace (and the tap)
/// goes away with the thread.
fn in_netns(f: impl FnOnce() + Send + 'static) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the virtio-net tests create a tap in a private network namespace and need root \
         (make test runs as root)"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "the virtio-net tests need /dev/net/tun (the tun module)"
    );
    let res = std::thread::spawn(move || {
        // Only this thread changes namespace; commands it spawns inherit it.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(NEWNET)");
        f();
    })
    .join();
    if let Err(panic) = res {
        std::panic::resume_unwind(panic);
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

/// The tap, up, with the host's MAC and address; IPv6 off so the kernel sends nothing of its
/// own (router solicitations, MLD) into the "guest".
fn host_tap() -> Tap {
    let tap = Tap::open_named(TAP).expect("open tap");
    assert_eq!(tap.name(), TAP);
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1");
    ip(&["link", "set", "dev", TAP, "address", "02:00:00:00:00:01"]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", TAP]);
    ip(&["link", "set", "dev", TAP, "up"]);
    tap
}

struct Rig<'a> {
    dev: Net,
    rx: MockSplitQueue<'a, GuestMemoryMmap>,
    tx: MockSplitQueue<'a, GuestMemoryMmap>,
    /// Next free descriptor-table slot per queue (chains never reuse slots within a test).
    rx_slot: u16,
    tx_slot: u16,
}

const QSIZE: u16 = 64;

/// A device on `host_tap()` with mock queues, activated (by the "vCPU"), not yet started.
fn rig(mem: &GuestMemoryMmap) -> Rig<'_> {
    let mut dev = Net::new(host_tap(), GUEST_MAC, 1500).unwrap();
    let rx = MockSplitQueue::create(mem, GuestAddress(0x1_0000), QSIZE);
    let tx = MockSplitQueue::create(mem, GuestAddress(0x4_0000), QSIZE);
    dev.state.queues[RXQ] = rx.create_queue().unwrap();
    dev.state.queues[TXQ] = tx.create_queue().unwrap();
    let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    dev.activate(mem.clone(), irq).unwrap();
    Rig {
        dev,
        rx,
        tx,
        rx_slot: 0,
        tx_slot: 0,
    }
}

/// A started device: what the event loop does on the activation event.
fn started(mem: &GuestMemoryMmap) -> Rig<'_> {
    started_with(mem, 0)
}

/// A started device whose driver accepted `acked` (virtio-net feature bits).
fn started_with(mem: &GuestMemoryMmap, acked: u64) -> Rig<'_> {
    let mut r = rig(mem);
    r.dev.state.acked_features = acked | VIRTIO_F_VERSION_1;
    assert_eq!(r.dev.activate_evt.read().unwrap(), 1);
    r.dev.start();
    assert!(r.dev.started);
    r
}

/// Publishes one chain of `(addr, len, flags)` buffers at `*slot`.
fn post(vq: &MockSplitQueue<'_, GuestMemoryMmap>, slot: &mut u16, bufs: &[(u64, u32, u16)]) {
    let n = u16::try_from(bufs.len()).unwrap();
    let descs: Vec<RawDescriptor> = bufs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, flags))| {
            let i = u16::try_from(i).unwrap();
            if i + 1 < n {
                desc(addr, len, flags | NEXT, *slot + i + 1)
            } else {
                desc(addr, len, flags, 0)
            }
        })
        .collect();
    vq.add_desc_chains(&descs, *slot).unwrap();
    *slot += n;
}

fn used(vq: &MockSplitQueue<'_, GuestMemoryMmap>) -> Vec<(u16, u32)> {
    let n: u16 = vq.used().idx().load();
    (0..n)
        .map(|i| {
            let e = vq.used().ring().ref_at(usize::from(i)).unwrap().load();
            (u16::try_from(e.id()).unwrap(), e.len())
        })
        .collect()
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap()
}

/// An Ethernet frame guest → host carrying UDP 10.99.0.2:4444 → 10.99.0.1:`port`.
fn udp_frame(port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).unwrap();
    let mut f = Vec::new();
    f.extend(HOST_MAC);
    f.extend(GUEST_MAC);
    f.extend([0x08, 0x00]);
    let mut iph = [0u8; 20];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    iph[6] = 0x40; // don't fragment
    iph[8] = 64;
    iph[9] = 17;
    iph[12..16].copy_from_slice(&GUEST_IP.octets());
    iph[16..20].copy_from_slice(&HOST_IP.octets());
    let csum = ip_checksum(&iph);
    iph[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend(iph);
    f.extend(4444u16.to_be_bytes());
    f.extend(port.to_be_bytes());
    f.extend(udp_len.to_be_bytes());
    f.extend([0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend(payload);
    f
}

/// Sends `payload` from the host to the subnet's broadcast address: out through the tap with
/// no ARP needed.
fn host_broadcast(payload: &[u8]) {
    let s = UdpSocket::bind((HOST_IP, 0)).unwrap();
    s.set_broadcast(true).unwrap();
    s.send_to(payload, (Ipv4Addr::new(10, 99, 0, 255), 7777))
        .unwrap();
}

/// Puts a TX chain (12-byte header buffer, then the frame) for `frame`; the header is garbage
/// the device must not pass on (no offload was negotiated).
fn post_tx(mem: &GuestMemoryMmap, r: &mut Rig<'_>, frame: &[u8]) {
    let hdr = 0x10_0000 + u64::from(r.tx_slot) * 0x1_0000;
    let data = hdr + 0x1000;
    mem.write_slice(&[0xff; VNET_HDR_LEN], GuestAddress(hdr))
        .unwrap();
    mem.write_slice(frame, GuestAddress(data)).unwrap();
    let len = u32::try_from(frame.len()).unwrap();
    post(&r.tx, &mut r.tx_slot, &[(hdr, 12, 0), (data, len, 0)]);
}

/// Calls `step` until `done` or two seconds passed.
fn until(mut step: impl FnMut(), mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        step();
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn config_space_and_features() {
    in_netns(|| {
        let mem = memory::create(16 << 20).unwrap();
        let dev = Net::new(host_tap(), GUEST_MAC, 1450).unwrap();
        assert_eq!(dev.device_type(), 1);
        let mut b = [0u8; 6];
        dev.read_config(0, &mut b);
        assert_eq!(b, GUEST_MAC);
        let mut w = [0u8; 2];
        dev.read_config(10, &mut w);
        assert_eq!(u16::from_le_bytes(w), 1450);
        dev.read_config(8, &mut w);
        assert_eq!(u16::from_le_bytes(w), 1, "max_virtqueue_pairs");
        dev.read_config(6, &mut w);
        assert_eq!(w, [0, 0], "status (no STATUS feature)");
        dev.read_config(11, &mut w);
        assert_eq!(w, [0, 0], "reads past the end are zero");
        assert_eq!(dev.avail_features(), offload::OFFERED);
        assert_ne!(offload::OFFERED & F_MAC, 0);
        assert_ne!(offload::OFFERED & F_MTU, 0);

        // Through the transport: a driver taking everything offered gets it and VERSION_1,
        // and DRIVER_OK hands activation to the event loop.
        let dev = Arc::new(Mutex::new(dev));
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let mut t = MmioTransport::new(dev.clone(), mem.clone(), irq.clone());
        let mut reg = [0u8; 4];
        t.read(0x8, &mut reg);
        assert_eq!(u32::from_le_bytes(reg), 1);
        crate::devices::virtio::mmio::tests::drive_to_ok(
            &mut t,
            &[
                (0x1_0000, 0x1_1000, 0x1_2000, 64),
                (0x2_0000, 0x2_1000, 0x2_2000, 64),
            ],
        );
        {
            let d = lock(&dev);
            assert_eq!(d.acked_features(), offload::OFFERED | VIRTIO_F_VERSION_1);
            assert!(d.is_activated());
            assert_eq!(d.activate_evt.read().unwrap(), 1);
            assert!(!d.started, "the vCPU thread never starts the tap");
        }
        // Writes to the config space are ignored (and counted).
        t.write(0x100, &[0xaa; 6]);
        let mut b = [0u8; 6];
        lock(&dev).read_config(0, &mut b);
        assert_eq!(b, GUEST_MAC);
        assert_eq!(lock(&dev).metrics.config_writes_ignored.get(), 1);
    });
    in_netns(|| {
        // A driver acking an offload that was not offered (GUEST_UFO) fails FEATURES_OK.
        let mem = memory::create(16 << 20).unwrap();
        let dev = Arc::new(Mutex::new(Net::new(host_tap(), GUEST_MAC, 1500).unwrap()));
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let mut t = MmioTransport::new(dev, mem, irq);
        let w = |t: &mut MmioTransport, off: u64, v: u32| t.write(off, &v.to_le_bytes());
        w(&mut t, 0x70, STATUS_ACKNOWLEDGE);
        w(&mut t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut t, 0x24, 0);
        w(&mut t, 0x20, (1 << 10) | (1 << 5));
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(t.status() & STATUS_FEATURES_OK, 0);
        assert_eq!(t.status() & STATUS_DRIVER_OK, 0);
    });
}

#[test]
fn tx_frame_reaches_the_host() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = started(&mem);
        let sock = UdpSocket::bind((HOST_IP, 5555)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        post_tx(&mem, &mut r, &udp_frame(5555, b"hello from the guest"));
        r.dev.process_tx();
        let mut b = [0u8; 64];
        let (n, from) = sock.recv_from(&mut b).expect("frame through the tap");
        assert_eq!(&b[..n], b"hello from the guest");
        assert_eq!(from, (GUEST_IP, 4444).into());
        assert_eq!(used(&r.tx), vec![(0, 0)]);
        assert_eq!(r.dev.metrics.tx_packets.get(), 1);
        assert_eq!(
            r.dev.metrics.tx_bytes.get(),
            udp_frame(5555, b"hello from the guest").len() as u64
        );
        assert_eq!(r.dev.metrics.invalid_chains.get(), 0);
    });
}

#[test]
fn rx_frame_reaches_the_guest() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = started(&mem);
        // Header and frame in separate buffers, as Linux posts them in some modes.
        for i in 0..4u64 {
            let base = 0x100_0000 + i * 0x1_0000;
            post(
                &r.rx,
                &mut r.rx_slot,
                &[(base, 12, WRITE), (base + 0x1000, 1600, WRITE)],
            );
        }
        // Garbage where the header goes: the device must write all 12 bytes.
        for i in 0..4u64 {
            mem.write_slice(&[0xee; 12], GuestAddress(0x100_0000 + i * 0x1_0000))
                .unwrap();
        }
        host_broadcast(b"hello from the host");
        assert!(until(|| r.dev.process_rx(), || !used(&r.rx).is_empty()));
        let (head, len) = used(&r.rx)[0];
        assert_eq!(head, 0);
        let base = 0x100_0000;
        let mut hdr = [0u8; 12];
        mem.read_slice(&mut hdr, GuestAddress(base)).unwrap();
        assert_eq!(hdr[..10], [0; 10], "no flags, no GSO");
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1, "num_buffers");
        let frame_len = len as usize - VNET_HDR_LEN;
        assert_eq!(frame_len, 14 + 20 + 8 + 19);
        let mut frame = vec![0u8; frame_len];
        mem.read_slice(&mut frame, GuestAddress(base + 0x1000))
            .unwrap();
        assert_eq!(frame[0..6], [0xff; 6], "broadcast");
        assert_eq!(frame[6..12], HOST_MAC);
        assert_eq!(frame[12..14], [0x08, 0x00]);
        assert_eq!(&frame[42..], b"hello from the host");
        assert_eq!(r.dev.metrics.rx_packets.get(), 1);
        assert_eq!(r.dev.metrics.rx_bytes.get(), frame_len as u64);
        // The tap is drained; the remaining buffers stay with the device.
        r.dev.process_rx();
        assert_eq!(used(&r.rx).len(), 1);
        assert!(r.dev.watch.rx_wanted);
    });
}

#[test]
fn malformed_chains_fail_alone() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = started(&mem);
        let sock = UdpSocket::bind((HOST_IP, 5556)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let frame = udp_frame(5556, b"after the bad ones");
        mem.write_slice(&frame, GuestAddress(0x20_0000)).unwrap();
        let flen = u32::try_from(frame.len()).unwrap();
        let tx_bad: [&[(u64, u32, u16)]; 6] = [
            // A device-writable buffer in a TX chain.
            &[(0x20_0000, flen, WRITE)],
            &[(0x20_0000, flen, 0), (0x30_0000, 16, WRITE)],
            // Shorter than header + Ethernet header.
            &[(0x20_0000, 20, 0)],
            // Outside guest memory; zero length; longer than the largest frame.
            &[(0xffff_0000_0000, flen, 0)],
            &[(0x20_0000, 0, 0)],
            &[(0x20_0000, 0x2_0000, 0)],
        ];
        for c in tx_bad {
            post(&r.tx, &mut r.tx_slot, c);
        }
        post_tx(&mem, &mut r, &frame);
        r.dev.process_tx();
        let mut b = [0u8; 64];
        let (n, _) = sock
            .recv_from(&mut b)
            .expect("the good frame still goes out");
        assert_eq!(&b[..n], b"after the bad ones");
        let u = used(&r.tx);
        assert_eq!(u.len(), 7);
        assert!(u.iter().all(|(_, len)| *len == 0));
        assert_eq!(r.dev.metrics.invalid_chains.get(), 6);
        assert_eq!(r.dev.metrics.tx_packets.get(), 1);

        // RX: a buffer too short for an MTU-sized frame (even split over two descriptors),
        // a device-readable one, one outside memory; then a good one.
        post(&r.rx, &mut r.rx_slot, &[(0x100_0000, 100, WRITE)]);
        post(
            &r.rx,
            &mut r.rx_slot,
            &[(0x101_0000, 12, WRITE), (0x101_1000, 1500, WRITE)],
        );
        post(&r.rx, &mut r.rx_slot, &[(0x102_0000, 2048, 0)]);
        post(&r.rx, &mut r.rx_slot, &[(0xffff_0000_0000, 2048, WRITE)]);
        post(&r.rx, &mut r.rx_slot, &[(0x104_0000, 1530, WRITE)]);
        host_broadcast(b"to the good buffer");
        assert!(until(|| r.dev.process_rx(), || used(&r.rx).len() == 5));
        let u = used(&r.rx);
        assert_eq!(&u[..4], &[(0, 0), (1, 0), (3, 0), (4, 0)]);
        assert_eq!(u[4].0, 5);
        assert_eq!(u[4].1 as usize, 12 + 14 + 20 + 8 + 18);
        assert_eq!(r.dev.metrics.invalid_chains.get(), 10);
        assert_eq!(r.dev.metrics.rx_packets.get(), 1);
        assert!(!r.dev.watch.broken);
    });
}

#[test]
fn rx_unwatches_the_tap_without_buffers_and_resumes_on_notify() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let r = rig(&mem);
        let (rx, mut rx_slot) = (r.rx, r.rx_slot);
        let dev = Arc::new(Mutex::new(r.dev));
        let mut em = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
        em.add_subscriber(dev.clone());
        // Activation: the loop starts the device and watches the tap for input.
        em.run_with_timeout(100).unwrap();
        assert!(lock(&dev).started);
        assert!(lock(&dev).watching_rx());

        // A frame arrives while the guest has no RX buffers: the device stops watching.
        host_broadcast(b"waits in the tap");
        assert!(em.run_with_timeout(1000).unwrap() > 0);
        assert!(!lock(&dev).watching_rx());
        assert_eq!(lock(&dev).metrics.rx_no_buffer.get(), 1);
        // The frame stays queued in the tap and the loop sleeps instead of spinning on it.
        assert_eq!(em.run_with_timeout(200).unwrap(), 0);
        assert_eq!(lock(&dev).metrics.rx_no_buffer.get(), 1);

        // The guest posts a buffer and notifies: watched again, the frame lands.
        post(&rx, &mut rx_slot, &[(0x100_0000, 2048, WRITE)]);
        lock(&dev).state.queue_evts[RXQ].write(1).unwrap();
        assert!(until(
            || {
                em.run_with_timeout(100).unwrap();
            },
            || !used(&rx).is_empty()
        ));
        let (_, len) = used(&rx)[0];
        assert_eq!(len as usize, 12 + 14 + 20 + 8 + 16);
        let mut hdr = [0u8; 12];
        mem.read_slice(&mut hdr, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1);
        // That was the only buffer: the next pop found none and the tap is unwatched again.
        assert!(!lock(&dev).watching_rx());
        assert_eq!(lock(&dev).metrics.rx_no_buffer.get(), 2);
    });
}

#[test]
fn tap_must_carry_vnet_headers() {
    in_netns(|| {
        // A tap opened without IFF_VNET_HDR, handed over by fd: refused.
        use std::os::fd::IntoRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap();
        let fd = f.into_raw_fd();
        // Not attached to any interface yet: TUNGETIFF fails.
        assert!(matches!(Tap::from_fd(fd), Err(TapError::Ioctl { .. })));
        assert!(matches!(Tap::from_fd(1), Err(TapError::BadFd(1))));
        assert!(matches!(Tap::open_named(""), Err(TapError::BadName(_))));
        assert!(matches!(Tap::open_named("a/b"), Err(TapError::BadName(_))));
    });
}

#[test]
fn deleted_tap_stops_the_device_not_the_vm() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = started(&mem);
        ip(&["link", "del", TAP]);
        post_tx(&mem, &mut r, &udp_frame(5557, b"into the void"));
        r.dev.process_tx();
        assert!(r.dev.watch.broken);
        assert_eq!(r.dev.metrics.tap_errors.get(), 1);
        assert_eq!(r.dev.watch.wanted(), vmm_sys_util::epoll::EventSet::empty());
        // Nothing more is served (no panic, no spin).
        r.dev.process_tx();
        r.dev.process_rx();
        assert_eq!(r.dev.metrics.tap_errors.get(), 1);
    });
}

/// The `used_event` field of a mock queue (after the avail ring): with event indices, the
/// driver's "interrupt me once the used index passes this".
fn set_used_event(mem: &GuestMemoryMmap, vq: &MockSplitQueue<'_, GuestMemoryMmap>, v: u16) {
    let at = vq.avail_addr().0 + 4 + 2 * u64::from(QSIZE);
    mem.write_obj(v, GuestAddress(at)).unwrap();
}

#[test]
fn offloads_pass_a_partial_checksum_and_merge_rx_buffers() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = started_with(&mem, offload::OFFERED);
        assert!(r.dev.neg.mrg_rxbuf && r.dev.neg.tso4 && r.dev.neg.guest_tso6);

        // TX with NEEDS_CSUM: the UDP checksum is left to the host (csum_start 34, offset 6),
        // the header goes to the tap as the guest wrote it, the frame arrives.
        let sock = UdpSocket::bind((HOST_IP, 5557)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let frame = udp_frame(5557, b"checksum by the host");
        let hdr_at = 0x10_0000;
        let mut hdr = [0u8; 12];
        hdr[0] = 1; // NEEDS_CSUM
        hdr[1] = GSO_NONE;
        hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
        hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(hdr_at)).unwrap();
        mem.write_slice(&frame, GuestAddress(hdr_at + 0x1000))
            .unwrap();
        let flen = u32::try_from(frame.len()).unwrap();
        post(
            &r.tx,
            &mut r.tx_slot,
            &[(hdr_at, 12, 0), (hdr_at + 0x1000, flen, 0)],
        );
        r.dev.process_tx();
        let mut b = [0u8; 64];
        let (n, _) = sock
            .recv_from(&mut b)
            .expect("frame with a partial checksum");
        assert_eq!(&b[..n], b"checksum by the host");

        // RX with everything accepted: the device gathers room for a 64 KiB segment (33 of
        // these 2 KiB buffers) before it reads; a 1454-byte frame fills one, numbered 1 in
        // its header; the others wait for the next frames.
        for i in 0..60u64 {
            post(
                &r.rx,
                &mut r.rx_slot,
                &[(0x100_0000 + i * 0x1000, 2048, WRITE)],
            );
        }
        let payload = vec![0x5a; 1400];
        let s = UdpSocket::bind((HOST_IP, 0)).unwrap();
        s.set_broadcast(true).unwrap();
        s.send_to(&payload, (Ipv4Addr::new(10, 99, 0, 255), 7777))
            .unwrap();
        assert!(until(|| r.dev.process_rx(), || !used(&r.rx).is_empty()));
        let u = used(&r.rx);
        assert_eq!(u, vec![(0, 12 + 14 + 20 + 8 + 1400)]);
        let mut h = [0u8; 12];
        mem.read_slice(&mut h, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(usize::from(u16::from_le_bytes([h[10], h[11]])), u.len());
        // The rest of the buffers wait for the next frames.
        assert_eq!(r.dev.rx_pending.len(), 59);
    });
}

#[test]
fn mergeable_rx_spreads_a_frame_over_small_buffers() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        // Mergeable buffers without TSO: room for one MTU-sized frame is gathered.
        let acked = 1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
        let mut r = started_with(&mem, acked);
        for i in 0..8u64 {
            post(
                &r.rx,
                &mut r.rx_slot,
                &[(0x100_0000 + i * 0x1000, 256, WRITE)],
            );
        }
        let s = UdpSocket::bind((HOST_IP, 0)).unwrap();
        s.set_broadcast(true).unwrap();
        s.send_to(&[7u8; 1000], (Ipv4Addr::new(10, 99, 0, 255), 7777))
            .unwrap();
        assert!(until(|| r.dev.process_rx(), || !used(&r.rx).is_empty()));
        let u = used(&r.rx);
        let frame: usize = 12 + 14 + 20 + 8 + 1000;
        assert_eq!(u.len(), frame.div_ceil(256));
        assert!(u[..u.len() - 1].iter().all(|(_, l)| *l == 256));
        assert_eq!(u.iter().map(|(_, l)| *l as usize).sum::<usize>(), frame);
        let mut h = [0u8; 12];
        mem.read_slice(&mut h, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(usize::from(u16::from_le_bytes([h[10], h[11]])), u.len());
        assert_eq!(h[0], 0, "no GUEST_CSUM: no flags");
        // 8 × 256 bytes cannot hold another MTU-sized frame (1530): the device waits for
        // more buffers instead of cutting one.
        s.send_to(&[8u8; 100], (Ipv4Addr::new(10, 99, 0, 255), 7777))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        r.dev.process_rx();
        assert_eq!(used(&r.rx).len(), u.len());
        assert!(!r.dev.watch.rx_wanted);
    });
}

#[test]
fn event_indices_suppress_interrupts_the_driver_did_not_ask_for() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let acked = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
        let mut r = started_with(&mem, acked);
        let irq = r.dev.state.active.as_ref().unwrap().irq.clone();
        let sock = UdpSocket::bind((HOST_IP, 5558)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // The driver wants an interrupt only after the 10th used TX buffer.
        set_used_event(&mem, &r.tx, 9);
        post_tx(&mem, &mut r, &udp_frame(5558, b"one"));
        r.dev.process_tx();
        sock.recv_from(&mut [0u8; 16]).expect("sent");
        assert_eq!(irq.status(), 0, "no interrupt before used_event");
        // Now after the next one.
        set_used_event(&mem, &r.tx, 1);
        post_tx(&mem, &mut r, &udp_frame(5558, b"two"));
        r.dev.process_tx();
        sock.recv_from(&mut [0u8; 16]).expect("sent");
        assert_eq!(irq.status() & INT_VRING, INT_VRING);
        // Kicks: after draining, the device asked for the next one at its position.
        let avail_event_at = r.tx.used_addr().0 + 4 + 8 * u64::from(QSIZE);
        let avail_event: u16 = mem.read_obj(GuestAddress(avail_event_at)).unwrap();
        assert_eq!(avail_event, 2);
    });
}

#[test]
fn an_avail_index_too_far_ahead_does_not_hang_the_device() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let r = started_with(&mem, offload::OFFERED);
        // More than a queue's worth ahead: virtio-queue refuses to iterate such a ring, while
        // "are there more?" keeps answering yes. The device must return, not spin.
        r.tx.avail().idx().store(1000);
        r.rx.avail().idx().store(1000);
        let mut dev = r.dev;
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            dev.process_tx();
            dev.process_rx();
            let _ = done.send(());
        });
        wait.recv_timeout(Duration::from_secs(5))
            .expect("process_tx and process_rx return on a broken ring");
    });
}

#[test]
fn rx_interrupts_follow_the_used_event_and_pending_chains_are_bounded() {
    in_netns(|| {
        let mem = memory::create(32 << 20).unwrap();
        let acked = (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
            | (1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF);
        let mut r = started_with(&mem, acked);
        let irq = r.dev.state.active.as_ref().unwrap().irq.clone();
        for i in 0..4u64 {
            post(
                &r.rx,
                &mut r.rx_slot,
                &[(0x100_0000 + i * 0x1000, 2048, WRITE)],
            );
        }
        // The driver wants an interrupt only after its 5th used buffer: one frame, none.
        set_used_event(&mem, &r.rx, 4);
        host_broadcast(b"quiet");
        assert!(until(|| r.dev.process_rx(), || used(&r.rx).len() == 1));
        assert_eq!(irq.status(), 0);
        // After the next one.
        set_used_event(&mem, &r.rx, 1);
        host_broadcast(b"loud");
        assert!(until(|| r.dev.process_rx(), || used(&r.rx).len() == 2));
        assert_eq!(irq.status() & INT_VRING, INT_VRING);

        // A guest that keeps moving its avail index a queue ahead (reusing heads) cannot make
        // the device hold more than a queue's worth of chains.
        let n = r.dev.rx_pending.len();
        assert_eq!(n, 2);
        for _ in 0..4 {
            let idx: u16 = r.rx.avail().idx().load();
            r.rx.avail().idx().store(idx.wrapping_add(QSIZE));
            r.dev.process_rx();
            assert!(r.dev.rx_pending.len() <= usize::from(QSIZE));
        }
    });
}

/// A rate-limited NIC, driven as the event loop drives it with the limiters' clock moved to
/// each timer expiry ([`crate::devices::rate_limiter::test_clock`]): every frame arrives, at
/// the configured rate.
mod limits {
    use super::*;
    use crate::config::LimitConfig;
    use virtio_queue::QueueT;
    use vmm_sys_util::epoll::EventSet;

    use crate::devices::rate_limiter::test_clock;

    #[test]
    fn tx_is_held_to_its_byte_rate_and_loses_no_frame() {
        in_netns(|| {
            const N: usize = 24;
            const PAYLOAD: usize = 1000;
            let (rate, burst) = (50_000, 2000);
            let mem = memory::create(64 << 20).unwrap();
            let mut r = started(&mem);
            r.dev.set_limits(
                LimitConfig::default(),
                LimitConfig::bytes_only(rate, burst, 0),
            );
            let sock = UdpSocket::bind((HOST_IP, 5556)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            for i in 0..N {
                post_tx(
                    &mem,
                    &mut r,
                    &udp_frame(5556, &[u8::try_from(i).unwrap(); PAYLOAD]),
                );
            }
            let t0 = test_clock::elapsed();
            let mut sent_at = Vec::new();
            loop {
                r.dev.process_tx();
                while sent_at.len() < used(&r.tx).len() {
                    sent_at.push(test_clock::elapsed() - t0);
                }
                if !r.dev.tx_limit.throttled() {
                    break;
                }
                // Throttled: the device took no chain it did not send.
                assert_eq!(r.dev.state.queues[TXQ].next_avail() as usize, sent_at.len());
                r.dev.tx_limit.fire_now();
            }
            assert_eq!(sent_at.len(), N);
            let mut b = [0u8; 2048];
            for i in 0..N {
                let (n, _) = sock
                    .recv_from(&mut b)
                    .expect("every frame reaches the host");
                assert_eq!(n, PAYLOAD);
                assert_eq!(b[0], u8::try_from(i).unwrap(), "in order");
            }
            let chain = (VNET_HDR_LEN + 14 + 20 + 8 + PAYLOAD) as u64;
            let last = sent_at[N - 1].as_secs_f64();
            let measured = (N as u64 * chain - burst) as f64 / last;
            let err = (measured - rate as f64).abs() / rate as f64;
            assert!(
                err < 0.05,
                "{measured:.0} B/s against {rate} over {last:.3} s"
            );
            assert!(r.dev.metrics.tx_throttled.get() > 0);
            assert_eq!(r.dev.metrics.tx_packets.get(), N as u64);
        });
    }

    #[test]
    fn rx_is_held_to_its_frame_rate_and_the_tap_keeps_what_waits() {
        in_netns(|| {
            const N: usize = 24;
            let mem = memory::create(64 << 20).unwrap();
            let mut r = started(&mem);
            r.dev
                .set_limits(LimitConfig::ops_only(10, 1, 0), LimitConfig::default());
            for i in 0..32u64 {
                post(
                    &r.rx,
                    &mut r.rx_slot,
                    &[(0x100_0000 + i * 0x1_0000, 2048, WRITE)],
                );
            }
            for i in 0..N {
                host_broadcast(format!("frame {i:02}").as_bytes());
            }
            let t0 = test_clock::elapsed();
            let mut got_at: Vec<Duration> = Vec::new();
            // The frames are in the tap already (host_broadcast's sends have returned).
            for _ in 0..10 * N {
                if r.dev.rx_limit.throttled() {
                    // While throttled the tap is not watched: frames wait in it.
                    assert!(!r.dev.watch.wanted().contains(EventSet::IN));
                    r.dev.rx_limit.fire_now();
                    r.dev.rx_unthrottled();
                } else {
                    r.dev.process_rx();
                }
                while got_at.len() < used(&r.rx).len() {
                    got_at.push(test_clock::elapsed() - t0);
                }
                if got_at.len() == N {
                    break;
                }
            }
            assert_eq!(got_at.len(), N, "every frame delivered");
            for (i, &(head, _)) in used(&r.rx).iter().enumerate() {
                let mut text = [0u8; 8];
                let at = 0x100_0000 + u64::from(head) * 0x1_0000 + 12 + 42;
                mem.read_slice(&mut text, GuestAddress(at)).unwrap();
                assert_eq!(
                    &text,
                    format!("frame {i:02}").as_bytes(),
                    "in order, none lost"
                );
            }
            // One at once, then one every 100 ms.
            let last = got_at[N - 1].as_secs_f64();
            let measured = (N - 1) as f64 / last;
            assert!(
                (measured - 10.0).abs() < 0.5,
                "{measured:.2} frames/s over {last:.3} s"
            );
            assert!(r.dev.metrics.rx_throttled.get() > 0);
            assert_eq!(r.dev.metrics.rx_dropped.get(), 0);
        });
    }
}
