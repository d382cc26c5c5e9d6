//! virtio-vsock device logic: move packets between the guest's rx/tx queues and the muxer.
//! Every tx chain must be device-readable (header + payload, payload ≤ 64 KiB and no longer
//! than the header says); every rx chain device-writable and able to hold a header.

use std::sync::Arc;

use virtio_queue::QueueT;

use super::metrics::VsockMetrics;
use super::muxer::Muxer;
use super::packet::{Header, HDR_LEN};
use crate::devices::virtio::chain::ChainLimits;
use crate::devices::virtio::{
    read_config_bytes, DescChain, DeviceMetrics, DeviceState, VirtioDevice, INT_VRING, TYPE_VSOCK,
};
use crate::vstate::memory::GuestMemoryMmap;

pub const RXQ: usize = 0;
pub const TXQ: usize = 1;
pub const EVQ: usize = 2;
/// Linux keeps the rx ring full of 4 KiB buffers for the whole life of the VM, so every entry
/// is a page of guest RAM: 64 entries are 256 KiB, 256 (Firecracker's size) 1 MiB of an idle
/// pod's host memory. 64 still lets the host fill ~240 KB before the guest refills (it does
/// when half the ring is used).
const QUEUE_SIZE: u16 = 64;
/// Largest payload per packet either way.
pub const MAX_PKT_DATA: usize = 64 * 1024;
/// Chains handled per queue per wakeup: one ring's worth. A guest that keeps refilling its tx
/// ring while we drain it would otherwise keep the event loop (every other device, the API)
/// here; past the budget the queue's own eventfd is kicked so the rest waits its turn.
const QUEUE_BUDGET: usize = QUEUE_SIZE as usize;
const LIMITS: ChainLimits = ChainLimits {
    max_descriptors: 32,
    max_bytes: (HDR_LEN + MAX_PKT_DATA) as u64,
};

/// The virtio-vsock device.
#[derive(Debug)]
pub struct Vsock {
    cid: u64,
    pub(super) state: DeviceState,
    pub(super) muxer: Muxer,
    pub(super) metrics: Arc<VsockMetrics>,
}

impl Vsock {
    pub fn new(cid: u64, muxer: Muxer) -> std::io::Result<Self> {
        Ok(Vsock {
            cid,
            state: DeviceState::new(3, QUEUE_SIZE, 0)?,
            metrics: muxer.metrics().clone(),
            muxer,
        })
    }

    fn read_tx(mem: &GuestMemoryMmap, c: &DescChain) -> Option<(Header, Vec<u8>)> {
        if !c.writable.is_empty() {
            return None;
        }
        let mut hb = [0u8; HDR_LEN];
        c.read_at(mem, 0, &mut hb).ok()?;
        let h = Header::from_bytes(&hb);
        let len = usize::try_from(h.len).ok()?;
        if len > MAX_PKT_DATA || (len as u64) > c.readable_len() - HDR_LEN as u64 {
            return None;
        }
        let mut data = vec![0u8; len];
        c.read_at(mem, HDR_LEN as u64, &mut data).ok()?;
        Some((h, data))
    }

    /// Forwards the packets the guest queued, at most [`QUEUE_BUDGET`]; returns whether any
    /// chain was used.
    pub fn process_tx(&mut self) -> bool {
        self.process_tx_budget(QUEUE_BUDGET)
    }

    /// Forwards at most `budget` packets; with more waiting, kicks the tx queue's eventfd so
    /// the event loop comes back for them after its other events.
    fn process_tx_budget(&mut self, budget: usize) -> bool {
        let Some(active) = &self.state.active else {
            return false;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let mut used = false;
        let mut left = budget;
        loop {
            if left == 0 {
                let _ = self.state.queue_evts[TXQ].write(1);
                break;
            }
            let Some(chain) = self.state.queues[TXQ].pop_descriptor_chain(&mem) else {
                break;
            };
            left -= 1;
            let head = chain.head_index();
            let pkt = DescChain::parse(chain, &mem, LIMITS)
                .ok()
                .and_then(|c| Self::read_tx(&mem, &c));
            match pkt {
                Some((h, data)) => {
                    self.metrics.tx_packets.inc();
                    self.muxer.send_pkt(&h, &data);
                }
                None => self.metrics.invalid_chains.inc(),
            }
            if self.state.queues[TXQ].add_used(&mem, head, 0).is_err() {
                break;
            }
            used = true;
        }
        if used {
            irq.trigger(INT_VRING);
        }
        used
    }

    /// Delivers pending host packets into the guest's rx buffers.
    pub fn process_rx(&mut self) -> bool {
        let Some(active) = &self.state.active else {
            return false;
        };
        let mem = active.mem.clone();
        let irq = active.irq.clone();
        let mut used = false;
        let mut left = QUEUE_BUDGET;
        while self.muxer.has_pending_rx() {
            if left == 0 {
                // As for tx: the rx queue's eventfd brings the event loop back.
                let _ = self.state.queue_evts[RXQ].write(1);
                break;
            }
            left -= 1;
            let Some(chain) = self.state.queues[RXQ].pop_descriptor_chain(&mem) else {
                break; // no buffers: the guest notifies the rx queue when it adds some
            };
            let head = chain.head_index();
            let written = match DescChain::parse(chain, &mem, LIMITS) {
                Ok(c) if c.readable.is_empty() && c.writable_len() >= HDR_LEN as u64 => {
                    let room = usize::try_from(c.writable_len()).unwrap_or(0) - HDR_LEN;
                    match self.muxer.recv_pkt(room.min(MAX_PKT_DATA)) {
                        Some((h, data)) => {
                            let ok = c.write_at(&mem, 0, &h.to_bytes()).is_ok()
                                && c.write_at(&mem, HDR_LEN as u64, &data).is_ok();
                            self.metrics.rx_packets.inc();
                            if ok {
                                u32::try_from(HDR_LEN + data.len()).unwrap_or(0)
                            } else {
                                0
                            }
                        }
                        None => {
                            // Nothing after all: give the buffer back untouched.
                            let q = &mut self.state.queues[RXQ];
                            q.set_next_avail(q.next_avail().wrapping_sub(1));
                            break;
                        }
                    }
                }
                _ => {
                    self.metrics.invalid_chains.inc();
                    0
                }
            };
            if self.state.queues[RXQ]
                .add_used(&mem, head, written)
                .is_err()
            {
                break;
            }
            used = true;
        }
        if used {
            irq.trigger(INT_VRING);
        }
        used
    }
}

impl VirtioDevice for Vsock {
    fn state(&self) -> &DeviceState {
        &self.state
    }
    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }
    fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics::Vsock(self.metrics.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use crate::devices::virtio::IrqTrigger;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::super::packet::*;
    use super::*;
    use crate::devices::virtio::chain::test_util::*;
    use crate::vstate::memory;

    const CID: u64 = 3;

    struct Rig<'a> {
        dev: Vsock,
        rx: MockSplitQueue<'a, GuestMemoryMmap>,
        tx: MockSplitQueue<'a, GuestMemoryMmap>,
        _dir: tempfile::TempDir,
        uds: std::path::PathBuf,
    }

    fn rig(mem: &GuestMemoryMmap) -> Rig<'_> {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mux = Muxer::new(CID, &uds).unwrap();
        let mut dev = Vsock::new(CID, mux).unwrap();
        let rx = MockSplitQueue::create(mem, GuestAddress(0x1_0000), 16);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x4_0000), 16);
        dev.state.queues[RXQ] = rx.create_queue().unwrap();
        dev.state.queues[TXQ] = tx.create_queue().unwrap();
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        dev.activate(mem.clone(), irq).unwrap();
        Rig {
            dev,
            rx,
            tx,
            _dir: dir,
            uds,
        }
    }

    fn put_tx(mem: &GuestMemoryMmap, r: &Rig<'_>, h: Header, data: &[u8], slot: u16) {
        let addr = 0x10_0000 + u64::from(slot) * 0x1_0000;
        mem.write_slice(&h.to_bytes(), GuestAddress(addr)).unwrap();
        mem.write_slice(data, GuestAddress(addr + HDR_LEN as u64))
            .unwrap();
        let len = u32::try_from(HDR_LEN + data.len()).unwrap();
        r.tx.add_desc_chains(&[desc(addr, len, 0, 0)], slot)
            .unwrap();
    }

    fn hdr(src_port: u32, dst_port: u32, op: u16, len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 65536,
            ..Default::default()
        }
    }

    fn rx_packets(mem: &GuestMemoryMmap, r: &mut Rig<'_>, n: u16) -> Vec<(Header, Vec<u8>)> {
        for i in 0..n {
            let addr = 0x80_0000 + u64::from(i) * 0x1_0000;
            r.rx.add_desc_chains(&[desc(addr, 0x1_0000, WRITE, 0)], i)
                .unwrap();
        }
        r.dev.process_rx();
        let used: u16 = r.rx.used().idx().load();
        (0..used)
            .map(|i| {
                let e = r.rx.used().ring().ref_at(usize::from(i)).unwrap().load();
                let addr = 0x80_0000 + u64::from(e.id()) * 0x1_0000;
                let mut hb = [0u8; HDR_LEN];
                mem.read_slice(&mut hb, GuestAddress(addr)).unwrap();
                let h = Header::from_bytes(&hb);
                let mut d = vec![0u8; e.len() as usize - HDR_LEN];
                mem.read_slice(&mut d, GuestAddress(addr + HDR_LEN as u64))
                    .unwrap();
                (h, d)
            })
            .collect()
    }

    #[test]
    fn guest_connects_and_sends_through_queues() {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = rig(&mem);
        let l = UnixListener::bind(format!("{}_1234", r.uds.display())).unwrap();
        put_tx(&mem, &r, hdr(5000, 1234, OP_REQUEST, 0), &[], 0);
        put_tx(&mem, &r, hdr(5000, 1234, OP_RW, 5), b"hello", 1);
        assert!(r.dev.process_tx());
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        let pkts = rx_packets(&mem, &mut r, 4);
        assert_eq!(pkts[0].0.op, OP_RESPONSE);
        assert_eq!(pkts[0].0.dst_port, 5000);
    }

    #[test]
    fn host_connects_through_the_uds() {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = rig(&mem);
        let mut host = UnixStream::connect(&r.uds).unwrap();
        host.write_all(b"CONNECT 1024\n").unwrap();
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            r.dev.muxer.process_events();
        }
        let pkts = rx_packets(&mem, &mut r, 2);
        assert_eq!(pkts.len(), 1);
        let req = pkts[0].0;
        assert_eq!((req.op, req.dst_port), (OP_REQUEST, 1024));
        let mut resp = hdr(1024, req.src_port, OP_RESPONSE, 0);
        resp.src_port = 1024;
        put_tx(&mem, &r, resp, &[], 0);
        r.dev.process_tx();
        let mut line = [0u8; 3];
        host.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"OK ");
    }

    #[test]
    fn a_tx_flood_is_served_in_budgets() {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = rig(&mem);
        // Ten packets for unknown connections (each answered with an RST).
        for slot in 0..10 {
            put_tx(&mem, &r, hdr(u32::from(slot), 9, OP_RW, 1), b"x", slot);
        }
        assert!(r.dev.process_tx_budget(4));
        let used: u16 = r.tx.used().idx().load();
        assert_eq!(used, 4, "no more than the budget per wakeup");
        // The event loop is told to come back for the rest.
        assert_eq!(r.dev.state.queue_evts[TXQ].read().unwrap(), 1);
        r.dev.process_tx_budget(4);
        assert_eq!(r.dev.state.queue_evts[TXQ].read().unwrap(), 1);
        r.dev.process_tx_budget(4);
        let used: u16 = r.tx.used().idx().load();
        assert_eq!(used, 10);
        assert_eq!(r.dev.metrics.tx_packets.get(), 10);
        // Done within the budget: no further kick (the eventfd is non-blocking and empty).
        assert!(r.dev.state.queue_evts[TXQ].read().is_err());
    }

    #[test]
    fn malformed_tx_chains_fail_alone() {
        let mem = memory::create(32 << 20).unwrap();
        let mut r = rig(&mem);
        // Header claims more payload than the buffer holds.
        put_tx(&mem, &r, hdr(1, 2, OP_RW, 1000), b"abc", 0);
        // Short header.
        r.tx.add_desc_chains(&[desc(0x10_0000, 10, 0, 0)], 1)
            .unwrap();
        // Device-writable tx buffer (wrong direction).
        r.tx.add_desc_chains(&[desc(0x10_0000, 64, WRITE, 0)], 2)
            .unwrap();
        // Out of guest memory.
        r.tx.add_desc_chains(&[desc(0xffff_0000_0000, 64, 0, 0)], 3)
            .unwrap();
        // Zero length; huge length.
        r.tx.add_desc_chains(&[desc(0x10_0000, 0, 0, 0)], 4)
            .unwrap();
        r.tx.add_desc_chains(&[desc(0x10_0000, 0x100_0000, 0, 0)], 5)
            .unwrap();
        assert!(r.dev.process_tx());
        assert_eq!(r.dev.metrics.invalid_chains.get(), 6);
        let used: u16 = r.tx.used().idx().load();
        assert_eq!(used, 6);
        // Malformed rx buffers: readable, too short for a header.
        r.dev.muxer.send_pkt(&hdr(9, 9, OP_RW, 0), &[]); // unknown conn -> RST pending
        r.rx.add_desc_chains(&[desc(0x80_0000, 64, 0, 0)], 0)
            .unwrap();
        r.rx.add_desc_chains(&[desc(0x81_0000, 8, WRITE, 0)], 1)
            .unwrap();
        r.rx.add_desc_chains(&[desc(0x82_0000, 4096, WRITE, 0)], 2)
            .unwrap();
        r.dev.process_rx();
        assert_eq!(r.dev.metrics.invalid_chains.get(), 8);
        let e = r.rx.used().ring().ref_at(2).unwrap().load();
        assert_eq!(
            e.len() as usize,
            HDR_LEN,
            "the RST still arrives in a good buffer"
        );
    }

    #[test]
    fn config_space_holds_the_cid() {
        let mem = memory::create(32 << 20).unwrap();
        let r = rig(&mem);
        let mut b = [0u8; 8];
        r.dev.read_config(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), CID);
        let mut b = [0xffu8; 4];
        r.dev.read_config(6, &mut b);
        assert_eq!(b, [0; 4], "reads past the end are zero");
    }
}
