//! [`PortForwarder`] against a fake agent (a ttrpc Network service and a hybrid vsock socket
//! that answers port-forward headers and echoes) in a real network namespace (root, as CI).

use std::io::{Read, Write};
use std::sync::Arc;

use async_trait::async_trait;
use hull_proto::network::{WatchListenersRequest, WatchListenersResponse};
use hull_proto::network_ttrpc::{create_network, Network};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::*;

/// The guest "listens" on these: ECHO is served, REFUSED is answered with ERR.
const ECHO: u16 = 47001;
const REFUSED: u16 = 47002;
const GENERATION: u64 = 7;

struct FakeAgent;

#[async_trait]
impl Network for FakeAgent {
    async fn watch_listeners(
        &self,
        _c: &ttrpc::r#async::TtrpcContext,
        r: WatchListenersRequest,
    ) -> ttrpc::Result<WatchListenersResponse> {
        if r.generation == GENERATION {
            tokio::time::sleep(Duration::from_millis(u64::from(r.wait_ms).min(200))).await;
        }
        Ok(WatchListenersResponse {
            generation: GENERATION,
            ports: vec![ECHO.into(), REFUSED.into()],
            ..Default::default()
        })
    }
}

/// The VM's hybrid vsock socket as hull-vmm and the agent's port-forward server answer it.
async fn fake_vsock(l: tokio::net::UnixListener) {
    loop {
        let (s, _) = l.accept().await.expect("accept");
        tokio::spawn(async move {
            let mut s = BufReader::new(s);
            let mut line = String::new();
            s.read_line(&mut line).await.expect("read CONNECT");
            assert_eq!(
                line,
                hull_contract::vsock::connect_request(hull_contract::vsock::PORTFWD_PORT)
            );
            s.get_mut().write_all(b"OK 1\n").await.expect("write");
            let port = portfwd::read_request(&mut s).await.expect("PORT");
            if port != ECHO {
                let why = format!("dial 127.0.0.1:{port}: connection refused");
                portfwd::reply(s.get_mut(), Err(why)).await.expect("reply");
                return;
            }
            portfwd::reply(s.get_mut(), Ok(())).await.expect("reply");
            let (mut r, mut w) = tokio::io::split(s);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// Dials `addr` from inside the netns, retrying while the forwarder is not listening yet, and
/// exchanges `msg`: the echo, or the error of a refused stream.
fn dial_in(netns: &Path, addr: SocketAddr, msg: &'static [u8]) -> std::io::Result<Vec<u8>> {
    super::super::run_in(netns, move || async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut c = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Ok(Err(e)),
            }
        };
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let r = (|| {
            c.write_all(msg)?;
            c.shutdown(std::net::Shutdown::Write)?;
            let mut back = Vec::new();
            c.read_to_end(&mut back)?;
            Ok(back)
        })();
        Ok(r)
    })
    .expect("run in netns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_ports_are_mirrored_on_the_netns_loopback() {
    let ns = super::super::tests::Ns::new();
    let path = ns.path();
    super::super::run_in(&path, || async {
        let h = hull_net::connect()?;
        let ix = hull_net::link_index("lo").await?;
        h.link()
            .set(rtnetlink::LinkUnspec::new_with_index(ix).up().build())
            .execute()
            .await
            .map_err(|source| NetError::Tc {
                what: "lo up".into(),
                source,
            })
    })
    .expect("lo up");

    let dir = tempfile::tempdir().expect("tempdir");
    let agent_sock = dir.path().join("agent.sock");
    let mut server = ttrpc::r#async::Server::new()
        .bind(&format!("unix://{}", agent_sock.display()))
        .expect("bind")
        .register_service(create_network(Arc::new(FakeAgent)));
    server.start().await.expect("start");
    let vsock = dir.path().join("vsock.sock");
    let vsock_task = tokio::spawn(fake_vsock(
        tokio::net::UnixListener::bind(&vsock).expect("bind vsock"),
    ));
    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", agent_sock.display()))
        .await
        .expect("connect");

    let fwd = PortForwarder::start(client, path.clone(), vsock);
    for ip in [
        std::net::IpAddr::from(Ipv4Addr::LOCALHOST),
        Ipv6Addr::LOCALHOST.into(),
    ] {
        let p = path.clone();
        let echo = tokio::task::spawn_blocking(move || {
            dial_in(&p, SocketAddr::new(ip, ECHO), b"through the guest")
        })
        .await
        .expect("join");
        assert_eq!(echo.expect("echo"), b"through the guest", "{ip}");
    }
    // The guest refused: the dialer sees a reset (or at least no data), never a hang. When the
    // reset beats the dialer's write and half-close, the error it sees is that of the step it
    // was at (ENOTCONN from shutdown, EPIPE from write): seen under load.
    let p = path.clone();
    let refused = tokio::task::spawn_blocking(move || {
        dial_in(
            &p,
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), REFUSED),
            b"x",
        )
    })
    .await
    .expect("join");
    match refused {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
        Ok(data) => assert!(data.is_empty(), "{data:?}"),
    }
    // Nothing listens on other ports of the netns's loopback.
    let p = path.clone();
    let other = tokio::task::spawn_blocking(move || {
        super::super::run_in(&p, || async {
            Ok(std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, ECHO + 10)).map(drop))
        })
        .expect("run in netns")
    })
    .await
    .expect("join");
    assert_eq!(
        other.expect_err("connect").kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    // Stopped: the listeners close (the netns would otherwise be pinned by them).
    fwd.stop();
    let p = path.clone();
    let closed = tokio::task::spawn_blocking(move || {
        super::super::run_in(&p, || async {
            for _ in 0..100 {
                if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, ECHO)).is_err() {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(false)
        })
        .expect("run in netns")
    })
    .await
    .expect("join");
    assert!(closed, "port {ECHO} still accepts after stop()");
    vsock_task.abort();
    server.shutdown().await.expect("shutdown");
}

/// A hostile guest: answers every watch at once with a "new" set of 1000 ports.
struct FloodAgent(Arc<std::sync::atomic::AtomicU64>);

const FLOOD_FIRST: u16 = 40000;

#[async_trait]
impl Network for FloodAgent {
    async fn watch_listeners(
        &self,
        _c: &ttrpc::r#async::TtrpcContext,
        _r: WatchListenersRequest,
    ) -> ttrpc::Result<WatchListenersResponse> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(WatchListenersResponse {
            generation: n + 1,
            ports: (u32::from(FLOOD_FIRST)..u32::from(FLOOD_FIRST) + 1000).collect(),
            ..Default::default()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_answering_at_once_is_not_called_in_a_loop() {
    let ns = super::super::tests::Ns::new();
    let path = ns.path();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_sock = dir.path().join("agent.sock");
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut server = ttrpc::r#async::Server::new()
        .bind(&format!("unix://{}", agent_sock.display()))
        .expect("bind")
        .register_service(create_network(Arc::new(FloodAgent(calls.clone()))));
    server.start().await.expect("start");
    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", agent_sock.display()))
        .await
        .expect("connect");
    // lo stays down here: no port can be bound; each is tried once.
    let fwd = PortForwarder::start(client, path, dir.path().join("vsock.sock"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fwd.stop();
    let n = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=6).contains(&n), "{n} WatchListeners calls in 1.1 s");
    server.shutdown().await.expect("shutdown");
}

#[test]
fn at_most_max_ports_are_taken_lowest_first() {
    let want: BTreeSet<u16> = (FLOOD_FIRST..FLOOD_FIRST + 1000).collect();
    let kept = cap(want);
    assert_eq!(kept.len(), MAX_PORTS);
    assert_eq!(kept.first(), Some(&FLOOD_FIRST));
    assert_eq!(kept.last(), Some(&(FLOOD_FIRST + 255)));
}
