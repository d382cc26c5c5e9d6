//! `hullctl`: talk to a pod's VMM and agent from the host.
//!
//! `hullctl agent-health --uds PATH` connects through the VMM's hybrid vsock socket
//! (`CONNECT 1024\n` → `OK <port>\n`), then calls the agent's Health.Check and Health.Version
//! over ttrpc; it prints the agent version and exits 0 only if the agent is SERVING.
//! `hullctl api --sock PATH METHOD PATH [JSON]` sends one request to the VMM API socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hull_proto::health::{check_response::ServingStatus, CheckRequest, VersionRequest};
use hull_proto::health_ttrpc::HealthClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Debug, Parser)]
#[command(name = "hullctl", version, about = "Debug CLI for hull pods")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check the guest agent's health through the hybrid vsock socket.
    AgentHealth {
        /// The VMM's hybrid vsock Unix socket (`hull-vmm --vsock-uds`).
        #[arg(long)]
        uds: PathBuf,
        /// Guest vsock port of the agent.
        #[arg(long, default_value_t = 1024)]
        port: u32,
        /// Keep retrying for this many seconds while the agent is not up yet.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Timeout of each RPC, in seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Send one HTTP-style request to the VMM API socket and print the reply body.
    Api {
        #[arg(long)]
        sock: PathBuf,
        /// GET, PUT or PATCH
        method: String,
        /// e.g. /vm, /metrics, /actions
        path: String,
        /// JSON body
        body: Option<String>,
    },
}

/// Connects to guest `port` through the hybrid vsock socket at `uds`.
async fn vsock_connect(uds: &Path, port: u32) -> anyhow::Result<UnixStream> {
    let mut s = UnixStream::connect(uds)
        .await
        .with_context(|| format!("connect {}", uds.display()))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    // Read the reply byte by byte: nothing after the newline belongs to us.
    let mut line = Vec::new();
    loop {
        let b = s
            .read_u8()
            .await
            .context("vsock handshake: connection closed")?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > 64 {
            bail!("vsock handshake: reply too long");
        }
    }
    let line = String::from_utf8_lossy(&line);
    if !line.starts_with("OK ") {
        bail!("vsock handshake: unexpected reply {line:?}");
    }
    Ok(s)
}

async fn health_once(uds: &Path, port: u32, timeout: Duration) -> anyhow::Result<(bool, String)> {
    let stream = vsock_connect(uds, port).await?;
    let client = HealthClient::new(ttrpc::r#async::Client::new(
        ttrpc::r#async::transport::Socket::from(stream),
    ));
    let ns = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
    let check = client
        .check(ttrpc::context::with_timeout(ns), &CheckRequest::new())
        .await
        .context("Health.Check")?;
    let version = client
        .version(ttrpc::context::with_timeout(ns), &VersionRequest::new())
        .await
        .context("Health.Version")?;
    let serving = check.status.enum_value() == Ok(ServingStatus::SERVING);
    Ok((
        serving,
        format!(
            "agent {} protocol {} kernel {} status {:?}",
            version.agent_version, version.protocol_version, version.kernel_release, check.status
        ),
    ))
}

async fn agent_health(
    uds: &Path,
    port: u32,
    wait: Duration,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = tokio::time::timeout(timeout, health_once(uds, port, timeout)).await;
        let attempt =
            attempt.unwrap_or_else(|_| Err(anyhow::anyhow!("no reply within {timeout:?}")));
        match attempt {
            Ok((serving, line)) => {
                println!("{line}");
                return Ok(serving);
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn api(sock: &Path, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<bool> {
    let mut s = UnixStream::connect(sock)
        .await
        .with_context(|| format!("connect {}", sock.display()))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let ok = head
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'));
    if !body.is_empty() {
        println!("{body}");
    }
    if !ok {
        eprintln!("hullctl: {}", head.lines().next().unwrap_or(""));
    }
    Ok(ok)
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hullctl: {e}");
            std::process::exit(1);
        }
    };
    let res = rt.block_on(async {
        match &args.cmd {
            Cmd::AgentHealth {
                uds,
                port,
                wait,
                timeout,
            } => {
                agent_health(
                    uds,
                    *port,
                    Duration::from_secs(*wait),
                    Duration::from_secs(*timeout),
                )
                .await
            }
            Cmd::Api {
                sock,
                method,
                path,
                body,
            } => api(sock, method, path, body.as_deref()).await,
        }
    });
    match res {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("hullctl: {e:#}");
            std::process::exit(1);
        }
    }
}
