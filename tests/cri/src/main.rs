//! `hull-cri`: a small CRI v1 client for the CRI suite (Debian 12 has no crictl).
//!
//! ```text
//! hull-cri --sock SOCK [--timeout SECS] COMMAND
//!   version                          runtime name, version and CRI API version
//!   status [-f KEY]                  runtime conditions as JSON ({"RuntimeReady":true,...})
//!   runp --runtime HANDLER POD.json  RunPodSandbox; prints the pod id
//!   create POD_ID CTR.json POD.json  CreateContainer; prints the container id
//!   start ID                         StartContainer
//!   exec-sync [--timeout S] ID -- CMD...
//!                                    ExecSync; the command's stdout and stderr go to ours,
//!                                    hull-cri exits with its exit code
//!   inspect ID [-f KEY]              ContainerStatus as JSON (state, exit_code, reason, ...)
//!   inspectp ID [-f KEY]             PodSandboxStatus as JSON (state, ip, ips, pid, netns, ...)
//!   stats ID [-f KEY]                ContainerStats as JSON (cpu, memory working set, ...)
//!   update ID RESOURCES.json         UpdateContainerResources (the `resources` object of
//!                                    CTR.json)
//!   stop [--timeout S] ID | rm ID    StopContainer, RemoveContainer
//!   stopp ID | rmp ID                StopPodSandbox, RemovePodSandbox
//!   port-forward [--idle S] [--max-bytes N] POD_ID PORT
//!                                    PortForward: our stdin goes to the pod's PORT and its
//!                                    answer to our stdout, until the server closes the stream
//!                                    (or N bytes came back); exits 1 with containerd's error
//!                                    text, on stderr, if it sent one
//! ```
//!
//! `-f KEY` prints one value of the JSON object as plain text (strings unquoted, null empty).
//! The JSON files are described in [`config`]. A failed RPC prints
//! `hull-cri: RPC failed: CODE: message` on stderr and exits 1. The end of port-forward's
//! stdin does not end the stream (WebSocket has no half-close): the server ends it, or
//! `--max-bytes`; `--idle` seconds without traffic either way fail it.

mod client;
mod config;
mod portforward;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::client::Cri;
use crate::config::{ContainerJson, PodJson, Resources};
use crate::portforward::Limits;

#[derive(Debug, Parser)]
#[command(name = "hull-cri", about = "Small CRI v1 client for hull's CRI suite")]
struct Args {
    /// containerd's gRPC socket (its CRI plugin serves the RuntimeService there).
    #[arg(long)]
    sock: PathBuf,
    /// Deadline of each RPC, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Version: runtime name, version and CRI API version.
    Version,
    /// Status: the runtime's conditions.
    Status {
        #[arg(short, long)]
        field: Option<String>,
    },
    /// RunPodSandbox; prints the pod id.
    Runp {
        /// Runtime handler (a runtime name of containerd's CRI config).
        #[arg(long)]
        runtime: String,
        pod: PathBuf,
    },
    /// CreateContainer; prints the container id.
    Create {
        pod_id: String,
        container: PathBuf,
        pod: PathBuf,
    },
    /// StartContainer.
    Start { id: String },
    /// ExecSync; exits with the command's exit code.
    ExecSync {
        /// The command's timeout in seconds (0: none).
        #[arg(long, default_value_t = 60)]
        timeout: i64,
        id: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// ContainerStatus as a JSON object.
    Inspect {
        id: String,
        #[arg(short, long)]
        field: Option<String>,
    },
    /// PodSandboxStatus as a JSON object.
    Inspectp {
        id: String,
        #[arg(short, long)]
        field: Option<String>,
    },
    /// ContainerStats as a JSON object.
    Stats {
        id: String,
        #[arg(short, long)]
        field: Option<String>,
    },
    /// UpdateContainerResources from a JSON file (the `resources` object of CTR.json).
    Update { id: String, resources: PathBuf },
    /// StopContainer.
    Stop {
        /// Grace period in seconds before SIGKILL.
        #[arg(long, default_value_t = 10)]
        timeout: i64,
        id: String,
    },
    /// RemoveContainer.
    Rm { id: String },
    /// StopPodSandbox.
    Stopp { id: String },
    /// RemovePodSandbox.
    Rmp { id: String },
    /// PortForward: stdin to the pod's PORT, its answer to stdout.
    PortForward {
        /// Fail after this many seconds without traffic in either direction (and bound the
        /// WebSocket upgrade).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        idle: u64,
        /// Close the stream ourselves once this many bytes came back (for a server that never
        /// closes).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_bytes: Option<u64>,
        pod_id: String,
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hull-cri: start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        match run(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("hull-cri: {}", message(&e));
                ExitCode::FAILURE
            }
        }
    });
    // tokio reads stdin with a blocking read(2) on a thread of its own that nothing can
    // cancel; a port-forward that ends before its stdin must not wait for it on the way out.
    rt.shutdown_background();
    code
}

/// The error and its causes on one line; tonic's transport errors repeat their cause.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.ends_with(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Prints `v`, or only its `field` as plain text.
fn print_json(v: &Value, field: Option<&str>) -> anyhow::Result<()> {
    match field {
        None => println!("{}", serde_json::to_string_pretty(v)?),
        Some(f) => match v.get(f) {
            Some(Value::String(s)) => println!("{s}"),
            Some(Value::Null) => println!(),
            Some(other) => println!("{other}"),
            None => anyhow::bail!("no field {f:?} in {v}"),
        },
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cri = Cri::connect(&args.sock, Duration::from_secs(args.timeout)).await?;
    match args.cmd {
        Cmd::Version => {
            let (name, version, api) = cri.version().await?;
            println!("{name} {version} {api}");
        }
        Cmd::Status { field } => print_json(&cri.status().await?, field.as_deref())?,
        Cmd::Runp { runtime, pod } => {
            let pod: PodJson = read_json(&pod)?;
            println!("{}", cri.run_pod(pod.to_cri(), &runtime).await?);
        }
        Cmd::Create {
            pod_id,
            container,
            pod,
        } => {
            let ctr: ContainerJson = read_json(&container)?;
            let pod: PodJson = read_json(&pod)?;
            let id = cri.create(&pod_id, ctr.to_cri(&pod), pod.to_cri()).await?;
            println!("{id}");
        }
        Cmd::Start { id } => cri.start(&id).await?,
        Cmd::ExecSync { timeout, id, cmd } => {
            let out = cri.exec_sync(&id, cmd, timeout).await?;
            use std::io::Write;
            std::io::stdout().write_all(&out.stdout)?;
            std::io::stderr().write_all(&out.stderr)?;
            std::io::stdout().flush()?;
            // Exit codes outside 0..=255 cannot be an exit status; 255 stands for them.
            return Ok(ExitCode::from(
                u8::try_from(out.exit_code).unwrap_or(u8::MAX),
            ));
        }
        Cmd::Inspect { id, field } => print_json(&cri.inspect(&id).await?, field.as_deref())?,
        Cmd::Inspectp { id, field } => print_json(&cri.inspect_pod(&id).await?, field.as_deref())?,
        Cmd::Stats { id, field } => print_json(&cri.stats(&id).await?, field.as_deref())?,
        Cmd::Update { id, resources } => {
            let r: Resources = read_json(&resources)?;
            cri.update(&id, r.to_cri()).await?;
        }
        Cmd::Stop { timeout, id } => cri.stop(&id, timeout).await?,
        Cmd::Rm { id } => cri.remove(&id).await?,
        Cmd::Stopp { id } => cri.stop_pod(&id).await?,
        Cmd::Rmp { id } => cri.remove_pod(&id).await?,
        Cmd::PortForward {
            idle,
            max_bytes,
            pod_id,
            port,
        } => {
            let idle = Duration::from_secs(idle);
            let url = cri.port_forward(&pod_id, port).await?;
            let ws = portforward::connect(&url, port, idle)
                .await
                .context("port-forward")?;
            let limits = Limits { idle, max_bytes };
            let out =
                portforward::forward(ws, port, tokio::io::stdin(), tokio::io::stdout(), limits)
                    .await
                    .context("port-forward")?;
            if let Some(text) = out.error {
                eprintln!("hull-cri: port-forward: {}", text.trim_end());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
