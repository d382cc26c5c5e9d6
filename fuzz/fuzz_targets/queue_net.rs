//! virtio-net's queue processing: tx chains the fuzzer wrote go out to a fake tap (one end of
//! a `SOCK_SEQPACKET` pair: one record per frame, header included, as a tap carries them),
//! frames the fuzzer writes into the other end come in through rx chains it also wrote, with
//! any set of the offered features accepted. The device runs on an `event-manager` loop as
//! in hull-vmm (activation, queue kicks, the tap's readiness). The host end may stop reading
//! (a full tap: TX waits for it to be writable) or hang up (a deleted interface: the device
//! stops).
//!
//! What the device promises, checked after every step: every chain it takes is given back or
//! (rx) waits in its pending list, at most a queue's worth; a frame reaches the tap only from
//! a chain of header + Ethernet header up to `MAX_FRAME` bytes, with a header cut to what the
//! driver accepted; the rx lengths it reports add up to the frames it counted, and never to
//! more than the tap delivered.
#![no_main]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use arbitrary::Arbitrary;
use hull_fuzz::guest::{self, Addr, Desc, Len, Ring};
use hull_vmm::devices::virtio::{VirtioDevice, VIRTIO_F_VERSION_1};
use hull_vmm::fuzzing::{net_on_socket, Net, ETH_HLEN, MAX_FRAME, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

const RXQ: usize = 0;
const TXQ: usize = 1;
/// Feature bits (virtio spec 5.1.3) the header checks depend on.
const F_CSUM: u64 = 1 << 0;
const F_HOST_TSO4: u64 = 1 << 11;
const F_HOST_TSO6: u64 = 1 << 12;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;
/// Where the mock queues' used rings are (hull_fuzz::guest: queue `i` at `i * 0x1000`, its
/// used ring 0x800 in), and the end of the two queues' pages.
const USED: [u64; 2] = [0x800, 0x1800];
const RINGS_END: u64 = 0x2000;
/// The device end's send buffer: small, so that a host end that does not read fills it
/// after a few frames (the kernel doubles it).
const SNDBUF: libc::c_int = 16 * 1024;

#[derive(Arbitrary, Debug)]
enum Step {
    /// The driver posts to the tx queue or the rx queue, then notifies it.
    Tx(Ring),
    Rx(Ring),
    /// The driver posts `n` well-formed rx buffers (one writable descriptor each, `len`
    /// bytes), as Linux does, then notifies the queue.
    RxBuffers {
        n: u8,
        len: u16,
    },
    /// The driver posts `n` well-formed frames (header `hdr`, `len` bytes in all), then
    /// notifies the tx queue.
    TxFrames {
        n: u8,
        len: u16,
        hdr: [u8; VNET_HDR_LEN],
    },
    /// The tap has a frame for the guest: this header, then `len` bytes of `fill`.
    Frame {
        hdr: [u8; VNET_HDR_LEN],
        len: FrameLen,
        fill: u8,
    },
    /// The host end takes every frame the device sent.
    HostRead,
    /// The event loop runs once more.
    Events,
    /// The interface goes away (once): the host end closes.
    HangUp,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FrameLen {
    /// Shorter than the MTU-sized buffers Linux posts.
    Small(u8),
    /// Up to 64 KiB and a little over `MAX_FRAME`.
    Any(u16),
}

impl FrameLen {
    fn resolve(self) -> usize {
        match self {
            FrameLen::Small(n) => usize::from(n),
            FrameLen::Any(n) => usize::from(n) + usize::from(n % 128),
        }
    }
}

/// The configured MTU: mostly the smallest (so that the fuzzer's buffers hold a frame), or
/// anything from 68 to 9000.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Mtu {
    Min,
    Default,
    Any(u16),
}

impl Mtu {
    fn resolve(self) -> u16 {
        match self {
            Mtu::Min => 68,
            Mtu::Default => 1500,
            Mtu::Any(n) => 68 + n % (9000 - 68 + 1),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Features the driver accepts, of those offered (VERSION_1 always).
    acked: u64,
    mtu: Mtu,
    steps: Vec<Step>,
}

/// The fuzzer's view of the device and the tap's other end.
struct World {
    host: Option<OwnedFd>,
    acked: u64,
    /// Whether every rx descriptor so far lies above the rings and is not indirect, and the
    /// device never used more than a ring's worth between two looks: only then can the used
    /// ring be read back (the device writes frames into rx buffers).
    rx_clean: bool,
    rx_bad: bool,
    tx_bad: bool,
    /// Used rx entries looked at so far, and the bytes they claim.
    rx_used_seen: u16,
    rx_used_bytes: u64,
    /// Bytes of the frames the tap delivered (at least a header long).
    delivered: u64,
    /// Frames the host end got from the device.
    tx_frames: u64,
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds: [libc::c_int; 2] = [0; 2];
    // SAFETY: socketpair writes two fds into `fds`, which outlives the call.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(ret, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created by socketpair and are owned by nothing else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: SO_SNDBUF reads one int from `SNDBUF`, which outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            pair.0.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_ref(&SNDBUF).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("small"),
        )
    };
    assert_eq!(ret, 0, "SO_SNDBUF: {}", std::io::Error::last_os_error());
    pair
}

impl World {
    /// The tap has a frame: `hdr`, then the body.
    fn frame(&mut self, hdr: &[u8; VNET_HDR_LEN], len: usize, fill: u8) {
        let Some(host) = &self.host else {
            return;
        };
        let mut buf = hdr.to_vec();
        buf.resize(VNET_HDR_LEN + len, fill);
        // SAFETY: send reads `buf.len()` bytes of `buf`, which outlives the call.
        let n = unsafe {
            libc::send(
                host.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if let Ok(n) = usize::try_from(n) {
            assert_eq!(n, buf.len(), "a record goes whole or not at all");
            if n >= VNET_HDR_LEN {
                self.delivered += n as u64;
            }
        }
    }

    /// The host end reads every frame the device sent and checks each.
    fn host_read(&mut self) {
        let Some(host) = &self.host else {
            return;
        };
        let mut buf = vec![0u8; MAX_FRAME + 4096];
        loop {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which outlives the call.
            let n = unsafe {
                libc::recv(
                    host.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                break;
            };
            if n == 0 {
                break;
            }
            self.tx_frames += 1;
            check_tx_frame(self.acked, &buf[..n.min(buf.len())], n);
        }
    }
}

/// One frame the device handed to the tap (`n` bytes, `frame` its start).
fn check_tx_frame(acked: u64, frame: &[u8], n: usize) {
    assert!(
        n >= VNET_HDR_LEN + ETH_HLEN,
        "a {n}-byte frame reached the tap"
    );
    assert!(n <= MAX_FRAME, "a {n}-byte frame reached the tap");
    let hdr = &frame[..VNET_HDR_LEN];
    assert_eq!(hdr[10..12], [0, 0], "num_buffers reached the tap: {hdr:?}");
    if acked & F_CSUM == 0 {
        assert_eq!(hdr[..10], [0; 10], "offload fields without CSUM: {hdr:?}");
        return;
    }
    match hdr[1] & !GSO_ECN {
        GSO_NONE => assert_eq!(hdr[4..6], [0, 0], "gso_size without GSO: {hdr:?}"),
        GSO_TCPV4 => assert!(acked & F_HOST_TSO4 != 0, "TSO4 not accepted: {hdr:?}"),
        GSO_TCPV6 => assert!(acked & F_HOST_TSO6 != 0, "TSO6 not accepted: {hdr:?}"),
        other => panic!("gso type {other} reached the tap: {hdr:?}"),
    }
}

/// Whether `ring`'s descriptors stay clear of the rings (and of indirect tables, whose
/// entries the fuzzer's data writes).
fn clear_of_rings(ring: &Ring) -> bool {
    ring.descs.iter().all(|d| {
        let addr = d.addr.resolve();
        d.flags & 0x4 == 0 && addr >= RINGS_END && addr.checked_add(0x1_0000_0000).is_some()
    })
}

/// `n` (1 to a queue's worth) one-descriptor chains of `len` bytes, each in a 64 KiB area of
/// its own above the rings, `data` written at the start of each.
fn driver_ring(n: u8, len: u16, writable: bool, data: &[u8]) -> Ring {
    let n = u16::from(n) % guest::QUEUE_SIZE + 1;
    let area = |i: u16| Addr::Near(0x1_0000 * (u32::from(i) + 1));
    Ring {
        descs: (0..n)
            .map(|i| Desc {
                addr: area(i),
                len: Len::Medium(len),
                flags: if writable { 2 } else { 0 },
                next: 0,
            })
            .collect(),
        heads: (0..n).collect(),
        bogus_avail_idx: None,
        data: if data.is_empty() {
            Vec::new()
        } else {
            (0..n).map(|i| (area(i), data.to_vec())).collect()
        },
    }
}

fn check(w: &mut World, dev: &Net, mem: &hull_vmm::vstate::memory::GuestMemoryMmap) {
    let rx = &dev.queues()[RXQ];
    let pending = dev.rx_pending_len();
    assert!(
        pending <= usize::from(guest::QUEUE_SIZE),
        "{pending} rx chains pending"
    );
    // Frames written over the rings make any head possible (see guest::check_drained).
    if !w.rx_bad && w.rx_clean {
        assert_eq!(
            usize::from(rx.next_avail().wrapping_sub(rx.next_used())),
            pending,
            "rx chains taken are neither used nor pending"
        );
    }
    let m = &*dev_metrics(dev);
    let (packets, bytes) = (m.rx_packets.get(), m.rx_bytes.get());
    let claimed = bytes + packets * VNET_HDR_LEN as u64;
    assert!(
        claimed <= w.delivered,
        "{claimed} bytes of frames counted, {} delivered",
        w.delivered
    );
    assert!(
        m.tx_packets.get() >= w.tx_frames,
        "frames the device never sent"
    );
    if !w.rx_clean || w.rx_bad {
        return;
    }
    // Used entries since the last look: known heads, lengths adding up to the frames the
    // device counted (invalid chains are given back with 0).
    let next = rx.next_used();
    if next.wrapping_sub(w.rx_used_seen) > guest::QUEUE_SIZE {
        // More than a ring's worth since the last look (a driver that posted more than the
        // ring holds): the oldest entries are overwritten.
        w.rx_clean = false;
        return;
    }
    while w.rx_used_seen != next {
        let slot = u64::from(w.rx_used_seen % guest::QUEUE_SIZE);
        let at = USED[RXQ] + 4 + 8 * slot;
        let (id, len): (u32, u32) = (
            mem.read_obj(GuestAddress(at)).expect("used id"),
            mem.read_obj(GuestAddress(at + 4)).expect("used len"),
        );
        assert!(id < u32::from(guest::QUEUE_SIZE), "used id {id}");
        w.rx_used_bytes += u64::from(len);
        w.rx_used_seen = w.rx_used_seen.wrapping_add(1);
    }
    assert_eq!(
        w.rx_used_bytes, claimed,
        "the used lengths are not the frames delivered"
    );
}

fn dev_metrics(dev: &Net) -> Arc<hull_vmm::fuzzing::NetMetrics> {
    match dev.metrics() {
        hull_vmm::devices::virtio::DeviceMetrics::Net(m) => m,
        other => panic!("virtio-net reports {other:?}"),
    }
}

fn post(
    ring: &Ring,
    mem: &hull_vmm::vstate::memory::GuestMemoryMmap,
    vq: &MockSplitQueue<'_, hull_vmm::vstate::memory::GuestMemoryMmap>,
    idx: &mut u16,
    bad: &mut bool,
) {
    *idx = ring.post(mem, vq, *idx);
    *bad |= ring.bad_heads();
}

/// A write to a host end that hung up is EPIPE, as in hull-vmm (Rust's runtime ignores
/// SIGPIPE there; libFuzzer's `main` does not).
fn ignore_sigpipe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: setting SIGPIPE's disposition to SIG_IGN installs no handler code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    });
}

fuzz_target!(|input: Input| {
    ignore_sigpipe();
    let (dev_end, host_end) = seqpacket_pair();
    let mut dev =
        net_on_socket(dev_end, [2, 0, 0, 0, 0, 2], input.mtu.resolve()).expect("virtio-net");
    let acked = (input.acked & dev.state().avail_features) | VIRTIO_F_VERSION_1;
    dev.state_mut().acked_features = acked;
    let mem = guest::memory();
    let vqs = guest::mock_queues(&mem, 2);
    guest::activate(&mut dev, &mem, &vqs);
    let (dev, mut events) = guest::on_event_loop(dev);
    let kick = |q: usize| guest::kick(&dev, q);
    let mut w = World {
        host: Some(host_end),
        acked,
        rx_clean: true,
        rx_bad: false,
        tx_bad: false,
        rx_used_seen: 0,
        rx_used_bytes: 0,
        delivered: 0,
        tx_frames: 0,
    };
    let (mut rx_idx, mut tx_idx) = (0u16, 0u16);
    // Activation: the event loop starts the device.
    events.run_with_timeout(0).expect("event loop");
    for step in input.steps.iter().take(32) {
        match step {
            Step::Tx(ring) => {
                post(ring, &mem, &vqs[TXQ], &mut tx_idx, &mut w.tx_bad);
                kick(TXQ);
            }
            Step::Rx(ring) => {
                w.rx_clean &= clear_of_rings(ring);
                post(ring, &mem, &vqs[RXQ], &mut rx_idx, &mut w.rx_bad);
                kick(RXQ);
            }
            Step::RxBuffers { n, len } => {
                let ring = driver_ring(*n, *len, true, &[]);
                post(&ring, &mem, &vqs[RXQ], &mut rx_idx, &mut w.rx_bad);
                kick(RXQ);
            }
            Step::TxFrames { n, len, hdr } => {
                let mut data = hdr.to_vec();
                data.resize(usize::from(*len).max(VNET_HDR_LEN), 0x5a);
                let ring = driver_ring(*n, *len, false, &data);
                post(&ring, &mem, &vqs[TXQ], &mut tx_idx, &mut w.tx_bad);
                kick(TXQ);
            }
            Step::Frame { hdr, len, fill } => w.frame(hdr, len.resolve(), *fill),
            Step::HostRead => w.host_read(),
            Step::Events => {}
            Step::HangUp => w.host = None,
        }
        let tx_before = dev.lock().expect("device lock").queues()[TXQ].next_avail();
        // A kick is seen on the first round, the tap it made the device watch on the next.
        for _ in 0..2 {
            events.run_with_timeout(0).expect("event loop");
        }
        let d = dev.lock().expect("device lock");
        guest::check_drained(&d.queues()[TXQ], &vqs[TXQ], tx_before, &mut w.tx_bad);
        check(&mut w, &d, &mem);
    }
    w.host_read();
    let d = dev.lock().expect("device lock");
    if w.host.is_some() && !d.broken() {
        assert_eq!(
            dev_metrics(&d).tx_packets.get(),
            w.tx_frames,
            "the tap got other frames than the device counted"
        );
    }
});
