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

#[test]
fn refuses_a_bad_listen_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_hull-agent"))
        .args(["--listen", "tcp:1.2.3.4:5"])
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected vsock:PORT or unix:PATH"));
}
