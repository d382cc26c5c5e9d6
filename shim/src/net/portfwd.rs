//! The host side of CRI PortForward (DESIGN §1).
//!
//! containerd answers PortForward by dialing `localhost:PORT` inside the pod's network
//! namespace (`sandbox_portforward_linux.go`, containerd 1.6: tcp4, then tcp6) and never calls
//! the shim. With tc mirroring nothing listens there: the pod's servers run in the guest. So
//! the shim keeps a listener on the netns' loopback (127.0.0.1 and ::1) for each port the
//! guest's localhost would reach — the agent reports that set through the Network service's
//! `WatchListeners` long poll — and forwards each accepted connection over its own hybrid
//! vsock stream to the agent (hull-proto `portfwd`), which dials localhost in the guest.
//! A port nothing listens on in the guest is refused in the netns too, as with runc.
//!
//! The listeners are made on a thread inside the netns ([`super::run_in`]) and keep the
//! namespace alive while open: [`PortForwarder::stop`] comes before the VM stops.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hull_proto::network::WatchListenersRequest;
use hull_proto::network_ttrpc::NetworkClient;
use hull_proto::portfwd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::NetError;

/// How long one `WatchListeners` call may wait in the agent.
const WATCH_WAIT_MS: u32 = 30_000;
/// The RPC's own deadline, ns: the wait plus room for a slow guest.
const WATCH_DEADLINE_NS: i64 = 45_000_000_000;
/// Pause after a failed watch (the VM is stopping, or the agent is busy).
const RETRY: Duration = Duration::from_secs(1);
/// Calls are at least this far apart, whatever the guest answers: a guest that answers every
/// watch at once with a new set cannot make the shim spin.
const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// At most this many ports are mirrored (each costs two sockets in the shim); a guest that
/// reports more gets its lowest ports mirrored and one warning.
const MAX_PORTS: usize = 256;
/// Bound on opening the vsock stream and the agent's answer to its header.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Mirrors the guest's localhost listeners into a pod's netns while it lives.
#[derive(Debug)]
pub struct PortForwarder {
    run: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl PortForwarder {
    /// Starts mirroring: `netns` is the pod's network namespace path, `vsock` the VM's hybrid
    /// vsock socket, `agent` a client of its agent.
    pub fn start(agent: ttrpc::asynchronous::Client, netns: PathBuf, vsock: PathBuf) -> Self {
        let (stop, stopped) = watch::channel(false);
        let run = tokio::spawn(run(NetworkClient::new(agent), netns, vsock, stopped));
        PortForwarder { run, stop }
    }

    /// Closes every listener and forwarded connection. Idempotent.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        self.run.abort();
    }
}

impl Drop for PortForwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The listeners of one port; dropping it closes them.
struct Mirrored(Vec<JoinHandle<()>>);

impl Drop for Mirrored {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn run(agent: NetworkClient, netns: PathBuf, vsock: PathBuf, stopped: watch::Receiver<bool>) {
    let mut generation = 0;
    let mut open: BTreeMap<u16, Mirrored> = BTreeMap::new();
    let mut warned = false;
    loop {
        let next = tokio::time::Instant::now() + MIN_INTERVAL;
        let req = WatchListenersRequest {
            generation,
            wait_ms: WATCH_WAIT_MS,
            ..Default::default()
        };
        let ctx = ttrpc::context::with_timeout(WATCH_DEADLINE_NS);
        let r = agent.watch_listeners(ctx, &req).await;
        tokio::time::sleep_until(next).await;
        let r = match r {
            Ok(r) => r,
            Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::UNIMPLEMENTED => {
                tracing::warn!("the guest agent has no WatchListeners: PortForward is off");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "WatchListeners");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        generation = r.generation;
        let want: BTreeSet<u16> = r
            .ports
            .iter()
            .filter_map(|&p| u16::try_from(p).ok().filter(|&p| p != 0))
            .collect();
        if want.len() > MAX_PORTS && !std::mem::replace(&mut warned, true) {
            tracing::warn!(ports = want.len(), "the guest listens on more ports than port-forward mirrors ({MAX_PORTS}): the lowest are mirrored");
        }
        let want = cap(want);
        open.retain(|p, _| want.contains(p));
        let new: Vec<u16> = want.into_iter().filter(|p| !open.contains_key(p)).collect();
        if new.is_empty() {
            continue;
        }
        let ns = netns.clone();
        let bound = tokio::task::spawn_blocking(move || bind_in(&ns, new)).await;
        let bound = match bound {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "port-forward listeners");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "port-forward listeners");
                continue;
            }
        };
        for (port, listeners) in bound {
            let tasks = listeners
                .into_iter()
                .map(|l| tokio::spawn(accept_loop(l, port, vsock.clone(), stopped.clone())))
                .collect();
            open.insert(port, Mirrored(tasks));
        }
    }
}

/// The lowest [`MAX_PORTS`] of `ports`.
fn cap(ports: BTreeSet<u16>) -> BTreeSet<u16> {
    ports.into_iter().take(MAX_PORTS).collect()
}

/// Binds 127.0.0.1:P and [::1]:P for each port in the netns. An address that cannot be bound
/// (the port taken in the netns, no ::1 there) is logged and left out; a port is tried again
/// only after it left the guest's set and came back, so a bad port costs one line, not one per
/// watch.
fn bind_in(
    netns: &Path,
    ports: Vec<u16>,
) -> Result<Vec<(u16, Vec<std::net::TcpListener>)>, NetError> {
    super::run_in(netns, move || async move {
        let mut out = Vec::new();
        for port in ports {
            let mut ls = Vec::new();
            let mut failed = Vec::new();
            for ip in [
                std::net::IpAddr::from(Ipv4Addr::LOCALHOST),
                Ipv6Addr::LOCALHOST.into(),
            ] {
                let addr = SocketAddr::new(ip, port);
                match std::net::TcpListener::bind(addr).and_then(|l| {
                    l.set_nonblocking(true)?;
                    Ok(l)
                }) {
                    Ok(l) => ls.push(l),
                    Err(e) => failed.push(format!("{addr}: {e}")),
                }
            }
            if failed.is_empty() {
                tracing::info!(port, "port-forward: mirroring guest port");
            } else {
                tracing::warn!(port, listeners = ls.len(), failed = %failed.join("; "), "port-forward: guest port mirrored in part or not at all");
            }
            out.push((port, ls));
        }
        Ok(out)
    })
}

async fn accept_loop(
    l: std::net::TcpListener,
    port: u16,
    vsock: PathBuf,
    stopped: watch::Receiver<bool>,
) {
    let l = match TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(port, error = %e, "port-forward listener");
            return;
        }
    };
    loop {
        match l.accept().await {
            Ok((c, _)) => {
                let (vsock, mut stopped) = (vsock.clone(), stopped.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = forward(c, port, &vsock) => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "port-forward accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Forwards one accepted connection to the guest's localhost:`port`.
async fn forward(mut c: TcpStream, port: u16, vsock: &Path) {
    let guest = async {
        let mut s =
            hull_proto::connect_stream(vsock, hull_proto::PORTFWD_VSOCK_PORT, CONNECT_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
        tokio::time::timeout(CONNECT_TIMEOUT, portfwd::request(&mut s, port))
            .await
            .map_err(|_| format!("no answer from the guest within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(s)
    };
    match guest.await {
        Ok(mut s) => {
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                tracing::debug!(port, error = %e, "port-forward connection ended");
            }
        }
        Err(e) => {
            tracing::info!(port, error = %e, "port-forward: refused");
            // A reset, not an orderly close: the dialer learns the guest refused.
            let _ = c.set_zero_linger();
        }
    }
}

#[cfg(test)]
#[path = "portfwd_tests.rs"]
mod tests;
