//! `hull-test-probe`: run next to a booted guest (in the lab) to ask its agent for health
//! over AF_VSOCK. Exit 0 only on a SERVING reply.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hull_proto::health::check_response::ServingStatus;
use hull_proto::health::{CheckRequest, VersionRequest};
use hull_proto::health_ttrpc::HealthClient;

#[derive(Debug, Parser)]
struct Args {
    /// Guest CID.
    #[arg(long, default_value_t = 3)]
    cid: u32,
    /// Agent port.
    #[arg(long, default_value_t = 1024)]
    port: u32,
    /// Keep retrying the connection this long while the guest boots.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr = format!("vsock://{}:{}", args.cid, args.port);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let client = loop {
        match ttrpc::r#async::Client::connect(&addr).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("connect {addr}: {e}"),
        }
    };
    let health = HealthClient::new(client);
    let ctx = || ttrpc::context::with_timeout(10_000_000_000);
    let check = health
        .check(ctx(), &CheckRequest::new())
        .await
        .context("Health.Check")?;
    let version = health
        .version(ctx(), &VersionRequest::new())
        .await
        .context("Health.Version")?;
    let status = check.status.enum_value_or_default();
    println!(
        "agent-health: {status:?} agent={} protocol={} kernel={}",
        version.agent_version, version.protocol_version, version.kernel_release
    );
    if status != ServingStatus::SERVING {
        bail!("agent is not serving");
    }
    Ok(())
}
