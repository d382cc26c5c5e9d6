//! virtio-vsock's queue processing: tx chains the fuzzer wrote (headers and payloads of any
//! shape) go to a real muxer, whose answers (responses, resets, what host peers write) come
//! back through rx chains the fuzzer also wrote. Guest connections to host ports
//! 1024 and 1025 reach listening sockets; others are refused. The device runs on an
//! `event-manager` loop as in hull-vmm: a driver's notification is a write to the queue's
//! eventfd, the muxer's host sockets are watched through its epoll fd.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use hull_vmm::devices::virtio::VirtioDevice;
use virtio_queue::QueueT;

use arbitrary::Arbitrary;
use hull_fuzz::guest::{self, Ring};
use hull_fuzz::vsock_host::VsockHost;
use hull_vmm::fuzzing::{Muxer, Vsock};
use libfuzzer_sys::fuzz_target;

const CID: u64 = 3;

#[derive(Arbitrary, Debug)]
enum Step {
    /// The driver posts to the tx queue (1) or the rx queue (0), then notifies it.
    Tx(Ring),
    Rx(Ring),
    /// The event loop runs once more (the muxer's host sockets, a pending kick).
    Events,
    /// Host peers of guest-initiated connections write to the guest.
    PeersWrite(Vec<u8>),
}

type Host = VsockHost;

/// Made once per process: the listeners outlive every iteration's muxer.
fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| VsockHost::new(&[1024, 1025]))
}

fuzz_target!(|steps: Vec<Step>| {
    let h = host();
    // Peers left from the last input: drop them, so their connections read as closed.
    accept_all(h);
    let muxer = Muxer::new(CID, &h.uds).expect("muxer");
    let mut dev = Vsock::new(CID, muxer).expect("virtio-vsock");
    let mem = guest::memory();
    let vqs = guest::mock_queues(&mem, 3);
    guest::activate(&mut dev, &mem, &vqs);
    let (dev, mut events) = guest::on_event_loop(dev);
    let kick = |q: usize| guest::kick(&dev, q);
    let mut peers = Vec::new();
    let (mut rx_idx, mut tx_idx) = (0u16, 0u16);
    let (mut rx_bad, mut tx_bad) = (false, false);
    for step in steps.iter().take(32) {
        match step {
            Step::Tx(ring) => {
                tx_idx = ring.post(&mem, &vqs[1], tx_idx);
                tx_bad |= ring.bad_heads();
                kick(1);
            }
            Step::Rx(ring) => {
                rx_idx = ring.post(&mem, &vqs[0], rx_idx);
                rx_bad |= ring.bad_heads();
                kick(0);
            }
            Step::Events => {}
            Step::PeersWrite(data) => {
                peers.extend(accept_all(h));
                for p in &mut peers {
                    let _ = p.write(data);
                }
            }
        }
        let before = {
            let d = dev.lock().expect("device lock");
            [d.queues()[0].next_avail(), d.queues()[1].next_avail()]
        };
        events.run_with_timeout(0).expect("event loop");
        let d = dev.lock().expect("device lock");
        guest::check_drained(&d.queues()[0], &vqs[0], before[0], &mut rx_bad);
        guest::check_drained(&d.queues()[1], &vqs[1], before[1], &mut tx_bad);
    }
});

/// Connections the muxer made to the listeners since the last call.
fn accept_all(h: &Host) -> Vec<std::os::unix::net::UnixStream> {
    let mut out = Vec::new();
    for l in &h.listeners {
        while let Ok((s, _)) = l.accept() {
            s.set_nonblocking(true).expect("nonblocking");
            out.push(s);
        }
    }
    out
}
