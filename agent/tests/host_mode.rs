//! The agent binary in host mode: serves Health over a Unix socket and shuts down cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hull_proto::health::check_response::ServingStatus;
use hull_proto::health::{CheckRequest, VersionRequest};
use hull_proto::health_ttrpc::HealthClient;

fn wait_for_socket(path: &Path, agent: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = agent.try_wait().expect("try_wait") {
            panic!("agent exited early: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills the agent if the test fails before stopping it: a leaked agent would keep the test
/// runner's output pipe open, and a `cargo test | tee` (CI) would never end.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn serves_health_and_version_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("agent.sock");
    let mut guard = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_hull-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent"),
    ));
    let agent = guard.0.as_mut().expect("agent");
    wait_for_socket(&sock, agent);

    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
        .await
        .expect("connect");
    let health = HealthClient::new(client);
    let ctx = ttrpc::context::with_timeout(5_000_000_000);
    let check = health
        .check(ctx.clone(), &CheckRequest::new())
        .await
        .expect("check");
    assert_eq!(check.status.enum_value(), Ok(ServingStatus::SERVING));
    let version = health
        .version(ctx, &VersionRequest::new())
        .await
        .expect("version");
    assert_eq!(version.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(version.protocol_version, hull_proto::PROTOCOL_VERSION);
    assert!(!version.kernel_release.is_empty());

    // The Network service over ttrpc (its netlink work has its own tests in hull-net): the
    // host's links are listed, loopback left out, and an update naming a MAC no link has is
    // NOT_FOUND naming it — and changes nothing on this host.
    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
        .await
        .expect("connect");
    let network = hull_proto::network_ttrpc::NetworkClient::new(client);
    let ctx = || ttrpc::context::with_timeout(5_000_000_000);
    let links = network
        .list_interfaces(ctx(), &hull_proto::network::ListInterfacesRequest::new())
        .await
        .expect("ListInterfaces");
    for i in &links.interfaces {
        assert_ne!(i.name, "lo");
        assert!(
            std::path::Path::new("/sys/class/net")
                .join(&i.name)
                .exists(),
            "{} is not a link of this host",
            i.name
        );
    }
    let mut req = hull_proto::network::UpdateInterfacesRequest::new();
    req.interfaces.push(hull_proto::network::Interface {
        name: "eth9".into(),
        hw_addr: "02:00:5e:00:53:99".into(),
        ..Default::default()
    });
    match network.update_interfaces(ctx(), &req).await {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), ttrpc::Code::NOT_FOUND, "{}", s.message);
            assert!(s.message.contains("02:00:5e:00:53:99"), "{}", s.message);
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }

    // Every RPC so far is timed by method, the failed one counted as an error; the host's
    // memory and pressure come back as the guest's would.
    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
        .await
        .expect("connect");
    let guest = hull_proto::guest_ttrpc::GuestClient::new(client);
    let stats = guest
        .guest_stats(ctx(), &hull_proto::guest::GuestStatsRequest::new())
        .await
        .expect("GuestStats");
    assert!(stats.mem_total_bytes >= stats.mem_available_bytes && stats.mem_available_bytes > 0);
    let bounds = &stats.rpc_bucket_bounds_seconds;
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
    let method = |m: &str| {
        stats
            .rpc
            .iter()
            .find(|r| r.method == m)
            .unwrap_or_else(|| panic!("{m} not in {:?}", stats.rpc))
    };
    let check = method("Health/Check");
    assert_eq!((check.count, check.errors), (1, 0));
    assert_eq!(check.bucket_counts.len(), bounds.len());
    assert_eq!(check.bucket_counts.last(), Some(&1), "a Check takes < 10 s");
    let update = method("Network/UpdateInterfaces");
    assert_eq!((update.count, update.errors), (1, 1));
    assert_eq!(method("Network/ListInterfaces").count, 1);
    assert!(
        !stats.rpc.iter().any(|r| r.method == "Guest/GuestStats"),
        "a call is counted once it completes"
    );

    let agent = guard.0.take().expect("agent");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let out = agent.wait_with_output().expect("wait agent");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "agent exit {:?}; log:\n{log}",
        out.status
    );
    assert!(
        log.starts_with("hull-agent "),
        "first line names the agent: {log}"
    );
    assert!(!sock.exists(), "socket file removed at shutdown");
}

/// Hot-plug drives the kernel the agent runs on: in host mode SetCpus, AttachDisk and
/// DetachDisk are refused before anything is read or written, so this host's CPUs and
/// devices stay as they are, whatever the request.
#[tokio::test]
async fn refuses_hot_plug_in_host_mode() {
    use hull_proto::guest::{AttachDiskRequest, DetachDiskRequest, SetCpusRequest};
    use hull_proto::guest_ttrpc::GuestClient;

    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("agent.sock");
    let mut guard = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_hull-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--root")
            .arg(dir.path().join("root"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn agent"),
    ));
    wait_for_socket(&sock, guard.0.as_mut().expect("agent"));
    let cpus_online = || std::fs::read_to_string("/sys/devices/system/cpu/online").ok();
    let before = cpus_online();

    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
        .await
        .expect("connect");
    let guest = GuestClient::new(client);
    let ctx = || ttrpc::context::with_timeout(5_000_000_000);
    let refused = |what: &str, r: ttrpc::Result<()>| match r {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(
                s.code(),
                ttrpc::Code::FAILED_PRECONDITION,
                "{what}: {}",
                s.message
            );
            assert!(
                s.message.contains("not in a guest"),
                "{what}: {}",
                s.message
            );
        }
        other => panic!("{what}: expected FAILED_PRECONDITION, got {other:?}"),
    };
    for online in [1, 0, u32::MAX] {
        let r = guest
            .set_cpus(
                ctx(),
                &SetCpusRequest {
                    online,
                    ..Default::default()
                },
            )
            .await;
        refused(&format!("SetCpus {online}"), r.map(drop));
    }
    for mmio_base in [0xd000_0000, 0, u64::MAX] {
        let r = guest
            .attach_disk(
                ctx(),
                &AttachDiskRequest {
                    mmio_base,
                    ..Default::default()
                },
            )
            .await;
        refused(&format!("AttachDisk {mmio_base:#x}"), r.map(drop));
        let r = guest
            .detach_disk(
                ctx(),
                &DetachDiskRequest {
                    mmio_base,
                    ..Default::default()
                },
            )
            .await;
        refused(&format!("DetachDisk {mmio_base:#x}"), r.map(drop));
    }
    assert_eq!(
        cpus_online(),
        before,
        "the host's online CPUs are untouched"
    );
}

#[test]
fn refuses_a_bad_listen_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_hull-agent"))
        .args(["--listen", "tcp:1.2.3.4:5"])
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected vsock:PORT or unix:PATH"));
}

/// CRI PortForward's guest side: WatchListeners reports a server listening on loopback, a
/// port-forward stream reaches it (bytes both ways, a half-close passes through), a closed
/// port is answered with ERR, and a malformed header only ends its own stream.
#[tokio::test]
async fn reports_listeners_and_forwards_streams_to_them() {
    use hull_proto::network::WatchListenersRequest;
    use hull_proto::network_ttrpc::NetworkClient;
    use hull_proto::portfwd::{self, PortFwdError};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("agent.sock");
    let fwd = dir.path().join("portfwd.sock");
    let mut guard = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_hull-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--portfwd-listen")
            .arg(format!("unix:{}", fwd.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn agent"),
    ));
    wait_for_socket(&sock, guard.0.as_mut().expect("agent"));

    // An echo server on loopback: reads to EOF, then sends it all back and closes.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let echo = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut c, _) = server.accept().expect("accept");
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).expect("read");
        c.write_all(&buf).expect("write");
        server
    });

    let client = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
        .await
        .expect("connect");
    let network = NetworkClient::new(client);
    let watch = |generation, wait_ms| {
        let network = network.clone();
        async move {
            network
                .watch_listeners(
                    ttrpc::context::with_timeout(30_000_000_000),
                    &WatchListenersRequest {
                        generation,
                        wait_ms,
                        ..Default::default()
                    },
                )
                .await
                .expect("WatchListeners")
        }
    };
    let first = watch(0, 10_000).await;
    assert!(first.ports.contains(&u32::from(port)), "{:?}", first.ports);

    let mut s = tokio::net::UnixStream::connect(&fwd)
        .await
        .expect("connect");
    portfwd::request(&mut s, port).await.expect("PORT");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).await.expect("send");
    s.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.expect("receive");
    assert!(
        back == payload,
        "echoed {} of {} bytes",
        back.len(),
        payload.len()
    );

    // The server goes away: the next watch answers with a set without its port.
    drop(echo.join().expect("echo server"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut generation = first.generation;
    loop {
        let r = watch(generation, 5_000).await;
        if !r.ports.contains(&u32::from(port)) {
            assert_ne!(r.generation, first.generation);
            break;
        }
        assert!(Instant::now() < deadline, "port {port} still reported");
        generation = r.generation;
    }
    let mut s = tokio::net::UnixStream::connect(&fwd)
        .await
        .expect("connect");
    match portfwd::request(&mut s, port).await {
        Err(PortFwdError::Refused { reason, .. }) => {
            assert!(reason.contains("refused"), "{reason}")
        }
        other => panic!("expected ERR for a closed port, got {other:?}"),
    }
    let mut s = tokio::net::UnixStream::connect(&fwd)
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.0\n").await.expect("send");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("read");
    assert!(
        rest.is_empty(),
        "a malformed header gets no answer: {rest:?}"
    );
    // The agent still serves.
    assert!(watch(0, 0).await.generation != 0);
}

/// One `hullctl debug` session against a host-mode agent, as frames over its socket: what
/// comes back (stdout, stderr, in order each) and the exit status or error line.
fn debug_session(
    sock: &Path,
    start: &hull_contract::debug_shell::Start,
    tool: Option<&[u8]>,
    stdin: &[u8],
) -> (Vec<u8>, Vec<u8>, Result<u32, String>) {
    use hull_contract::debug_shell::{frame, parse_exit, parse_header, Kind, HEADER_LEN};
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect debug socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&frame(Kind::Start, &start.encode())).unwrap();
    if let Some(t) = tool {
        for chunk in t.chunks(256 << 10) {
            s.write_all(&frame(Kind::Tool, chunk)).unwrap();
        }
        s.write_all(&frame(Kind::ToolEnd, &[])).unwrap();
    }
    if !stdin.is_empty() {
        s.write_all(&frame(Kind::Stdin, stdin)).unwrap();
    }
    s.write_all(&frame(Kind::StdinEof, &[])).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let mut h = [0u8; HEADER_LEN];
        s.read_exact(&mut h).expect("a frame before the end");
        let (kind, len) = parse_header(h).expect("header");
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).unwrap();
        match kind {
            Kind::Stdout => out.extend(p),
            Kind::Stderr => err.extend(p),
            Kind::Exit => return (out, err, Ok(parse_exit(&p).expect("status"))),
            Kind::Error => return (out, err, Err(String::from_utf8_lossy(&p).into_owned())),
            other => panic!("unexpected {other:?} from the agent"),
        }
    }
}

/// `hullctl debug`'s guest side: a process outside every container with stdin, stdout,
/// stderr and its exit status; a terminal; a program the host sends; a program that cannot
/// run gets one error line.
#[test]
fn debug_shell_runs_the_hosts_program_with_its_stdio_and_status() {
    use hull_contract::debug_shell::Start;
    let dir = tempfile::tempdir().expect("tempdir");
    let (sock, debug) = (dir.path().join("agent.sock"), dir.path().join("debug.sock"));
    let mut guard = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_hull-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--debug-shell-listen")
            .arg(format!("unix:{}", debug.display()))
            .arg("--root")
            .arg(dir.path().join("root"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent"),
    ));
    wait_for_socket(&sock, guard.0.as_mut().expect("agent"));
    let sh = |script: &str| Start {
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["GREETING=hi".into()],
        ..Default::default()
    };

    let (out, err, status) = debug_session(
        &debug,
        &sh("read x; echo \"$GREETING $x\"; echo oops >&2; cat /proc/self/cgroup >/dev/null; exit 7"),
        None,
        b"there\n",
    );
    assert_eq!(String::from_utf8_lossy(&out), "hi there\n");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");
    assert_eq!(status, Ok(7));

    let (out, _, status) = debug_session(
        &debug,
        &Start {
            args: vec!["tty".into()],
            tty: true,
            rows: 40,
            cols: 100,
            ..Default::default()
        },
        None,
        b"",
    );
    assert!(
        String::from_utf8_lossy(&out).starts_with("/dev/pts/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(status, Ok(0));

    // The host brings the program (the guest has no shell): written under the agent's root,
    // found first on PATH, removed when the session ends.
    let busybox = std::fs::read(
        ["/usr/bin/busybox", "/bin/busybox"]
            .iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox on the test host"),
    )
    .unwrap();
    let (out, err, status) = debug_session(
        &debug,
        &Start {
            args: vec![
                "busybox".into(),
                "sh".into(),
                "-c".into(),
                "echo \"${PATH%%:*}\"; ls \"${PATH%%:*}\"".into(),
            ],
            tool_name: Some("busybox".into()),
            ..Default::default()
        },
        Some(&busybox),
        b"",
    );
    let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert_eq!(status, Ok(0), "{out} {err}");
    let want = format!(
        "{}\nbusybox\n",
        dir.path().join("root/debug/debug-3").display()
    );
    assert_eq!(out, want);
    assert!(
        !dir.path().join("root/debug/debug-3").exists(),
        "the program is removed after"
    );

    let missing = Start {
        args: vec!["/no/such/program".into()],
        ..Default::default()
    };
    let (_, _, status) = debug_session(&debug, &missing, None, b"");
    let e = status.expect_err("no such program");
    assert!(e.contains("/no/such/program"), "{e}");
}
