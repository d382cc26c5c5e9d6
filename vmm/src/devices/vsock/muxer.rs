//! The host side of hybrid vsock: a Unix listener for host-initiated connections, Unix
//! connections to `<uds>_<port>` for guest-initiated ones, and per-connection credit-based flow
//! control. Owns its own epoll set (nested in the VMM's event loop) so it can be driven and
//! tested on its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hull_contract::vsock::{guest_initiated_path, ok_reply, parse_connect, MAX_REQUEST_LINE};
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
/// Open connections (plus handshakes) at most.
const MAX_CONNECTIONS: usize = 1024;

const TOKEN_LISTENER: u64 = u64::MAX;

/// Epoll token of a connection or handshake: its (non-negative) fd.
fn fd_token(fd: RawFd) -> u64 {
    u64::try_from(fd).unwrap_or(TOKEN_LISTENER - 1)
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

#[derive(Debug)]
struct Connection {
    stream: UnixStream,
    state: ConnState,
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
    /// Control packets owed to the guest.
    ctrl: VecDeque<(u16, u32)>,
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
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            tx_buf: VecDeque::new(),
            early: Vec::new(),
            ctrl: VecDeque::new(),
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

/// A host connection that has not sent its `CONNECT` line yet.
#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// The hybrid vsock back end.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<ConnKey, Connection>,
    handshakes: HashMap<RawFd, Handshake>,
    fd_conn: HashMap<RawFd, ConnKey>,
    /// Connections that may have something for the guest, in service order.
    rx_ready: VecDeque<ConnKey>,
    rx_ready_set: HashSet<ConnKey>,
    /// Packets for no connection (RST to unknown peers).
    rx_orphans: VecDeque<Header>,
    next_local_port: u32,
    /// The device's metrics, which the muxer's connection counters are part of.
    metrics: Arc<VsockMetrics>,
}

impl AsRawFd for Muxer {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

impl Muxer {
    /// Listens on `uds_path` (a stale socket file there is replaced).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, MuxerError> {
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
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
            )
            .map_err(MuxerError::Epoll)?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            epoll,
            conns: HashMap::new(),
            handshakes: HashMap::new(),
            fd_conn: HashMap::new(),
            rx_ready: VecDeque::new(),
            rx_ready_set: HashSet::new(),
            rx_orphans: VecDeque::new(),
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

    /// Whether a packet waits for the guest.
    pub fn has_pending_rx(&self) -> bool {
        !self.rx_orphans.is_empty() || !self.rx_ready.is_empty()
    }

    fn mark_ready(&mut self, key: ConnKey) {
        if self.rx_ready_set.insert(key) {
            self.rx_ready.push_back(key);
        }
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
        if c.state != ConnState::Closing && !c.data_pending {
            want |= EventSet::IN;
        }
        if !c.tx_buf.is_empty() {
            want |= EventSet::OUT;
        }
        self.set_interest(key, want);
    }

    fn add_conn(&mut self, key: ConnKey, conn: Connection) {
        let fd = conn.stream.as_raw_fd();
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
        }
        self.metrics.conns_open.set(self.conns.len() as u64);
        // rx_ready entries for a gone key are skipped when serviced.
    }

    /// Sends RST for `key` and forgets the connection.
    fn reset(&mut self, key: ConnKey) {
        self.remove_conn(key);
        self.queue_orphan_rst(key.0, key.1);
    }

    fn queue_orphan_rst(&mut self, local_port: u32, peer_port: u32) {
        self.metrics.rst_sent.inc();
        let h = self.header(local_port, peer_port, OP_RST, 0, None);
        self.rx_orphans.push_back(h);
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
                            c.ctrl.push_back((OP_CREDIT_UPDATE, 0));
                        }
                    }
                }
                (OP_CREDIT_UPDATE, _) => {}
                (OP_CREDIT_REQUEST, _) => c.ctrl.push_back((OP_CREDIT_UPDATE, 0)),
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
        if self.conns.len() >= MAX_CONNECTIONS {
            self.metrics.conns_refused.inc();
            self.queue_orphan_rst(key.0, key.1);
            return;
        }
        let path = guest_initiated_path(&self.uds_path, key.0);
        let stream = match UnixStream::connect(&path) {
            Ok(s) if s.set_nonblocking(true).is_ok() => s,
            _ => {
                self.metrics.conns_refused.inc();
                self.queue_orphan_rst(key.0, key.1);
                return;
            }
        };
        let mut c = Connection::new(stream, ConnState::Established);
        c.ctrl.push_back((OP_RESPONSE, 0));
        self.add_conn(key, c);
        self.mark_ready(key);
        self.refresh_interest(key);
    }

    // ---- host -> guest -------------------------------------------------------------------

    /// The next packet for the guest with at most `max_data` payload bytes, if any.
    pub fn recv_pkt(&mut self, max_data: usize) -> Option<(Header, Vec<u8>)> {
        if let Some(h) = self.rx_orphans.pop_front() {
            return Some((h, Vec::new()));
        }
        while let Some(key) = self.rx_ready.pop_front() {
            self.rx_ready_set.remove(&key);
            if let Some(pkt) = self.conn_rx(key, max_data) {
                return Some(pkt);
            }
        }
        None
    }

    /// One packet from connection `key`, re-queueing it when it has more.
    fn conn_rx(&mut self, key: ConnKey, max_data: usize) -> Option<(Header, Vec<u8>)> {
        let c = self.conns.get_mut(&key)?;
        if let Some((op, flags)) = c.ctrl.pop_front() {
            c.last_fwd_cnt_sent = c.fwd_cnt;
            let h = {
                let c = &self.conns[&key];
                self.header(key.0, key.1, op, flags, Some(c))
            };
            let c = &self.conns[&key];
            if !c.ctrl.is_empty() || c.data_pending {
                self.mark_ready(key);
            }
            return Some((h, Vec::new()));
        }
        if c.state != ConnState::Established || !c.data_pending {
            return None;
        }
        let credit = usize::try_from(c.peer_credit()).unwrap_or(0);
        let n = credit.min(max_data);
        if n == 0 {
            // Wait for a credit update (or an rx buffer) before reading more.
            return None;
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
                // Host closed: tell the guest, then wait for its RST.
                c.data_pending = false;
                c.state = ConnState::Closing;
                c.ctrl
                    .push_back((OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND));
                self.mark_ready(key);
                self.refresh_interest(key);
                None
            }
            Ok(k) => {
                buf.truncate(k);
                c.rx_cnt += Wrapping(u32::try_from(k).unwrap_or(0));
                c.last_fwd_cnt_sent = c.fwd_cnt;
                self.metrics.rx_bytes.add(k as u64);
                let mut h = {
                    let c = &self.conns[&key];
                    self.header(key.0, key.1, OP_RW, 0, Some(c))
                };
                h.len = u32::try_from(k).unwrap_or(0);
                // Maybe more: keep it in the queue until a read would block.
                self.mark_ready(key);
                Some((h, buf))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                c.data_pending = false;
                self.refresh_interest(key);
                None
            }
            Err(_) => {
                self.reset(key);
                None
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

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() + self.handshakes.len() >= MAX_CONNECTIONS
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
                        self.handshakes.insert(
                            fd,
                            Handshake {
                                stream,
                                buf: Vec::new(),
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
        c.ctrl.push_back((OP_REQUEST, 0));
        // Until the guest answers, we cannot send data: don't watch the stream for input.
        c.data_pending = true;
        self.add_conn(key, c);
        self.mark_ready(key);
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
        let fwd_gap = (c.fwd_cnt - c.last_fwd_cnt_sent).0;
        if fwd_gap >= CREDIT_UPDATE_THRESHOLD {
            c.ctrl.push_back((OP_CREDIT_UPDATE, 0));
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use hull_contract::vsock::{connect_request, parse_ok};

    use super::*;

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
        let mut line = String::new();
        BufReader::new(host.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
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
        assert!(!uds.exists(), "socket file removed");
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
