//! The guest side of CRI PortForward (DESIGN §1).
//!
//! containerd's PortForward dials `localhost:PORT` inside the pod's network namespace on the
//! host, where nothing listens: the pod's traffic is mirrored into the guest below IP. So the
//! agent tells the shim which ports a dial of localhost would reach in the guest
//! ([`listening_ports`], served by the Network service's `WatchListeners` long poll), the
//! shim listens on those ports on the netns' loopback, and each connection it accepts comes
//! here as one stream on vsock port 1025 ([`serve`]): header `PORT n` (hull-proto's
//! `portfwd`), then the agent dials localhost:n in the guest and copies both ways.
//!
//! Listeners are found by reading `/proc/net/tcp{,6}`: Linux has no notification for a new
//! listening socket. A sock_diag dump filtered to listeners would walk fewer sockets; a pod's
//! guest has few, and the text tables need no netlink code. The poll runs only while a
//! `WatchListeners` call waits.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hull_proto::portfwd;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::ListenAddr;

/// How often the listener set is re-read while a watch waits: the lag between a server's
/// `listen()` and a port-forward that can reach it.
const POLL: Duration = Duration::from_millis(250);
/// The longest wait a caller may ask for.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);
/// Bound on dialing the guest server; a loopback dial answers at once unless the backlog is full.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a host that connects and never sends its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Port-forward streams open at once; more are closed at once (the host resets its client).
/// Each holds two of the agent's fds, and the agent's must stay available to its containers.
const MAX_STREAMS: usize = 256;
/// `st` of a listening socket in `/proc/net/tcp` (TCP_LISTEN).
const TCP_LISTEN: &str = "0A";

/// Where the kernel lists the TCP sockets of the agent's network namespace.
pub(crate) fn proc_net() -> PathBuf {
    PathBuf::from("/proc/net")
}

/// The TCP ports listening on a wildcard or loopback address: exactly those a dial of
/// `localhost` reaches (a server bound only to the pod IP is not reachable that way, as with
/// runc). IPv4 and IPv6 together.
pub(crate) async fn listening_ports(proc_net: &Path) -> std::io::Result<BTreeSet<u16>> {
    let mut ports = BTreeSet::new();
    for file in ["tcp", "tcp6"] {
        match tokio::fs::read_to_string(proc_net.join(file)).await {
            Ok(text) => ports.extend(parse(&text)),
            // A kernel without IPv6 has no tcp6.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file == "tcp6" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ports)
}

/// The reachable listening ports in one `/proc/net/tcp` or `tcp6` table. Lines that do not
/// parse are skipped (the format is the kernel's, stable since 2.6).
fn parse(text: &str) -> impl Iterator<Item = u16> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut cols = line.split_whitespace();
        let local = cols.nth(1)?;
        let state = cols.nth(1)?;
        if state != TCP_LISTEN {
            return None;
        }
        let (addr, port) = local.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        reachable_from_localhost(addr).then_some(port)
    })
}

/// Whether a local address of the table (hex, in the kernel's in-memory byte order: each
/// 32-bit word printed as a host-endian number) accepts a dial of 127.0.0.1 or ::1, the two
/// addresses the agent dials (a server on 127.0.0.2 would not be reached: not reported).
fn reachable_from_localhost(hex: &str) -> bool {
    let words = match hex.len() {
        8 | 32 => hex
            .as_bytes()
            .chunks(8)
            .map(|w| {
                std::str::from_utf8(w)
                    .ok()
                    .and_then(|w| u32::from_str_radix(w, 16).ok())
                    // The word was printed from memory read as a host-endian u32: its bytes in
                    // memory order are the address bytes in network order.
                    .map(u32::to_ne_bytes)
            })
            .collect::<Option<Vec<[u8; 4]>>>(),
        _ => None,
    };
    let Some(words) = words else { return false };
    let bytes: Vec<u8> = words.concat();
    match bytes.len() {
        4 => {
            let ip = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
            ip.is_unspecified() || ip == Ipv4Addr::LOCALHOST
        }
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes);
            let ip = Ipv6Addr::from(b);
            ip.is_unspecified()
                || ip.is_loopback()
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4 == Ipv4Addr::LOCALHOST || v4.is_unspecified())
        }
        _ => false,
    }
}

/// A name for a port set: equal sets, equal generations; never 0 (the caller's "none yet").
pub(crate) fn generation(ports: &BTreeSet<u16>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ports.hash(&mut h);
    h.finish().max(1)
}

/// Waits until the listener set's generation differs from `known` or `wait` has passed, and
/// returns the set as it is then.
pub(crate) async fn watch(
    proc_net: &Path,
    known: u64,
    wait: Duration,
) -> std::io::Result<(u64, BTreeSet<u16>)> {
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    loop {
        let ports = listening_ports(proc_net).await?;
        let generation = generation(&ports);
        if generation != known || tokio::time::Instant::now() >= deadline {
            return Ok((generation, ports));
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + POLL)).await;
    }
}

/// Serves one port-forward stream: reads the header, dials the guest port, answers, then
/// copies both ways until both directions are done. Errors end this stream only.
pub(crate) async fn serve<S>(mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let port = match tokio::time::timeout(HEADER_TIMEOUT, portfwd::read_request(&mut stream)).await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::warn!("port-forward: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("port-forward: no header within {HEADER_TIMEOUT:?}");
            return;
        }
    };
    let conn = match dial(port).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(port, "port-forward: {e}");
            let _ = portfwd::reply(&mut stream, Err(e)).await;
            return;
        }
    };
    if portfwd::reply(&mut stream, Ok(())).await.is_err() {
        return;
    }
    portfwd::splice(stream, conn).await;
}

/// Binds the port-forward listener and serves each stream in a task of its own, at most
/// [`MAX_STREAMS`] at once (more are closed at once).
pub fn start(addr: &ListenAddr) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(MAX_STREAMS));
    crate::listener::spawn(addr, "port-forward", move |s| {
        match limit.clone().try_acquire_owned() {
            Ok(permit) => drop(tokio::spawn(async move {
                serve(s).await;
                drop(permit);
            })),
            Err(_) => tracing::warn!("port-forward: {MAX_STREAMS} streams open; closing a new one"),
        }
    })
}

/// Dials localhost:`port` in the guest, IPv4 first and then IPv6, the order containerd uses
/// when it dials in a runc pod's namespace.
async fn dial(port: u16) -> Result<TcpStream, String> {
    let mut why = Vec::new();
    for ip in [
        std::net::IpAddr::from(Ipv4Addr::LOCALHOST),
        Ipv6Addr::LOCALHOST.into(),
    ] {
        let addr = SocketAddr::new(ip, port);
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => why.push(format!("dial {addr}: {e}")),
            Err(_) => why.push(format!("dial {addr}: no answer within {DIAL_TIMEOUT:?}")),
        }
    }
    Err(why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a 6.12 kernel: 0.0.0.0:80 and 127.0.0.1:8080 listening, 10.88.0.5:9000
    // listening (pod IP only), an established 127.0.0.1:8080 connection, a socket in
    // TIME_WAIT on 0.0.0.0:81, and 127.0.0.2:9001 listening (the agent dials 127.0.0.1 only).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0500580A:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 20 4 30 10 -1
   4: 00000000:0051 00000000:0000 06 00000000:00000000 03:00000FA0 00000000     0        0 0 3 0000000000000000
   5: 0200007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1005 1 0000000000000000 100 0 0 10 0
";
    // [::]:443, [::1]:5000, [fd88::5]:6000 (pod IP only), [::ffff:127.0.0.1]:7000 listening.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1388 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
   2: 000088FD000000000000000005000000:1770 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0000000000000000 100 0 0 10 0
   3: 0000000000000000FFFF00000100007F:1B58 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2004 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_wildcard_and_loopback_listeners_count() {
        assert_eq!(parse(TCP).collect::<Vec<_>>(), [80, 8080]);
        assert_eq!(parse(TCP6).collect::<Vec<_>>(), [443, 5000, 7000]);
        assert_eq!(parse("header only\n").count(), 0);
        assert_eq!(
            parse("hdr\n  0: zz:1 00:0 0A\n  1: 0100007F 0:0 0A\n").count(),
            0
        );
    }

    #[tokio::test]
    async fn both_tables_together_and_generations_name_sets() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tcp"), TCP).expect("write");
        let v4: BTreeSet<u16> = [80, 8080].into();
        assert_eq!(listening_ports(dir.path()).await.expect("read"), v4);
        std::fs::write(dir.path().join("tcp6"), TCP6).expect("write");
        let both: BTreeSet<u16> = [80, 443, 5000, 7000, 8080].into();
        assert_eq!(listening_ports(dir.path()).await.expect("read"), both);
        assert_eq!(generation(&both), generation(&both.clone()));
        assert_ne!(generation(&both), generation(&v4));
        assert_ne!(generation(&BTreeSet::new()), 0);
        std::fs::remove_file(dir.path().join("tcp")).expect("rm");
        assert!(listening_ports(dir.path()).await.is_err());
    }

    #[tokio::test]
    async fn a_watch_answers_at_once_for_news_and_after_its_wait_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tcp"), TCP).expect("write");
        let (g, ports) = watch(dir.path(), 0, MAX_WAIT).await.expect("watch");
        assert_eq!(ports, [80, 8080].into());
        let t0 = std::time::Instant::now();
        let (same, _) = watch(dir.path(), g, Duration::from_millis(300))
            .await
            .expect("watch");
        assert_eq!(same, g);
        assert!(t0.elapsed() >= Duration::from_millis(300));
        let path = dir.path().to_owned();
        let change = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::fs::write(path.join("tcp6"), TCP6).expect("write");
        });
        let (next, ports) = watch(dir.path(), g, MAX_WAIT).await.expect("watch");
        change.await.expect("writer");
        assert_ne!(next, g);
        assert!(ports.contains(&443));
    }
}
