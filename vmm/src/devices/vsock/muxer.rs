//! The host side of hybrid vsock: a Unix listener for host-initiated connections, Unix
//! connections to `<uds>_<port>` for guest-initiated ones, and per-connection credit-based flow
//! control. Owns its own epoll set (nested in the VMM's event loop) so it can be driven and
//! tested on its own.
//!
//! The guest is not trusted: whatever it sends or leaves unanswered costs bounded memory, fds
//! and time ([`Limits`]). A host connection whose REQUEST the guest does not answer, or that we
//! shut down and the guest does not reset, is dropped after [`TIMEOUT`] (a one-shot timerfd in
//! the epoll set); guest- and host-initiated connections are capped apart, so a guest cannot
//! take the host's slots; each connection owes the guest at most one control packet of each
//! kind; RSTs for no connection wait in a queue of bounded length.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hull_contract::vsock::{guest_initiated_path, ok_reply, parse_connect, MAX_REQUEST_LINE};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::metrics::VsockMetrics;
use super::packet::*;

/// What we advertise as our receive buffer per connection: the guest never has more than this
/// in flight towards one host stream.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;
/// Send an explicit credit update once this much was forwarded since the last one.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_ALLOC / 4;
/// Host-side ports for host-initiated connections start here.
const LOCAL_PORT_BASE: u32 = 1 << 30;
/// How long the guest has to answer a host connection's REQUEST, and to reset a connection we
/// shut down, before we drop it (closing the host stream); also how long a host client has to
/// send its `CONNECT` line. Firecracker's value: a live guest answers in microseconds, and the
/// host side retries (the shim until its boot timeout).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Host-initiated connections at once, handshakes included. The shim opens a few ttrpc
/// connections and at most 256 port-forward streams; with the guest's share and the VMM's own
/// fds this stays below the usual soft limit of 1024 open files.
const MAX_HOST_CONNECTIONS: usize = 512;
/// Guest-initiated connections at once. hull's agent opens none; each may hold up to
/// [`CONN_BUF_ALLOC`] bytes the host side has not taken yet (64 × 256 KiB = 16 MiB at most).
const MAX_GUEST_CONNECTIONS: usize = 64;
/// RSTs for no connection waiting for the guest's rx buffers. A guest that sends to unknown
/// ports and never reads gets no more; a dropped RST is counted (`rst_dropped`) and repeated
/// when the guest sends on that connection again.
const MAX_RX_ORPHANS: usize = 256;

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_TIMER: u64 = u64::MAX - 1;

/// Epoll token of a connection or handshake: its (non-negative) fd.
fn fd_token(fd: RawFd) -> u64 {
    // Never taken: fds are non-negative.
    u64::try_from(fd).unwrap_or(TOKEN_TIMER - 1)
}

#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("epoll: {0}")]
    Epoll(std::io::Error),
    #[error("timerfd: {0}")]
    Timer(nix::Error),
}

/// What one guest may cost the host; tests and the fuzz targets shrink them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) host_conns: usize,
    pub(crate) guest_conns: usize,
    pub(crate) rx_orphans: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: TIMEOUT,
            host_conns: MAX_HOST_CONNECTIONS,
            guest_conns: MAX_GUEST_CONNECTIONS,
            rx_orphans: MAX_RX_ORPHANS,
        }
    }
}

/// (host port, guest port)
type ConnKey = (u32, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Host connected and sent CONNECT; waiting for the guest's RESPONSE.
    LocalInit,
    Established,
    /// We told the guest we are done (host EOF); waiting for its RST.
    Closing,
}

/// Control packets owed to the guest, each `(op, flags)` at most once: a CREDIT_UPDATE carries
/// the counters current when it is sent, so a second queued one would add nothing. The queue
/// thus holds at most one of each packet the muxer sends (REQUEST or RESPONSE, CREDIT_UPDATE,
/// SHUTDOWN), however many CREDIT_REQUESTs the guest sends.
#[derive(Debug, Default)]
struct CtrlQueue(VecDeque<(u16, u32)>);

impl CtrlQueue {
    fn push(&mut self, op: u16, flags: u32) {
        if !self.0.contains(&(op, flags)) {
            self.0.push_back((op, flags));
        }
    }
    fn pop(&mut self) -> Option<(u16, u32)> {
        self.0.pop_front()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug)]
struct Connection {
    stream: UnixStream,
    state: ConnState,
    /// The guest opened it (counted against [`Limits::guest_conns`]).
    from_guest: bool,
    /// When it is dropped unless the guest answers (REQUEST) or resets it (after SHUTDOWN).
    deadline: Option<Instant>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    /// Bytes from the guest written to the host stream.
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    /// Guest data not yet accepted by the host stream.
    tx_buf: VecDeque<u8>,
    /// Host data received before the connection was established (sent after CONNECT).
    early: Vec<u8>,
    ctrl: CtrlQueue,
    /// The host stream was readable and has not been drained since.
    data_pending: bool,
    /// Current epoll interest.
    interest: EventSet,
    /// The guest will send no more.
    peer_done_sending: bool,
}

impl Connection {
    fn new(stream: UnixStream, state: ConnState) -> Self {
        Connection {
            stream,
            state,
            from_guest: false,
            deadline: None,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            tx_buf: VecDeque::new(),
            early: Vec::new(),
            ctrl: CtrlQueue::default(),
            data_pending: false,
            interest: EventSet::empty(),
            peer_done_sending: false,
        }
    }

    /// How much the guest can still take.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Writes as much of `tx_buf` to the host stream as it takes; Err means the stream is gone.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.tx_buf.is_empty() {
            let (a, _) = self.tx_buf.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += Wrapping(u32::try_from(n).unwrap_or(0));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// What one connection has for the guest.
#[derive(Debug)]
enum ConnRx {
    Packet(Header, Vec<u8>),
    Nothing,
    /// Data, but the guest's buffer has no room for any.
    BufferTooSmall,
}

/// A host connection that has not sent its `CONNECT` line yet.
#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    buf: Vec<u8>,
    deadline: Instant,
}

/// What waits for the guest's rx buffers: connections that may have a packet, in service
/// order (each at most once, and only while it exists), and RSTs for no connection.
#[derive(Debug, Default)]
struct RxQueue {
    ready: VecDeque<ConnKey>,
    ready_set: HashSet<ConnKey>,
    orphans: VecDeque<Header>,
}

impl RxQueue {
    fn mark(&mut self, key: ConnKey) {
        if self.ready_set.insert(key) {
            self.ready.push_back(key);
        }
    }

    /// Drops a removed connection's entry, so the queue never outgrows the connection caps.
    fn forget(&mut self, key: ConnKey) {
        if self.ready_set.remove(&key) {
            self.ready.retain(|k| *k != key);
        }
    }

    fn pop(&mut self) -> Option<ConnKey> {
        let key = self.ready.pop_front()?;
        self.ready_set.remove(&key);
        Some(key)
    }
}

/// A one-shot timerfd in the muxer's epoll set, armed for the earliest deadline while there is
/// one. Every deadline is `now + timeout`, so a new one is never earlier than the armed one:
/// the timer is armed when idle and re-armed after it fires, never per connection.
#[derive(Debug)]
struct DeadlineTimer {
    fd: TimerFd,
    armed: bool,
}

impl DeadlineTimer {
    fn arm(&mut self, at: Instant) {
        // A zero expiry would disarm the timer.
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        // On failure the next deadline tries again.
        self.armed = self
            .fd
            .set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            )
            .is_ok();
    }
}

/// The hybrid vsock back end.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<ConnKey, Connection>,
    /// How many of `conns` the guest opened.
    guest_conns: usize,
    handshakes: HashMap<RawFd, Handshake>,
    fd_conn: HashMap<RawFd, ConnKey>,
    rx: RxQueue,
    timer: DeadlineTimer,
    limits: Limits,
    next_local_port: u32,
    /// The device's metrics, which the muxer's connection counters are part of.
    metrics: Arc<VsockMetrics>,
}

impl AsRawFd for Muxer {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl Muxer {
    /// Listens on `uds_path` (a stale socket file there is replaced). The file stays when the
    /// muxer goes: once the VM runs, hull-vmm may not unlink anything (`seccomp.rs`); the
    /// directory's owner removes it (the shim removes the pod's).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, MuxerError> {
        Self::with_limits(guest_cid, uds_path, Limits::default())
    }

    pub(crate) fn with_limits(
        guest_cid: u64,
        uds_path: &Path,
        limits: Limits,
    ) -> Result<Self, MuxerError> {
        let listen_err = |source| MuxerError::Listen {
            path: uds_path.to_path_buf(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(uds_path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(uds_path);
            }
        }
        let listener = UnixListener::bind(uds_path).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        // Non-blocking: a read after a re-arm in the same epoll batch finds nothing, not a wait.
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(MuxerError::Timer)?;
        for (fd, token) in [
            (listener.as_raw_fd(), TOKEN_LISTENER),
            (timer.as_fd().as_raw_fd(), TOKEN_TIMER),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(MuxerError::Epoll)?;
        }
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            epoll,
            conns: HashMap::new(),
            guest_conns: 0,
            handshakes: HashMap::new(),
            fd_conn: HashMap::new(),
            rx: RxQueue::default(),
            timer: DeadlineTimer {
                fd: timer,
                armed: false,
            },
            limits,
            next_local_port: LOCAL_PORT_BASE,
            metrics: Arc::default(),
        })
    }

    pub fn metrics(&self) -> &Arc<VsockMetrics> {
        &self.metrics
    }

    #[cfg(test)]
    fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// What the muxer holds now, for the fuzz targets' bound checks after every step.
    #[cfg(fuzzing)]
    pub(crate) fn occupancy(&self) -> crate::fuzzing::Occupancy {
        let conn_max = |f: fn(&Connection) -> usize| self.conns.values().map(f).max();
        crate::fuzzing::Occupancy {
            host_conns: self.host_conns(),
            guest_conns: self.guest_conns,
            conns: self.conns.len(),
            conns_from_guest: self.conns.values().filter(|c| c.from_guest).count(),
            handshakes: self.handshakes.len(),
            fds: self.fd_conn.len(),
            rx_orphans: self.rx.orphans.len(),
            rx_ready: self.rx.ready.len(),
            rx_ready_set: self.rx.ready_set.len(),
            max_ctrl: conn_max(|c| c.ctrl.0.len()).unwrap_or(0),
            max_tx_buf: conn_max(|c| c.tx_buf.len()).unwrap_or(0),
            max_early: conn_max(|c| c.early.len()).unwrap_or(0),
            max_handshake_buf: self
                .handshakes
                .values()
                .map(|h| h.buf.len())
                .max()
                .unwrap_or(0),
        }
    }

    /// Whether a packet waits for the guest.
    pub fn has_pending_rx(&self) -> bool {
        !self.rx.orphans.is_empty() || !self.rx.ready.is_empty()
    }

    fn mark_ready(&mut self, key: ConnKey) {
        self.rx.mark(key);
    }

    /// A deadline `timeout` from now, with the timer armed to see it.
    fn new_deadline(&mut self) -> Instant {
        let at = Instant::now() + self.limits.timeout;
        if !self.timer.armed {
            self.timer.arm(at);
        }
        at
    }

    fn host_conns(&self) -> usize {
        self.conns.len() - self.guest_conns + self.handshakes.len()
    }

    fn set_interest(&mut self, key: ConnKey, want: EventSet) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.interest == want {
            return;
        }
        let fd = c.stream.as_raw_fd();
        let op = if c.interest.is_empty() {
            ControlOperation::Add
        } else if want.is_empty() {
            ControlOperation::Delete
        } else {
            ControlOperation::Modify
        };
        if self
            .epoll
            .ctl(op, fd, EpollEvent::new(want, fd_token(fd)))
            .is_ok()
        {
            c.interest = want;
        }
    }

    /// What epoll should wait for on `key` given its state.
    fn refresh_interest(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        let mut want = EventSet::empty();
        if c.state != ConnState::Closing {
            if c.data_pending {
                // Waiting for the guest (its answer, its credit or its rx buffers) with input
                // unread: not readable interest, which would fire until we read, but still
                // notice the host leaving. A hang-up is always reported; edge-triggered, once.
                want |= EventSet::EDGE_TRIGGERED;
            } else {
                want |= EventSet::IN;
            }
        }
        if !c.tx_buf.is_empty() {
            want |= EventSet::OUT;
        }
        self.set_interest(key, want);
    }

    fn add_conn(&mut self, key: ConnKey, conn: Connection) {
        let fd = conn.stream.as_raw_fd();
        self.guest_conns += usize::from(conn.from_guest);
        self.fd_conn.insert(fd, key);
        self.conns.insert(key, conn);
        self.metrics.conns_opened.inc();
        self.metrics.conns_open.set(self.conns.len() as u64);
    }

    fn remove_conn(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.remove(&key) {
            let fd = c.stream.as_raw_fd();
            if !c.interest.is_empty() {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            }
            self.fd_conn.remove(&fd);
            self.guest_conns -= usize::from(c.from_guest);
        }
        self.rx.forget(key);
        self.metrics.conns_open.set(self.conns.len() as u64);
    }

    /// Sends RST for `key` and forgets the connection.
    fn reset(&mut self, key: ConnKey) {
        self.remove_conn(key);
        self.queue_orphan_rst(key.0, key.1);
    }

    fn queue_orphan_rst(&mut self, local_port: u32, peer_port: u32) {
        if self.rx.orphans.len() >= self.limits.rx_orphans {
            self.metrics.rst_dropped.inc();
            return;
        }
        self.metrics.rst_sent.inc();
        let h = self.header(local_port, peer_port, OP_RST, 0, None);
        self.rx.orphans.push_back(h);
    }

    fn header(
        &self,
        local_port: u32,
        peer_port: u32,
        op: u16,
        flags: u32,
        c: Option<&Connection>,
    ) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: local_port,
            dst_port: peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: c.map_or(0, |c| c.fwd_cnt.0),
        }
    }

    // ---- guest -> host -------------------------------------------------------------------

    /// Handles one packet the guest sent (header already read; `data` is its payload).
    pub fn send_pkt(&mut self, h: &Header, data: &[u8]) {
        if h.op == OP_RW {
            self.metrics.tx_bytes.add(data.len() as u64);
        }
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID || h.type_ != TYPE_STREAM {
            if h.op != OP_RST {
                self.queue_orphan_rst(h.dst_port, h.src_port);
            }
            return;
        }
        let key = (h.dst_port, h.src_port);
        if !self.conns.contains_key(&key) {
            match h.op {
                OP_REQUEST => self.guest_connect(key),
                OP_RST => {}
                _ => self.queue_orphan_rst(key.0, key.1),
            }
            return;
        }
        let mut reset = false;
        let mut remove = false;
        {
            let c = self.conns.get_mut(&key).expect("checked above");
            // More credit lets queued host data go on: checked after the match.
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = Wrapping(h.fwd_cnt);
            match (h.op, c.state) {
                (OP_RESPONSE, ConnState::LocalInit) => {
                    c.state = ConnState::Established;
                    c.deadline = None;
                    let line = ok_reply(key.0);
                    c.tx_buf.extend(line.as_bytes());
                    // The OK line is ours, not guest data: do not count it as forwarded.
                    c.fwd_cnt -= Wrapping(u32::try_from(line.len()).unwrap_or(0));
                    reset = c.flush().is_err();
                    if !c.early.is_empty() {
                        c.data_pending = true;
                    }
                }
                (OP_RW, ConnState::Established) | (OP_RW, ConnState::Closing) => {
                    if c.peer_done_sending || c.tx_buf.len() + data.len() > CONN_BUF_ALLOC as usize
                    {
                        // The guest ignored our credit or wrote after SHUTDOWN.
                        reset = true;
                    } else {
                        c.tx_buf.extend(data);
                        reset = c.flush().is_err();
                        if (c.fwd_cnt - c.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
                            c.ctrl.push(OP_CREDIT_UPDATE, 0);
                        }
                    }
                }
                (OP_CREDIT_UPDATE, _) => {}
                (OP_CREDIT_REQUEST, _) => c.ctrl.push(OP_CREDIT_UPDATE, 0),
                (OP_SHUTDOWN, _) => {
                    if h.flags & SHUTDOWN_SEND != 0 {
                        c.peer_done_sending = true;
                        let _ = c.flush();
                        let _ = c.stream.shutdown(std::net::Shutdown::Write);
                    }
                    if h.flags & (SHUTDOWN_SEND | SHUTDOWN_RCV) == (SHUTDOWN_SEND | SHUTDOWN_RCV) {
                        reset = true;
                    }
                }
                (OP_RST, _) => remove = true,
                _ => reset = true,
            }
        }
        if remove {
            self.remove_conn(key);
            return;
        }
        if reset {
            self.reset(key);
            return;
        }
        let c = &self.conns[&key];
        if !c.ctrl.is_empty() || (c.data_pending && c.peer_credit() > 0) {
            self.mark_ready(key);
        }
        self.refresh_interest(key);
    }

    /// The guest connects to host port `key.0`: dial `<uds>_<port>`.
    fn guest_connect(&mut self, key: ConnKey) {
        if self.guest_conns >= self.limits.guest_conns {
            self.metrics.conns_refused.inc();
            self.queue_orphan_rst(key.0, key.1);
            return;
        }
        let path = guest_initiated_path(&self.uds_path, key.0);
        let stream = match connect_nonblocking(&path) {
            Ok(s) => s,
            Err(_) => {
                self.metrics.conns_refused.inc();
                self.queue_orphan_rst(key.0, key.1);
                return;
            }
        };
        let mut c = Connection::new(stream, ConnState::Established);
        c.from_guest = true;
        c.ctrl.push(OP_RESPONSE, 0);
        self.add_conn(key, c);
        self.mark_ready(key);
        self.refresh_interest(key);
    }

    // ---- host -> guest -------------------------------------------------------------------

    /// The next packet for the guest with at most `max_data` payload bytes, if any.
    pub fn recv_pkt(&mut self, max_data: usize) -> Option<(Header, Vec<u8>)> {
        if let Some(h) = self.rx.orphans.pop_front() {
            return Some((h, Vec::new()));
        }
        // Connections with data for a bigger buffer than this one: still ready afterwards.
        let mut later = Vec::new();
        let mut pkt = None;
        while let Some(key) = self.rx.pop() {
            match self.conn_rx(key, max_data) {
                ConnRx::Packet(h, data) => {
                    pkt = Some((h, data));
                    break;
                }
                ConnRx::BufferTooSmall => later.push(key),
                ConnRx::Nothing => {}
            }
        }
        for key in later {
            self.mark_ready(key);
        }
        pkt
    }

    /// One packet from connection `key`, re-queueing it when it has more.
    fn conn_rx(&mut self, key: ConnKey, max_data: usize) -> ConnRx {
        let Some(c) = self.conns.get_mut(&key) else {
            return ConnRx::Nothing;
        };
        if let Some((op, flags)) = c.ctrl.pop() {
            c.last_fwd_cnt_sent = c.fwd_cnt;
            let h = {
                let c = &self.conns[&key];
                self.header(key.0, key.1, op, flags, Some(c))
            };
            let c = &self.conns[&key];
            if !c.ctrl.is_empty() || c.data_pending {
                self.mark_ready(key);
            }
            return ConnRx::Packet(h, Vec::new());
        }
        if c.state != ConnState::Established || !c.data_pending {
            return ConnRx::Nothing;
        }
        let credit = usize::try_from(c.peer_credit()).unwrap_or(0);
        if credit == 0 {
            // A credit update from the guest makes it ready again.
            return ConnRx::Nothing;
        }
        let n = credit.min(max_data);
        if n == 0 {
            // No room for data in this buffer: stay ready for the next.
            return ConnRx::BufferTooSmall;
        }
        let mut buf = vec![0u8; n];
        let got = if !c.early.is_empty() {
            let k = n.min(c.early.len());
            buf[..k].copy_from_slice(&c.early[..k]);
            c.early.drain(..k);
            Ok(k)
        } else {
            c.stream.read(&mut buf)
        };
        match got {
            Ok(0) => {
                // Host closed: tell the guest, then wait (a while) for its RST.
                c.data_pending = false;
                c.state = ConnState::Closing;
                c.ctrl.push(OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND);
                let at = self.new_deadline();
                if let Some(c) = self.conns.get_mut(&key) {
                    c.deadline = Some(at);
                }
                self.mark_ready(key);
                self.refresh_interest(key);
                ConnRx::Nothing
            }
            Ok(k) => {
                buf.truncate(k);
                c.rx_cnt += Wrapping(u32::try_from(k).unwrap_or(0));
                c.last_fwd_cnt_sent = c.fwd_cnt;
                let gone_host = c.deadline.is_some();
                self.metrics.rx_bytes.add(k as u64);
                if gone_host {
                    // The guest is taking what a departed host left: it has another
                    // `timeout` for the next step.
                    let at = self.new_deadline();
                    if let Some(c) = self.conns.get_mut(&key) {
                        c.deadline = Some(at);
                    }
                }
                let mut h = {
                    let c = &self.conns[&key];
                    self.header(key.0, key.1, OP_RW, 0, Some(c))
                };
                h.len = u32::try_from(k).unwrap_or(0);
                // Maybe more: keep it in the queue until a read would block.
                self.mark_ready(key);
                ConnRx::Packet(h, buf)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                c.data_pending = false;
                self.refresh_interest(key);
                ConnRx::Nothing
            }
            Err(_) => {
                self.reset(key);
                ConnRx::Nothing
            }
        }
    }

    // ---- host events ---------------------------------------------------------------------

    /// Drains the muxer's epoll set (call when its fd is readable).
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(_) => return,
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == TOKEN_LISTENER {
                self.accept_all();
                continue;
            }
            if token == TOKEN_TIMER {
                // EAGAIN when an earlier event of this batch re-armed it: sweeping is harmless.
                let _ = self.timer.fd.wait();
                self.expire();
                continue;
            }
            let Ok(fd) = RawFd::try_from(token) else {
                continue;
            };
            if self.handshakes.contains_key(&fd) {
                self.handshake_readable(fd);
            } else if let Some(key) = self.fd_conn.get(&fd).copied() {
                self.conn_event(key, ev.event_set());
            }
        }
    }

    /// Drops every connection and handshake past its deadline, then arms the timer for the
    /// next one. A dropped connection's host stream closes; the guest gets an RST.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            self.metrics.conns_timed_out.inc();
            self.reset(key);
        }
        let late: Vec<RawFd> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in late {
            self.metrics.conns_timed_out.inc();
            self.drop_handshake(fd);
        }
        self.timer.armed = false;
        let next = self
            .conns
            .values()
            .filter_map(|c| c.deadline)
            .chain(self.handshakes.values().map(|h| h.deadline))
            .min();
        if let Some(at) = next {
            self.timer.arm(at);
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.host_conns() >= self.limits.host_conns
                        || stream.set_nonblocking(true).is_err()
                    {
                        self.metrics.conns_refused.inc();
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    if self
                        .epoll
                        .ctl(
                            ControlOperation::Add,
                            fd,
                            EpollEvent::new(EventSet::IN, fd_token(fd)),
                        )
                        .is_ok()
                    {
                        let deadline = self.new_deadline();
                        self.handshakes.insert(
                            fd,
                            Handshake {
                                stream,
                                buf: Vec::new(),
                                deadline,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn drop_handshake(&mut self, fd: RawFd) {
        if self.handshakes.remove(&fd).is_some() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }

    fn handshake_readable(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut tmp = [0u8; MAX_REQUEST_LINE];
        let n = match hs.stream.read(&mut tmp) {
            Ok(0) => return self.drop_handshake(fd),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => return self.drop_handshake(fd),
        };
        hs.buf.extend_from_slice(&tmp[..n]);
        let Some(nl) = hs.buf.iter().position(|b| *b == b'\n') else {
            if hs.buf.len() >= MAX_REQUEST_LINE {
                self.drop_handshake(fd);
            }
            return;
        };
        let Some(port) = parse_connect(&hs.buf[..nl]) else {
            return self.drop_handshake(fd);
        };
        let early = hs.buf[nl + 1..].to_vec();
        let Some(hs) = self.handshakes.remove(&fd) else {
            return;
        };
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        let local = self.alloc_local_port(port);
        let key = (local, port);
        let mut c = Connection::new(hs.stream, ConnState::LocalInit);
        c.early = early;
        c.ctrl.push(OP_REQUEST, 0);
        // The guest has `timeout` to answer; the host stream closes if it does not.
        c.deadline = Some(self.new_deadline());
        // Until the guest answers, we cannot send data: don't watch the stream for input
        // (only for the host leaving).
        c.data_pending = true;
        self.add_conn(key, c);
        self.mark_ready(key);
        self.refresh_interest(key);
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(LOCAL_PORT_BASE);
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    fn conn_event(&mut self, key: ConnKey, set: EventSet) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if set.contains(EventSet::OUT) && c.flush().is_err() {
            return self.reset(key);
        }
        let hung_up = set.contains(EventSet::HANG_UP);
        if hung_up && c.state == ConnState::LocalInit {
            // The host gave up before the guest answered.
            return self.reset(key);
        }
        if hung_up && c.state == ConnState::Established && c.deadline.is_none() {
            // The host left; what it wrote may still wait for the guest (credit, rx buffers):
            // the guest has `timeout` to take each next part, or the connection goes.
            let at = self.new_deadline();
            if let Some(c) = self.conns.get_mut(&key) {
                c.deadline = Some(at);
            }
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let fwd_gap = (c.fwd_cnt - c.last_fwd_cnt_sent).0;
        if fwd_gap >= CREDIT_UPDATE_THRESHOLD {
            c.ctrl.push(OP_CREDIT_UPDATE, 0);
        }
        if set
            .intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR)
            && c.state == ConnState::Established
        {
            c.data_pending = true;
        }
        let ready = !c.ctrl.is_empty() || c.data_pending;
        if ready {
            self.mark_ready(key);
        }
        self.refresh_interest(key);
        // A hung-up stream in a state where we do not read it: drop it.
        if set.contains(EventSet::ERROR) {
            self.reset(key);
        }
    }
}

/// Connects to a host listener for a guest-initiated stream without blocking the event loop:
/// a blocking connect to a listener whose backlog is full waits until it accepts, and every
/// device, the API and the other streams wait with it. Non-blocking, a full backlog is EAGAIN,
/// which the guest sees as a refused connection. (A Unix stream connect never returns
/// EINPROGRESS: it either connects at once or fails.)
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use hull_contract::vsock::{connect_request, parse_ok};

    use super::*;

    /// A guest-initiated connection to a host listener that does not accept, its backlog full,
    /// is refused at once instead of blocking the event loop.
    #[test]
    fn a_full_backlog_refuses_instead_of_blocking() {
        use nix::sys::socket::{
            bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.sock");
        let l = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(l.as_raw_fd(), &UnixAddr::new(&path).expect("addr")).expect("bind");
        listen(&l, Backlog::new(0).expect("backlog")).expect("listen");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let refused = loop {
                match connect_nonblocking(&p) {
                    Ok(s) if held.len() < 64 => held.push(s),
                    Ok(_) => break None,
                    Err(e) => break Some(e.kind()),
                }
            };
            let _ = tx.send((held.len(), refused));
        });
        let (accepted, refused) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("connect blocked on a full backlog");
        assert_eq!(
            refused,
            Some(ErrorKind::WouldBlock),
            "after {accepted} pending"
        );
        drop(l);
    }

    const CID: u64 = 3;

    fn guest_hdr(src_port: u32, dst_port: u32, op: u16, len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 64 * 1024,
            fwd_cnt: 0,
        }
    }

    fn pump(m: &mut Muxer) {
        for _ in 0..5 {
            m.process_events();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Small limits and a short timeout, so the tests reach them quickly.
    const SMALL: Limits = Limits {
        timeout: Duration::from_millis(200),
        host_conns: 4,
        guest_conns: 2,
        rx_orphans: 8,
    };

    fn small_muxer() -> (tempfile::TempDir, PathBuf, Muxer) {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let m = Muxer::with_limits(CID, &uds, SMALL).unwrap();
        (dir, uds, m)
    }

    /// Waits past the timeout, then lets the muxer see its timer.
    fn after_timeout(m: &mut Muxer) {
        std::thread::sleep(SMALL.timeout + Duration::from_millis(50));
        pump(m);
    }

    fn host_connect(uds: &Path, port: u32) -> UnixStream {
        let mut s = UnixStream::connect(uds).unwrap();
        s.write_all(connect_request(port).as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s
    }

    /// Whether the host end was closed by the muxer (EOF, or a reset).
    fn closed(s: &mut UnixStream) -> bool {
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// The host's next line (the muxer's `OK` reply).
    fn host_line(host: &UnixStream) -> String {
        let mut line = String::new();
        BufReader::new(host.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        line
    }

    fn drain(m: &mut Muxer) -> Vec<Header> {
        std::iter::from_fn(|| m.recv_pkt(4096))
            .map(|(h, _)| h)
            .collect()
    }

    /// The guest accepts the connection `req` asked for.
    fn answer(m: &mut Muxer, req: &Header) {
        m.send_pkt(&guest_hdr(req.dst_port, req.src_port, OP_RESPONSE, 0), &[]);
    }

    #[test]
    fn a_request_the_guest_never_answers_times_out() {
        let (_dir, uds, mut m) = small_muxer();
        let mut silent = host_connect(&uds, 1024);
        let mut live = host_connect(&uds, 1025);
        pump(&mut m);
        let reqs = drain(&mut m);
        assert_eq!(reqs.len(), 2);
        assert!(reqs.iter().all(|h| h.op == OP_REQUEST));
        let live_req = *reqs.iter().find(|h| h.dst_port == 1025).unwrap();
        let silent_req = *reqs.iter().find(|h| h.dst_port == 1024).unwrap();
        answer(&mut m, &live_req);
        assert!(m.timer.armed, "a deadline is pending");
        after_timeout(&mut m);
        // The unanswered one is gone: host stream closed, guest told, state freed.
        assert_eq!(m.connection_count(), 1);
        assert!(closed(&mut silent));
        let rst = drain(&mut m);
        assert_eq!(rst.len(), 1);
        assert_eq!(
            (rst[0].op, rst[0].src_port, rst[0].dst_port),
            (OP_RST, silent_req.src_port, 1024)
        );
        assert_eq!(m.metrics.conns_timed_out.get(), 1);
        assert!(!m.timer.armed, "nothing left to wait for");
        // The answered one still works.
        let line = host_line(&live);
        assert!(line.starts_with("OK "));
        live.write_all(b"x").unwrap();
        pump(&mut m);
        assert_eq!(m.recv_pkt(4096).unwrap().1, b"x");
        // A late answer finds nothing and is reset.
        answer(&mut m, &silent_req);
        assert_eq!(m.connection_count(), 1);
        assert_eq!(drain(&mut m)[0].op, OP_RST);
    }

    #[test]
    fn a_shutdown_the_guest_never_resets_times_out() {
        let (_dir, uds, mut m) = small_muxer();
        let host = host_connect(&uds, 1024);
        pump(&mut m);
        let req = drain(&mut m)[0];
        answer(&mut m, &req);
        // Read the OK line first: closing with unread data would be a reset, not an EOF.
        assert!(host_line(&host).starts_with("OK "));
        drop(host);
        pump(&mut m);
        assert!(drain(&mut m).iter().any(|h| h.op == OP_SHUTDOWN));
        assert_eq!(m.connection_count(), 1, "waiting for the guest's RST");
        // The guest keeps asking for credit but never resets: it still goes.
        m.send_pkt(&guest_hdr(1024, req.src_port, OP_CREDIT_REQUEST, 0), &[]);
        after_timeout(&mut m);
        assert_eq!(m.connection_count(), 0);
        let pkts = drain(&mut m);
        assert_eq!(pkts.last().map(|h| h.op), Some(OP_RST));
        assert_eq!(m.metrics.conns_timed_out.get(), 1);
        assert!(m.fd_conn.is_empty() && m.rx.ready.is_empty());
    }

    #[test]
    fn a_host_leaving_while_the_guest_waits_is_noticed() {
        let (_dir, uds, mut m) = small_muxer();
        // Before the guest answers: dropped at once, no timeout needed.
        let host = host_connect(&uds, 1024);
        pump(&mut m);
        let req = drain(&mut m)[0];
        drop(host);
        pump(&mut m);
        assert_eq!(m.connection_count(), 0);
        assert_eq!(drain(&mut m)[0].op, OP_RST);
        assert_eq!(m.metrics.conns_timed_out.get(), 0);
        // The guest answers with no credit and never gives any: the host writes, leaves, and
        // its connection goes after the timeout instead of holding its fd and slot for ever.
        let mut host = host_connect(&uds, 1024);
        pump(&mut m);
        let req2 = drain(&mut m)[0];
        assert_ne!(req2.src_port, req.src_port);
        let mut resp = guest_hdr(1024, req2.src_port, OP_RESPONSE, 0);
        resp.buf_alloc = 0;
        m.send_pkt(&resp, &[]);
        assert!(host_line(&host).starts_with("OK "));
        host.write_all(b"data for nobody").unwrap();
        drop(host);
        pump(&mut m);
        assert!(drain(&mut m).is_empty(), "no credit, nothing sent");
        assert_eq!(m.connection_count(), 1);
        after_timeout(&mut m);
        assert_eq!(m.connection_count(), 0);
        assert_eq!(m.metrics.conns_timed_out.get(), 1);
        assert_eq!(drain(&mut m)[0].op, OP_RST);
        // Credit for part of it, then none: the same once the guest stops taking more.
        let mut host = host_connect(&uds, 1024);
        pump(&mut m);
        let req3 = drain(&mut m)[0];
        let mut resp = guest_hdr(1024, req3.src_port, OP_RESPONSE, 0);
        resp.buf_alloc = 10;
        m.send_pkt(&resp, &[]);
        assert!(host_line(&host).starts_with("OK "));
        // Nothing to read yet: the stream is watched for input again when the host leaves.
        assert!(m.recv_pkt(4096).is_none());
        host.write_all(&[7u8; 100]).unwrap();
        drop(host);
        pump(&mut m);
        let got: usize = std::iter::from_fn(|| m.recv_pkt(4096))
            .map(|(_, d)| d.len())
            .sum();
        assert_eq!(got, 10);
        pump(&mut m);
        after_timeout(&mut m);
        assert_eq!(m.connection_count(), 0);
        assert_eq!(m.metrics.conns_timed_out.get(), 2);
    }

    #[test]
    fn data_waits_for_an_rx_buffer_with_room() {
        let (_dir, uds, mut m) = small_muxer();
        let mut host = host_connect(&uds, 1024);
        pump(&mut m);
        let req = drain(&mut m)[0];
        answer(&mut m, &req);
        host.write_all(b"ping").unwrap();
        pump(&mut m);
        // A buffer with room for a header only: nothing fits, but the data stays ready.
        assert!(m.recv_pkt(0).is_none());
        assert!(m.has_pending_rx());
        let (h, d) = m.recv_pkt(4096).unwrap();
        assert_eq!((h.op, &d[..]), (OP_RW, &b"ping"[..]));
    }

    #[test]
    fn a_guest_flooding_unknown_ports_gets_a_bounded_rst_queue() {
        let (_dir, uds, mut m) = small_muxer();
        for port in 0..10_000 {
            m.send_pkt(&guest_hdr(port, 7, OP_RW, 1), b"x");
        }
        assert_eq!(m.rx.orphans.len(), SMALL.rx_orphans);
        assert_eq!(m.metrics.rst_sent.get(), 8);
        assert_eq!(m.metrics.rst_dropped.get(), 10_000 - 8);
        assert_eq!(drain(&mut m).len(), 8);
        // Once the guest reads them, new RSTs are queued again.
        m.send_pkt(&guest_hdr(1, 7, OP_RW, 1), b"x");
        assert_eq!(drain(&mut m).len(), 1);
        // Connections opened and reset without the guest ever reading leave nothing queued.
        let _l = UnixListener::bind(guest_initiated_path(&uds, 7)).unwrap();
        for port in 0..1_000 {
            m.send_pkt(&guest_hdr(port, 7, OP_REQUEST, 0), &[]);
            m.send_pkt(&guest_hdr(port, 7, OP_RST, 0), &[]);
        }
        assert_eq!(m.connection_count(), 0);
        assert!(m.rx.ready.is_empty() && m.rx.ready_set.is_empty());
        assert!(!m.has_pending_rx());
    }

    #[test]
    fn a_guest_flooding_control_packets_gets_one_answer() {
        let (_dir, uds, mut m) = small_muxer();
        let _l = UnixListener::bind(guest_initiated_path(&uds, 7)).unwrap();
        m.send_pkt(&guest_hdr(3000, 7, OP_REQUEST, 0), &[]);
        for _ in 0..10_000 {
            m.send_pkt(&guest_hdr(3000, 7, OP_CREDIT_REQUEST, 0), &[]);
            m.send_pkt(&guest_hdr(3000, 7, OP_CREDIT_UPDATE, 0), &[]);
        }
        assert_eq!(m.conns[&(7, 3000)].ctrl.0.len(), 2);
        let ops: Vec<u16> = drain(&mut m).iter().map(|h| h.op).collect();
        assert_eq!(ops, [OP_RESPONSE, OP_CREDIT_UPDATE]);
        // After it is sent, the next request is answered again.
        m.send_pkt(&guest_hdr(3000, 7, OP_CREDIT_REQUEST, 0), &[]);
        assert_eq!(drain(&mut m).len(), 1);
    }

    #[test]
    fn connection_caps_hold_and_free_up() {
        let (_dir, uds, mut m) = small_muxer();
        // The guest fills its own share; host connections are not affected.
        let _l = UnixListener::bind(guest_initiated_path(&uds, 7)).unwrap();
        for port in 3000..3003 {
            m.send_pkt(&guest_hdr(port, 7, OP_REQUEST, 0), &[]);
        }
        assert_eq!(m.connection_count(), 2);
        assert_eq!(m.metrics.conns_refused.get(), 1);
        let mut hosts: Vec<UnixStream> = (0..4).map(|_| host_connect(&uds, 1024)).collect();
        // A client that never sends its CONNECT line still holds a slot, for a while.
        let mut mute = UnixStream::connect(&uds).unwrap();
        mute.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        pump(&mut m);
        assert_eq!(m.connection_count(), 2 + 4);
        assert!(closed(&mut mute), "the fifth host connection is refused");
        let reqs: Vec<Header> = drain(&mut m)
            .into_iter()
            .filter(|h| h.op == OP_REQUEST)
            .collect();
        assert_eq!(reqs.len(), 4);
        // One closes properly (guest answers, host leaves, guest resets): its slot is free.
        answer(&mut m, &reqs[0]);
        drop(hosts.remove(0));
        pump(&mut m);
        drain(&mut m);
        m.send_pkt(&guest_hdr(1024, reqs[0].src_port, OP_RST, 0), &[]);
        let _next = host_connect(&uds, 1024);
        pump(&mut m);
        assert_eq!(
            drain(&mut m).iter().filter(|h| h.op == OP_REQUEST).count(),
            1
        );
        // The guest answers none of the others: after the timeout every host slot is free.
        let mute = UnixStream::connect(&uds).unwrap();
        after_timeout(&mut m);
        assert_eq!(m.connection_count(), 2, "only the guest's own");
        assert!(m.handshakes.is_empty(), "the mute client was dropped too");
        drop(mute);
        assert!(hosts.iter_mut().all(closed));
        let _more: Vec<UnixStream> = (0..4).map(|_| host_connect(&uds, 1024)).collect();
        pump(&mut m);
        assert_eq!(m.connection_count(), 2 + 4);
    }

    #[test]
    fn host_initiated_connect_handshake_and_data_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::new(CID, &uds).unwrap();
        let mut host = UnixStream::connect(&uds).unwrap();
        host.write_all(connect_request(1024).as_bytes()).unwrap();
        pump(&mut m);
        let (req, _) = m.recv_pkt(4096).expect("REQUEST");
        assert_eq!((req.op, req.dst_port, req.dst_cid), (OP_REQUEST, 1024, CID));
        let local = req.src_port;
        m.send_pkt(&guest_hdr(1024, local, OP_RESPONSE, 0), &[]);
        let line = host_line(&host);
        assert_eq!(parse_ok(line.trim_end().as_bytes()), Some(local));
        // host -> guest
        host.write_all(b"ping").unwrap();
        pump(&mut m);
        let (rw, data) = m.recv_pkt(4096).expect("RW");
        assert_eq!((rw.op, &data[..]), (OP_RW, &b"ping"[..]));
        // guest -> host
        m.send_pkt(&guest_hdr(1024, local, OP_RW, 4), b"pong");
        let mut b = [0u8; 4];
        host.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
        // host closes -> guest gets SHUTDOWN; guest RST -> gone
        drop(host);
        pump(&mut m);
        let mut saw_shutdown = false;
        while let Some((h, _)) = m.recv_pkt(4096) {
            saw_shutdown |= h.op == OP_SHUTDOWN;
        }
        assert!(saw_shutdown);
        m.send_pkt(&guest_hdr(1024, local, OP_RST, 0), &[]);
        assert_eq!(m.connection_count(), 0);
        drop(m);
        // The file stays (no unlink once the VM runs); the next muxer on the path replaces it.
        assert!(uds.exists());
        let _next = Muxer::new(CID, &uds).expect("a stale socket file is replaced");
        UnixStream::connect(&uds).expect("the new listener answers");
    }

    #[test]
    fn credit_limits_host_to_guest_data() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::new(CID, &uds).unwrap();
        let mut host = UnixStream::connect(&uds).unwrap();
        host.write_all(connect_request(5).as_bytes()).unwrap();
        pump(&mut m);
        let (req, _) = m.recv_pkt(4096).unwrap();
        let local = req.src_port;
        let mut resp = guest_hdr(5, local, OP_RESPONSE, 0);
        resp.buf_alloc = 10;
        m.send_pkt(&resp, &[]);
        host.write_all(&[7u8; 100]).unwrap();
        pump(&mut m);
        let mut got = 0;
        while let Some((h, d)) = m.recv_pkt(4096) {
            assert_eq!(h.op, OP_RW);
            got += d.len();
        }
        assert_eq!(got, 10, "no more than the guest's credit");
        // Guest consumed 10 bytes and says so.
        let mut upd = guest_hdr(5, local, OP_CREDIT_UPDATE, 0);
        upd.buf_alloc = 10;
        upd.fwd_cnt = 10;
        m.send_pkt(&upd, &[]);
        let (_, d) = m.recv_pkt(4096).unwrap();
        assert_eq!(d.len(), 10);
    }

    #[test]
    fn guest_initiated_connections_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::new(CID, &uds).unwrap();
        // Nobody listens on port 7: RST.
        m.send_pkt(&guest_hdr(3000, 7, OP_REQUEST, 0), &[]);
        assert_eq!(m.recv_pkt(4096).unwrap().0.op, OP_RST);
        let listener = UnixListener::bind(guest_initiated_path(&uds, 7)).unwrap();
        m.send_pkt(&guest_hdr(3000, 7, OP_REQUEST, 0), &[]);
        assert_eq!(m.recv_pkt(4096).unwrap().0.op, OP_RESPONSE);
        let (mut s, _) = listener.accept().unwrap();
        m.send_pkt(&guest_hdr(3000, 7, OP_RW, 2), b"hi");
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        // Several streams at once.
        for port in 3001..3010 {
            m.send_pkt(&guest_hdr(port, 7, OP_REQUEST, 0), &[]);
        }
        assert_eq!(m.connection_count(), 10);
        // Wrong CID, wrong type, data for an unknown connection: RST, nothing created.
        let mut bad = guest_hdr(4000, 7, OP_RW, 0);
        bad.src_cid = 99;
        m.send_pkt(&bad, &[]);
        let mut bad = guest_hdr(4000, 7, OP_REQUEST, 0);
        bad.type_ = 2;
        m.send_pkt(&bad, &[]);
        m.send_pkt(&guest_hdr(4001, 7, OP_RW, 1), b"x");
        assert_eq!(m.connection_count(), 10);
        let rsts = std::iter::from_fn(|| m.recv_pkt(4096))
            .filter(|(h, _)| h.op == OP_RST)
            .count();
        assert_eq!(rsts, 3);
    }

    #[test]
    fn bad_handshakes_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::new(CID, &uds).unwrap();
        let mut a = UnixStream::connect(&uds).unwrap();
        a.write_all(b"HELLO\n").unwrap();
        let mut b = UnixStream::connect(&uds).unwrap();
        b.write_all(&[b'x'; 64]).unwrap();
        pump(&mut m);
        assert!(!m.has_pending_rx());
        let mut buf = [0u8; 1];
        a.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        assert_eq!(a.read(&mut buf).unwrap(), 0, "closed");
    }

    #[test]
    fn guest_overrunning_credit_is_reset() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let mut m = Muxer::new(CID, &uds).unwrap();
        let listener = UnixListener::bind(guest_initiated_path(&uds, 9)).unwrap();
        m.send_pkt(&guest_hdr(3000, 9, OP_REQUEST, 0), &[]);
        let _ = m.recv_pkt(4096);
        let (_s, _) = listener.accept().unwrap(); // never reads
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..16 {
            m.send_pkt(&guest_hdr(3000, 9, OP_RW, 65536), &chunk);
        }
        assert_eq!(m.connection_count(), 0);
    }
}
