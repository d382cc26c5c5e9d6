//! The vsock muxer as a state machine: the fuzzer is the guest (packets of any op, port,
//! credit and payload, sent straight to `send_pkt`; rx buffers of any size via `recv_pkt`)
//! and the host (clients that connect to the VMM's socket with any handshake bytes, write,
//! read, hang up, or flood it; peers listening for guest-initiated connections; time passing
//! beyond the muxer's timeout). The muxer runs with caps small enough that a run reaches them
//! (4 host and 3 guest connections, 5 queued RSTs, a 2 ms timeout, where hull-vmm has 512,
//! 64, 256 and 2 s): after every step it must keep them exactly, as DESIGN §2 vmm/ promises
//! for its own values: no more host connections (handshakes included) or guest connections
//! than the caps, no more queued RSTs, one control packet of each kind per connection, no
//! buffer past its size, its indexes consistent, and no more data towards the guest than
//! the credit it gave.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use hull_contract::vsock::connect_request;
use hull_fuzz::vsock_host::VsockHost;
use hull_vmm::fuzzing::packet::{
    Header, HOST_CID, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, TYPE_STREAM,
};
use hull_vmm::fuzzing::{conns_open, muxer_with_limits, occupancy, Muxer, CONN_BUF_ALLOC};
use libfuzzer_sys::fuzz_target;

const CID: u64 = 3;
/// The muxer's caps here (vsock/muxer.rs's `Limits`; hull-vmm's are 512, 64, 256 and 2 s).
const MAX_HOST: usize = 4;
const MAX_GUEST: usize = 3;
const MAX_ORPHANS: usize = 5;
const TIMEOUT: Duration = Duration::from_millis(2);
/// Longest `CONNECT <port>\n` line a handshake may buffer (hull_contract::vsock).
const MAX_REQUEST_LINE: usize = hull_contract::vsock::MAX_REQUEST_LINE;
/// `Wait` steps per input: each sleeps past the timeout.
const MAX_WAITS: usize = 2;
/// Host ports with a listener for guest-initiated connections.
const LISTEN_PORTS: [u32; 2] = [50, 51];
const OPS: [u16; 7] = [
    OP_REQUEST,
    OP_RESPONSE,
    OP_RST,
    OP_SHUTDOWN,
    OP_RW,
    OP_CREDIT_UPDATE,
    OP_CREDIT_REQUEST,
];

/// Which connection a guest packet is for.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dst {
    /// A host port with a listener (a guest-initiated connection).
    Listener(u8),
    /// A connection the muxer told the guest about (a host client's REQUEST).
    Seen(u8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
struct GuestPkt {
    dst: Dst,
    src_port: u8,
    op: u8,
    flags: u8,
    buf_alloc: u32,
    fwd_cnt: u32,
    data: Vec<u8>,
    /// A wrong source CID, destination CID or type.
    bad_addressing: Option<u8>,
}

#[derive(Arbitrary, Debug)]
enum Handshake {
    Connect(u16),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Guest(GuestPkt),
    HostConnect(Handshake),
    HostWrite {
        conn: u8,
        data: Vec<u8>,
    },
    HostClose {
        conn: u8,
    },
    /// Host clients and peers read what waits for them (so the muxer's buffers drain).
    HostRead,
    /// The muxer's epoll set is looked at (accepts, handshakes, host data, hang-ups).
    Events,
    /// The guest takes packets into rx buffers of this payload size until none is left.
    Drain {
        max_data: u16,
    },
    /// More host clients than the cap connect, without a handshake (once per input: it
    /// costs a thousand connections).
    FloodHosts,
    /// The guest opens this many connections to a listening host port.
    FloodGuest {
        n: u8,
    },
    /// Time passes beyond the timeout (at most [`MAX_WAITS`] per input), then the muxer looks
    /// at its epoll set: unanswered REQUESTs, unreset SHUTDOWNs and silent handshakes go.
    Wait,
}

type Host = VsockHost;

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| VsockHost::new(&LISTEN_PORTS))
}

/// The fuzzer's side of the world, and what it knows about the muxer.
struct World {
    mux: Muxer,
    /// Host clients and peers of guest-initiated connections.
    streams: Vec<UnixStream>,
    /// Host clients ever connected (each may hold a host slot).
    host_clients: usize,
    /// Connections the muxer named in a packet: (host port, guest port).
    seen: Vec<(u32, u32)>,
    /// Per connection: how much more data the guest allowed since its last packet on it.
    credit: HashMap<(u32, u32), u64>,
}

impl World {
    fn accept_peers(&mut self) {
        for l in &host().listeners {
            while let Ok((s, _)) = l.accept() {
                s.set_nonblocking(true).expect("nonblocking");
                self.streams.push(s);
            }
        }
    }

    fn connect(&mut self, bytes: &[u8]) {
        let Ok(mut s) = UnixStream::connect(&host().uds) else {
            return;
        };
        s.set_nonblocking(true).expect("nonblocking");
        let _ = s.write(bytes);
        self.streams.push(s);
        self.host_clients += 1;
    }

    fn guest(&mut self, p: &GuestPkt) {
        let dst_port = match p.dst {
            Dst::Listener(i) => LISTEN_PORTS[usize::from(i) % LISTEN_PORTS.len()],
            Dst::Seen(i) if !self.seen.is_empty() => self.seen[usize::from(i) % self.seen.len()].0,
            Dst::Seen(_) => 0,
            Dst::Raw(p) => p,
        };
        let src_port = match p.dst {
            Dst::Seen(i) if !self.seen.is_empty() => self.seen[usize::from(i) % self.seen.len()].1,
            _ => 1000 + u32::from(p.src_port % 8),
        };
        let op = OPS
            .get(usize::from(p.op % 8))
            .copied()
            .unwrap_or(u16::from(p.op));
        let mut h = Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: u32::try_from(p.data.len()).expect("small"),
            type_: TYPE_STREAM,
            op,
            flags: u32::from(p.flags % 4),
            buf_alloc: p.buf_alloc,
            fwd_cnt: p.fwd_cnt,
        };
        match p.bad_addressing.map(|b| b % 3) {
            Some(0) => h.src_cid = 7,
            Some(1) => h.dst_cid = 9,
            Some(_) => h.type_ = 2,
            None => {}
        }
        // The muxer takes the guest's credit from any packet of the connection; a fresh one
        // starts a new budget.
        self.credit
            .insert((dst_port, src_port), u64::from(p.buf_alloc));
        self.mux.send_pkt(&h, &p.data);
    }

    /// The guest empties the muxer's rx queue into buffers of `max_data` payload bytes.
    fn drain(&mut self, max_data: usize) {
        let mut leading_rsts = 0usize;
        let mut only_rsts = true;
        let mut ctrl_seen = HashSet::new();
        let mut n = 0usize;
        while let Some((h, data)) = self.mux.recv_pkt(max_data) {
            n += 1;
            assert!(n < 1 << 16, "the muxer keeps producing packets");
            assert_eq!(
                (h.src_cid, h.dst_cid, h.type_),
                (HOST_CID, CID, TYPE_STREAM)
            );
            assert_eq!(h.len as usize, data.len());
            assert!(
                data.len() <= max_data,
                "{} bytes into a {max_data}-byte buffer",
                data.len()
            );
            let key = (h.src_port, h.dst_port);
            if h.op == OP_RST && only_rsts {
                leading_rsts += 1;
                assert!(
                    leading_rsts <= MAX_ORPHANS,
                    "more than {MAX_ORPHANS} RSTs queued"
                );
                continue;
            }
            only_rsts = false;
            if h.op == OP_REQUEST && !self.seen.contains(&key) {
                self.seen.push(key);
            }
            if h.op == OP_RW {
                let left = self.credit.entry(key).or_insert(0);
                let len = u64::from(h.len);
                assert!(
                    len <= *left,
                    "{len} bytes to the guest on {key:?} with {left} credit"
                );
                *left -= len;
            } else {
                assert!(
                    ctrl_seen.insert((key, h.op, h.flags)),
                    "control packet op {} flags {} twice on {key:?} in one drain",
                    h.op,
                    h.flags
                );
            }
        }
    }

    fn check_bounds(&self) {
        let o = occupancy(&self.mux);
        assert!(
            o.host_conns <= MAX_HOST,
            "{} host connections: {o:?}",
            o.host_conns
        );
        assert!(
            o.host_conns <= self.host_clients,
            "host connections from nowhere: {o:?}"
        );
        assert!(
            o.guest_conns <= MAX_GUEST,
            "{} guest connections: {o:?}",
            o.guest_conns
        );
        assert_eq!(
            o.guest_conns, o.conns_from_guest,
            "guest count drifted: {o:?}"
        );
        assert_eq!(
            o.host_conns,
            o.conns - o.conns_from_guest + o.handshakes,
            "host count drifted: {o:?}"
        );
        assert_eq!(o.fds, o.conns, "connections by fd: {o:?}");
        assert!(o.rx_orphans <= MAX_ORPHANS, "{} RSTs queued", o.rx_orphans);
        assert_eq!(o.rx_ready, o.rx_ready_set, "ready queue and set: {o:?}");
        assert!(
            o.rx_ready <= o.conns,
            "ready entries for gone connections: {o:?}"
        );
        // REQUEST or RESPONSE, CREDIT_UPDATE, SHUTDOWN.
        assert!(o.max_ctrl <= 3, "{} control packets queued", o.max_ctrl);
        assert!(
            o.max_handshake_buf < MAX_REQUEST_LINE,
            "a handshake holds {} bytes",
            o.max_handshake_buf
        );
        assert!(
            o.max_early < 2 * MAX_REQUEST_LINE,
            "{} bytes came with a CONNECT line",
            o.max_early
        );
        assert!(
            o.max_tx_buf <= CONN_BUF_ALLOC as usize,
            "{} bytes buffered for a host stream",
            o.max_tx_buf
        );
        let open = conns_open(self.mux.metrics());
        assert_eq!(open, o.conns as u64, "the conns_open gauge");
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let h = host();
    let mut w = World {
        mux: muxer_with_limits(CID, &h.uds, TIMEOUT, MAX_HOST, MAX_GUEST, MAX_ORPHANS)
            .expect("muxer"),
        streams: Vec::new(),
        host_clients: 0,
        seen: Vec::new(),
        credit: HashMap::new(),
    };
    let mut flooded = false;
    let mut waits = 0;
    for step in steps.iter().take(48) {
        match step {
            Step::Guest(p) => w.guest(p),
            Step::HostConnect(Handshake::Connect(port)) => {
                w.connect(connect_request(u32::from(*port)).as_bytes());
            }
            Step::HostConnect(Handshake::Raw(bytes)) => w.connect(bytes),
            Step::HostWrite { conn, data } => {
                if !w.streams.is_empty() {
                    let i = usize::from(*conn) % w.streams.len();
                    let _ = w.streams[i].write(data);
                }
            }
            Step::HostClose { conn } => {
                if !w.streams.is_empty() {
                    let i = usize::from(*conn) % w.streams.len();
                    w.streams.swap_remove(i);
                }
            }
            Step::HostRead => {
                let mut buf = [0u8; 4096];
                for s in &mut w.streams {
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                }
            }
            Step::Events => w.mux.process_events(),
            Step::Drain { max_data } => w.drain(usize::from(*max_data)),
            Step::FloodHosts if !flooded => {
                flooded = true;
                flood_hosts(&mut w);
            }
            Step::FloodHosts => {}
            Step::Wait if waits < MAX_WAITS => {
                waits += 1;
                std::thread::sleep(TIMEOUT + Duration::from_millis(1));
                w.mux.process_events();
            }
            Step::Wait => {}
            Step::FloodGuest { n } => {
                for i in 0..u32::from(*n) {
                    let hdr = Header {
                        src_cid: CID,
                        dst_cid: HOST_CID,
                        src_port: 20_000 + i,
                        dst_port: LISTEN_PORTS[0],
                        type_: TYPE_STREAM,
                        op: OP_REQUEST,
                        buf_alloc: 4096,
                        ..Header::default()
                    };
                    w.credit.insert((LISTEN_PORTS[0], 20_000 + i), 4096);
                    w.mux.send_pkt(&hdr, &[]);
                }
            }
        }
        w.accept_peers();
        w.check_bounds();
    }
    // Peers left in the listeners' backlogs must not fill them for the next input.
    w.accept_peers();
});

/// Connects more clients than the host cap in batches the listener's backlog takes, and
/// checks that the muxer closed every one past the cap.
fn flood_hosts(w: &mut World) {
    let before = w.streams.len();
    for _ in 0..(MAX_HOST + 8).div_ceil(64) {
        for _ in 0..64 {
            w.connect(b"");
        }
        w.mux.process_events();
    }
    // One call serves at most 32 ready fds (the clients of an earlier flood hanging up, say):
    // call it until every client was accepted or refused, as the event loop would.
    for _ in 0..(w.streams.len() / 16 + 8) {
        w.mux.process_events();
    }
    let mut closed = 0usize;
    let mut buf = [0u8; 1];
    for s in &mut w.streams[before..] {
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    let flooded = w.streams.len() - before;
    assert!(
        flooded - closed <= MAX_HOST,
        "{} of {flooded} flooding clients kept a slot",
        flooded - closed
    );
    w.streams.truncate(before);
}
