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
use std::sync::Arc;
use std::time::Duration;

use hull_proto::network::WatchListenersRequest;
use hull_proto::network_ttrpc::NetworkClient;
use hull_proto::portfwd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
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
/// Forwarded connections open at once per pod; more are reset. Each holds a hull-vmm vsock
/// connection and two agent fds.
const MAX_CONNECTIONS: usize = 256;
/// Bound on opening the vsock stream and the agent's answer to its header.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Mirrors the guest's localhost listeners into a pod's netns while it lives.
#[derive(Debug)]
pub(crate) struct PortForwarder {
    run: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl PortForwarder {
    /// Starts mirroring: `netns` is the pod's network namespace path, `vsock` the VM's hybrid
    /// vsock socket, `agent` a client of its agent.
    pub(crate) fn start(
        agent: ttrpc::asynchronous::Client,
        netns: PathBuf,
        vsock: PathBuf,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let run = tokio::spawn(run(NetworkClient::new(agent), netns, vsock, stopped));
        PortForwarder { run, stop }
    }

    /// Closes every listener and forwarded connection. Idempotent.
    pub(crate) fn stop(&self) {
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
    // Ports whose bind failed, said once; they are tried again with each new answer.
    let mut unbindable: BTreeSet<u16> = BTreeSet::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
                // Ask again soon instead of after a whole long poll.
                generation = 0;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "port-forward listeners");
                generation = 0;
                continue;
            }
        };
        let mut mirrored = Vec::new();
        for (port, listeners) in bound {
            match listeners {
                Ok(listeners) => {
                    unbindable.remove(&port);
                    mirrored.push(port);
                    let tasks = listeners
                        .into_iter()
                        .map(|l| {
                            let ctx = (vsock.clone(), stopped.clone(), limit.clone());
                            tokio::spawn(accept_loop(l, port, ctx))
                        })
                        .collect();
                    open.insert(port, Mirrored(tasks));
                }
                Err(why) => {
                    if unbindable.insert(port) {
                        tracing::warn!(port, %why, "port-forward: cannot mirror guest port (tried again when the guest's listeners change)");
                    }
                }
            }
        }
        if !mirrored.is_empty() {
            tracing::info!(ports = ?mirrored, "port-forward: mirroring guest ports");
        }
    }
}

/// The lowest [`MAX_PORTS`] of `ports`.
fn cap(ports: BTreeSet<u16>) -> BTreeSet<u16> {
    ports.into_iter().take(MAX_PORTS).collect()
}

/// A port's listeners, or why 127.0.0.1:P could not be bound.
type Bound = Result<Vec<std::net::TcpListener>, String>;

/// Binds 127.0.0.1:P and [::1]:P for each port in the netns: `Ok` with the listeners made
/// (IPv4 at least: containerd dials it first; ::1 is absent where IPv6 is off), `Err` with the
/// reason when 127.0.0.1:P could not be bound (the port taken in the netns, no loopback).
fn bind_in(netns: &Path, ports: Vec<u16>) -> Result<Vec<(u16, Bound)>, NetError> {
    super::run_in(netns, move || async move {
        let bind = |addr: SocketAddr| {
            std::net::TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            })
        };
        Ok(ports
            .into_iter()
            .map(|port| {
                let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
                let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port);
                let r = match bind(v4) {
                    Ok(l4) => {
                        let mut ls = vec![l4];
                        match bind(v6) {
                            Ok(l6) => ls.push(l6),
                            Err(e) => tracing::debug!(%v6, error = %e, "port-forward listener"),
                        }
                        Ok(ls)
                    }
                    Err(e) => Err(format!("{v4}: {e}")),
                };
                (port, r)
            })
            .collect())
    })
}

/// What every accepted connection of a pod needs: the VM's vsock socket, the stop signal and
/// the pod's connection limit.
type ConnCtx = (PathBuf, watch::Receiver<bool>, Arc<Semaphore>);

async fn accept_loop(l: std::net::TcpListener, port: u16, (vsock, stopped, limit): ConnCtx) {
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
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(
                        port,
                        "port-forward: {MAX_CONNECTIONS} connections open; resetting a new one"
                    );
                    let _ = c.set_zero_linger();
                    continue;
                };
                let (vsock, mut stopped) = (vsock.clone(), stopped.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = forward(c, port, &vsock) => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                    drop(permit);
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
async fn forward(c: TcpStream, port: u16, vsock: &Path) {
    let guest = async {
        let mut s =
            hull_proto::connect_stream(vsock, hull_contract::vsock::PORTFWD_PORT, CONNECT_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
        tokio::time::timeout(CONNECT_TIMEOUT, portfwd::request(&mut s, port))
            .await
            .map_err(|_| format!("no answer from the guest within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(s)
    };
    match guest.await {
        Ok(s) => portfwd::splice(c, s).await,
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
