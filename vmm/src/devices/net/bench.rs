//! The device model's throughput (`bench/net/model` prints it): a `Net`
//! with every offload accepted, its queues driven by a mock guest in this thread, its tap
//! wired by tc to a second tap — the same ingress redirect the shim sets up in a pod — whose
//! far end a peer thread reads or writes. Frames are 64 KiB TCP segments (TSO) or MTU-sized;
//! the figure is bytes delivered per second of the *device thread's* CPU time, which includes
//! the kernel's tap and tc work done in its system calls.
//!
//! Needs root and /dev/net/tun; it runs in a private network namespace of its own thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::offload::{self, GSO_NONE, GSO_TCPV4};
use super::tap::Tap;
use super::{Net, RXQ, TXQ, VNET_HDR_LEN};
use crate::config::LimitConfig;
use crate::devices::virtio::{IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::vstate::memory::{self, GuestMemoryMmap};

/// Which way frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Guest → tap (TX queue).
    Tx,
    /// Tap → guest (RX queue, mergeable 4 KiB buffers).
    Rx,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub frames: u64,
    /// Frame bytes delivered (Ethernet frames, virtio-net headers not counted).
    pub bytes: u64,
    pub wall: Duration,
    /// CPU time of the thread that ran the device (user + system).
    pub device_cpu: Duration,
}

impl Report {
    /// Gbit/s per core of device thread.
    pub fn gbit_per_core(&self) -> f64 {
        let s = self.device_cpu.as_secs_f64();
        if s == 0.0 {
            return 0.0;
        }
        self.bytes as f64 * 8.0 / s / 1e9
    }
}

const QSIZE: u16 = 256;
const TAP_DEV: &str = "hullbench0";
const TAP_PEER: &str = "hullbench1";
const RX_BUF: u32 = 4096;
/// Descriptor flags (virtio 1.x split ring).
const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// Runs `frames` frames of `frame_len` bytes (Ethernet frame, ≥ 60) through the device.
pub fn run(dir: Direction, frame_len: usize, frames: u64) -> Result<Report, String> {
    run_limited(dir, frame_len, frames, LimitConfig::default())
}

/// [`run`] with `limit` on the direction's rate limiter (TX only). A throttled device
/// waits for its limiter's timer as on the event loop (a blocking read of the timer fd), so
/// the wall time is what real timers give.
pub fn run_limited(
    dir: Direction,
    frame_len: usize,
    frames: u64,
    limit: LimitConfig,
) -> Result<Report, String> {
    if !(60..=65535).contains(&frame_len) {
        return Err(format!("frame length {frame_len}: 60..=65535"));
    }
    if dir == Direction::Rx && limit != LimitConfig::default() {
        return Err("the bench limits TX only".into());
    }
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET) (needs root): {e}"))?;
        run_in_netns(dir, frame_len, frames, limit)
    })
    .join()
    .map_err(|_| "the bench thread panicked".to_owned())?
}

fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let st = std::process::Command::new(cmd)
        .args(args)
        .status()
        .map_err(|e| format!("{cmd}: {e}"))?;
    st.success()
        .then_some(())
        .ok_or_else(|| format!("{cmd} {args:?} failed"))
}

/// Both taps up, redirected into each other at ingress (as `shim/src/net/tc.rs` wires a pod).
fn wire() -> Result<(Tap, Tap), String> {
    let dev = Tap::open_named(TAP_DEV).map_err(|e| e.to_string())?;
    let peer = Tap::open_named(TAP_PEER).map_err(|e| e.to_string())?;
    // The peer plays a guest that accepts segments, so the kernel hands it 64 KiB frames.
    peer.set_offload(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6)
        .map_err(|e| e.to_string())?;
    for (a, b) in [(TAP_DEV, TAP_PEER), (TAP_PEER, TAP_DEV)] {
        // Only the bench's frames: no IPv6 router solicitations or MLD of the taps' own.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{a}/disable_ipv6"), "1");
        sh("ip", &["link", "set", "dev", a, "up"])?;
        sh("tc", &["qdisc", "add", "dev", a, "ingress"])?;
        sh(
            "tc",
            &[
                "filter", "add", "dev", a, "parent", "ffff:", "protocol", "all", "u32", "match",
                "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", b,
            ],
        )?;
    }
    Ok((dev, peer))
}

/// A TCP/IPv4 frame of `len` bytes and the virtio-net header that sends it as one segment
/// (or, above an MTU's worth, as a TSO request with 1448-byte segments).
fn frame(len: usize) -> ([u8; VNET_HDR_LEN], Vec<u8>) {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = u16::try_from(len - 14).unwrap_or(u16::MAX);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    let sum = f[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    f[24..26].copy_from_slice(&(!u16::try_from(sum).unwrap_or(0)).to_be_bytes());
    f[34..36].copy_from_slice(&5001u16.to_be_bytes());
    f[36..38].copy_from_slice(&5002u16.to_be_bytes());
    f[46] = 0x50; // data offset 5
    f[47] = 0x10; // ACK
    f[48..50].copy_from_slice(&0xffffu16.to_be_bytes());
    let mut h = [0u8; VNET_HDR_LEN];
    h[0] = 1; // NEEDS_CSUM: TCP checksum left to the offload
    h[6..8].copy_from_slice(&34u16.to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    if len > 1514 {
        h[1] = GSO_TCPV4;
        h[2..4].copy_from_slice(&54u16.to_le_bytes());
        h[4..6].copy_from_slice(&1448u16.to_le_bytes());
    } else {
        h[1] = GSO_NONE;
    }
    (h, f)
}

fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Backs off while a tap has nothing to read or no room: a sleep costs the measured thread
/// no CPU time.
fn back_off() {
    std::thread::sleep(Duration::from_micros(20));
}

/// The bench's guest driver for one split ring, laid out by hand at `base`: descriptor table,
/// then the available ring at +4 KiB, the used ring at +8 KiB. (virtio-queue's
/// `MockSplitQueue::create` places the used ring `len` bytes, not `2 * len`, after the start of
/// the available ring entries, so their 256-entry rings overlap.)
struct Driver {
    base: u64,
    avail: u16,
    used_seen: u16,
}

impl Driver {
    fn avail_addr(&self) -> u64 {
        self.base + 0x1000
    }

    fn used_addr(&self) -> u64 {
        self.base + 0x2000
    }

    /// The device's queue for this ring.
    fn queue(&self) -> Result<Queue, String> {
        let mut q = Queue::new(QSIZE).map_err(|e| e.to_string())?;
        let split = |a: u64| (Some((a & 0xffff_ffff) as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(self.base);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.avail_addr());
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.used_addr());
        q.set_used_ring_address(lo, hi);
        q.set_ready(true);
        Ok(q)
    }

    /// Writes descriptor `i`.
    fn desc(
        &self,
        mem: &GuestMemoryMmap,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<(), String> {
        let at = self.base + 16 * u64::from(i);
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&d, GuestAddress(at))
            .map_err(|e| e.to_string())
    }

    /// Makes `head` available.
    fn offer(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail_addr() + 4 + 2 * u64::from(self.avail % QSIZE);
        let _ = mem.write_obj(head.to_le(), GuestAddress(slot));
        self.avail = self.avail.wrapping_add(1);
        let _ = mem.write_obj(self.avail.to_le(), GuestAddress(self.avail_addr() + 2));
    }

    /// Takes what the device completed and offers the chains again; returns how many.
    fn recycle(&mut self, mem: &GuestMemoryMmap) -> u16 {
        let used: u16 = mem
            .read_obj(GuestAddress(self.used_addr() + 2))
            .map(u16::from_le)
            .unwrap_or(self.used_seen);
        let n = used.wrapping_sub(self.used_seen);
        for i in 0..n {
            let e = self.used_addr() + 4 + 8 * u64::from(self.used_seen.wrapping_add(i) % QSIZE);
            let head: u32 = mem.read_obj(GuestAddress(e)).map(u32::from_le).unwrap_or(0);
            self.offer(mem, u16::try_from(head).unwrap_or(0));
        }
        self.used_seen = used;
        n
    }
}

fn run_in_netns(
    dir: Direction,
    frame_len: usize,
    frames: u64,
    limit: LimitConfig,
) -> Result<Report, String> {
    let (dev_tap, peer) = wire()?;
    let mem = memory::create(64 << 20).map_err(|e| e.to_string())?;
    let mut net = Net::new(dev_tap, [2, 0, 0, 0, 0, 2], 1500).map_err(|e| e.to_string())?;
    net.set_limits(LimitConfig::default(), limit);
    let mut rx = Driver {
        base: 0x1_0000,
        avail: 0,
        used_seen: 0,
    };
    let mut tx = Driver {
        base: 0x4_0000,
        avail: 0,
        used_seen: 0,
    };
    net.state.queues[RXQ] = rx.queue()?;
    net.state.queues[TXQ] = tx.queue()?;
    let irq = Arc::new(IrqTrigger::new(
        EventFd::new(EFD_NONBLOCK).map_err(|e| e.to_string())?,
    ));
    net.activate(mem.clone(), irq).map_err(|e| e.to_string())?;
    net.state.acked_features = offload::OFFERED | VIRTIO_F_VERSION_1;
    let _ = net.activate_evt.read();
    net.start();
    if !net.started {
        return Err("the device did not start".into());
    }
    let (hdr, f) = frame(frame_len);
    let stop = Arc::new(AtomicBool::new(false));
    let peer_count = Arc::new(AtomicU64::new(0));
    match dir {
        Direction::Tx => {
            // Every TX chain points at the same header and frame: the device only reads them.
            mem.write_slice(&hdr, GuestAddress(0x10_0000))
                .map_err(|e| e.to_string())?;
            mem.write_slice(&f, GuestAddress(0x10_1000))
                .map_err(|e| e.to_string())?;
            let flen = u32::try_from(f.len()).unwrap_or(0);
            let d = &mut tx;
            for c in 0..QSIZE / 2 {
                let (h, b) = (2 * c, 2 * c + 1);
                d.desc(&mem, h, 0x10_0000, 12, NEXT, b)?;
                d.desc(&mem, b, 0x10_1000, flen, 0, 0)?;
                d.offer(&mem, h);
            }
            let reader = {
                let (stop, count) = (stop.clone(), peer_count.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 70_000];
                    while !stop.load(Ordering::Relaxed) {
                        match peer.read_frame_into_buf(&mut buf) {
                            Ok(_) => {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => back_off(),
                        }
                    }
                })
            };
            let (t0, c0) = (Instant::now(), thread_cpu());
            let mut sent = 0u64;
            while sent < frames {
                net.process_tx();
                if net.tx_limit.throttled() {
                    net.tx_limit.expired();
                }
                if net.watch.tx_blocked {
                    back_off();
                    net.watch.tx_blocked = false;
                }
                sent += u64::from(d.recycle(&mem));
            }
            let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
            // Whatever is still in flight has a moment to arrive.
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
            let _ = reader.join();
            let got = peer_count.load(Ordering::Relaxed).min(sent);
            Ok(Report {
                frames: got,
                bytes: got * frame_len as u64,
                wall,
                device_cpu: cpu,
            })
        }
        Direction::Rx => {
            let d = &mut rx;
            for c in 0..QSIZE {
                let addr = 0x100_0000 + u64::from(c) * u64::from(RX_BUF);
                d.desc(&mem, c, addr, RX_BUF, WRITE, 0)?;
                d.offer(&mem, c);
            }
            let writer = {
                let stop = stop.clone();
                let mut whole = hdr.to_vec();
                whole.extend_from_slice(&f);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if peer.write_frame_from_buf(&whole).is_err() {
                            back_off();
                        }
                    }
                })
            };
            let (t0, c0) = (Instant::now(), thread_cpu());
            let mut progress = Instant::now();
            let mut stuck = None;
            while net.metrics.rx_packets.get() < frames {
                let before = net.metrics.rx_packets.get();
                net.watch.rx_wanted = true;
                net.process_rx();
                d.recycle(&mem);
                if net.metrics.rx_packets.get() == before {
                    back_off();
                    if progress.elapsed() > Duration::from_secs(5) {
                        stuck = Some(format!(
                            "no frame for 5 s after {before}: {} chains pending, metrics {}",
                            net.rx_pending.len(),
                            serde_json::to_string(&*net.metrics).unwrap_or_default()
                        ));
                        break;
                    }
                } else {
                    progress = Instant::now();
                }
            }
            let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
            stop.store(true, Ordering::Relaxed);
            let _ = writer.join();
            if let Some(why) = stuck {
                return Err(why);
            }
            let got = net.metrics.rx_packets.get();
            Ok(Report {
                frames: got,
                bytes: net.metrics.rx_bytes.get(),
                wall,
                device_cpu: cpu,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's plumbing works (no timing asserted): frames cross both ways.
    #[test]
    fn a_short_run_each_way_delivers() {
        if !nix::unistd::geteuid().is_root() {
            panic!("the virtio-net bench test needs root (make test runs as root)");
        }
        for dir in [Direction::Tx, Direction::Rx] {
            for len in [1514, 65_000] {
                let r = run(dir, len, 200).expect("bench run");
                assert!(r.frames >= 100, "{dir:?} {len}: {r:?}");
                assert_eq!(r.bytes, r.frames * len as u64, "{dir:?} {len}: {r:?}");
                assert!(!r.wall.is_zero() && r.gbit_per_core() >= 0.0, "{r:?}");
            }
        }
    }
}
