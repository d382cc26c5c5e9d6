//! `hull-agent`: `/init` of the hull guest, or `--listen unix:PATH` on the host for tests.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hull_agent::config::ListenAddr;
use hull_agent::{init, reaper, server, AGENT_VERSION};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(name = "hull-agent", version, about = "hull guest agent (PID 1)")]
struct Args {
    /// Where the ttrpc service listens: vsock:PORT (guest) or unix:PATH (host mode).
    #[arg(long, default_value = "vsock:1024")]
    listen: ListenAddr,
}

fn main() {
    let is_init = std::process::id() == 1;
    // The first console line: the lab smoke test and the VMM's boot log look for it.
    eprintln!(
        "hull-agent {AGENT_VERSION} starting{}",
        if is_init { " as PID 1" } else { "" }
    );
    init_tracing();

    let args = match Args::try_parse() {
        Ok(args) => args,
        // The kernel hands unknown cmdline words to init as arguments; PID 1 must not die of
        // them, so it logs and runs with defaults.
        Err(e) if is_init => {
            tracing::warn!("ignoring init arguments: {}", e.kind());
            Args {
                listen: ListenAddr::default(),
            }
        }
        Err(e) => e.exit(),
    };

    if is_init {
        for failure in init::mount_pseudo_filesystems() {
            tracing::error!("{failure}");
        }
    }

    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agent")
        .build()
        .context("create tokio runtime")
        .and_then(|rt| rt.block_on(run(args, is_init)));

    match result {
        Ok(()) if !is_init => {}
        Ok(()) => park_as_init("agent service stopped"),
        Err(e) if is_init => park_as_init(&format!("{e:#}")),
        Err(e) => {
            eprintln!("hull-agent: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args, is_init: bool) -> anyhow::Result<()> {
    if !is_init {
        // Orphans of host-mode containers must come back to us, as they would to PID 1.
        nix::sys::prctl::set_child_subreaper(true).context("become child subreaper")?;
    }
    let reaper = tokio::spawn(reaper::run());
    let mut server = server::start(&args.listen).await?;
    tracing::info!("ready: serving ttrpc on {}", args.listen.to_ttrpc());

    if is_init {
        // PID 1 never returns while the reaper runs; the reaper only ends on runtime shutdown.
        reaper.await.context("reaper task")?.context("reaper")?;
        return Ok(());
    }
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await.context("shut down ttrpc server")?;
    if let ListenAddr::Unix(path) = &args.listen {
        let _ = std::fs::remove_file(path);
    }
    reaper.abort();
    Ok(())
}

/// PID 1 must never exit (the kernel would panic and the host would learn nothing): after a
/// fatal error it says why on the console and keeps reaping, so the shim sees a VM that does
/// not answer and reports the console log.
fn park_as_init(why: &str) -> ! {
    eprintln!("hull-agent: fatal: {why}; parking as init");
    loop {
        let _ = reaper::reap_exited();
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}
