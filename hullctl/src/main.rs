//! `hullctl`: talk to a pod's VMM and agent from the host.
//!
//! `hullctl agent-health --uds PATH` connects through the VMM's hybrid vsock socket
//! (the handshake of `hull_contract::vsock`, [`hull_proto::connect_agent`]), then calls the
//! agent's Health.Check and Health.Version
//! over ttrpc; it prints the agent version and exits 0 only if the agent is SERVING.
//! `hullctl api --sock PATH GET|PUT PATH [JSON]` sends one request to the VMM API socket.
//! `hullctl sandbox-create|run|exec|rm|sandbox-destroy` drive containers through the agent
//! (see [`agent`]); `run` and `exec` stream the process's output and exit with its status.
//! `hullctl task-stats --address ADDR ID` prints a shim's Task.Stats reply as JSON ([`task`]).
//! `hullctl pods [-o json]`, `hullctl inspect POD`, `hullctl metrics POD`: the hull pods on
//! this node and their VMs, for an operator ([`pods`]); `hullctl monitor --listen ADDR` serves
//! them to Prometheus ([`monitor`]); `hullctl console POD` prints its guest's kernel log (or,
//! with `--agent`, hull-agent's), asked of the agent ([`guest`]); `hullctl debug POD` runs a
//! shell in its guest, outside every container, when the node allows it ([`debug`]). `hullctl node check|containerd-add|containerd-remove`:
//! the installer's steps on a node ([`node`]).

mod agent;
mod bench;
mod debug;
mod disk;
mod guest;
mod monitor;
mod node;
mod pods;
mod task;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hull_contract::vsock::AGENT_PORT;
use hull_proto::health::{check_response::ServingStatus, CheckRequest, VersionRequest};
use hull_proto::health_ttrpc::HealthClient;

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
        #[arg(long, default_value_t = AGENT_PORT)]
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
        /// The methods the VMM serves (vmm/API.md).
        #[arg(ignore_case = true)]
        method: Method,
        /// e.g. /vm, /metrics, /actions
        path: String,
        /// JSON body
        body: Option<String>,
    },
    /// The hull pods on this node: sandbox id, Kubernetes name, VM state, hull-vmm's pid,
    /// vCPUs, memory, uptime, boot time (root: reads /run/hull/pods).
    Pods {
        /// `table` or `json`.
        #[arg(short = 'o', long = "output", default_value = "table")]
        output: Output,
    },
    /// One pod in full, as JSON: the summary, its VM's configuration and counters. POD is a
    /// sandbox id, a unique prefix of one, or namespace/name.
    Inspect { pod: String },
    /// A pod's hull-vmm counters as JSON (vmm/API.md, Metrics).
    Metrics { pod: String },
    /// The guest kernel's log of a pod, as a serial console would have shown it, from the
    /// oldest record the guest still holds (its log buffer; asked of the guest's agent, so it
    /// works on pods booted without a console). Control characters are escaped.
    Console {
        pod: String,
        /// hull-agent's own bounded log instead of the kernel's.
        #[arg(long)]
        agent: bool,
        /// Keep printing new lines until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// A shell (or any program) in the pod's guest itself, outside every container, as root:
    /// for an operator. The guest serves it only if the node's hull.toml had `[vm]
    /// debug_shell = true` when the pod started. The guest image has no shell: `--tool` is
    /// sent along and run with ARGS (default `sh`). Exits with the program's status.
    Debug {
        pod: String,
        /// A statically linked program to run in the guest, e.g. a busybox.
        #[arg(long, default_value = "/bin/busybox")]
        tool: PathBuf,
        /// Give the program a terminal (default: when stdin and stdout are terminals).
        #[arg(short = 't', long)]
        tty: bool,
        /// Pipes, not a terminal.
        #[arg(short = 'T', long, conflicts_with = "tty")]
        no_tty: bool,
        /// Arguments of the tool (with busybox: an applet and its arguments).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A disk image attached to a running pod's VM (`attach` prints the slot and the guest's
    /// device, e.g. `0 /dev/vdb`), or taken away (`detach`, refused while it is mounted in the
    /// guest). The pod needs free slots: `[vm] disk_slots` in hull.toml when it started.
    Disk {
        #[command(subcommand)]
        cmd: DiskCmd,
    },
    /// The node's Prometheus endpoint: GET /metrics on ADDR gives every pod's hull-vmm
    /// metrics, labelled with the pod (root: reads /run/hull/pods).
    Monitor {
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
    },
    /// What the installer does to a node: check it can run hull pods, add the runtime to
    /// containerd's configuration and take it out again.
    Node {
        #[command(subcommand)]
        cmd: node::NodeCmd,
    },
    /// CreateSandbox: prepare the guest for containers.
    SandboxCreate {
        #[command(flatten)]
        to: AgentAddr,
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "hull")]
        hostname: String,
    },
    /// DestroySandbox.
    SandboxDestroy {
        #[command(flatten)]
        to: AgentAddr,
        #[arg(long)]
        id: String,
    },
    /// Create and start a container, stream its output, wait, remove it; exit with its status.
    Run {
        #[command(flatten)]
        to: AgentAddr,
        #[arg(long)]
        id: String,
        /// Guest path of the container's root file system (the mount point with --block).
        #[arg(long)]
        rootfs: PathBuf,
        /// Serial of a virtio-blk disk holding the root file system, mounted on --rootfs.
        #[arg(long)]
        block: Option<String>,
        /// File system type of the --block disk.
        #[arg(long, default_value = "ext4")]
        fstype: String,
        #[arg(long, default_value = "box")]
        hostname: String,
        /// Return once started; leave the container running.
        #[arg(long)]
        detach: bool,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Run a process in a running container, stream its output; exit with its status.
    Exec {
        #[command(flatten)]
        to: AgentAddr,
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "exec")]
        exec_id: String,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Measure a host-mode agent: ttrpc round trip, run/exec of `true`, stdout throughput
    /// (prints `key value` lines; see bench/agent/run).
    AgentBench {
        /// The agent's Unix socket (`hull-agent --listen unix:PATH`).
        #[arg(long)]
        unix: PathBuf,
        /// A busybox root file system on the host.
        #[arg(long)]
        rootfs: PathBuf,
        /// Base sample count (run: N, exec: 4N, round trips: 20N).
        #[arg(long, default_value_t = 50)]
        n: usize,
        /// MiB written to stdout for the throughput figure.
        #[arg(long, default_value_t = 2048)]
        stdout_mib: u64,
    },
    /// Remove a container (kills what is left).
    Rm {
        #[command(flatten)]
        to: AgentAddr,
        #[arg(long)]
        id: String,
    },
    /// Task.Stats of a task, straight from its shim, as JSON (pids, CPU, memory, interfaces).
    TaskStats {
        /// The shim's socket: the content of the task's `address` file in containerd's state
        /// directory (`unix:///run/containerd/s/...`).
        #[arg(long)]
        address: String,
        /// Timeout of the RPC, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// The task (container) id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum DiskCmd {
    Attach {
        pod: String,
        image: PathBuf,
        #[arg(long)]
        read_only: bool,
    },
    Detach {
        pod: String,
        slot: usize,
    },
}

/// Where the agent is: a VMM's hybrid vsock socket, or a host-mode agent's Unix socket.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct AgentAddr {
    /// The VMM's hybrid vsock Unix socket (`hull-vmm --vsock-uds`).
    #[arg(long, group = "addr")]
    uds: Option<PathBuf>,
    /// A host-mode agent's socket (`hull-agent --listen unix:PATH`).
    #[arg(long, group = "addr")]
    unix: Option<PathBuf>,
    /// Guest vsock port of the agent (with --uds).
    #[arg(long, default_value_t = AGENT_PORT)]
    port: u32,
}

impl AgentAddr {
    fn target(&self) -> agent::Target {
        match (&self.uds, &self.unix) {
            (Some(uds), _) => agent::Target::Hybrid {
                uds: uds.clone(),
                port: self.port,
            },
            (None, Some(path)) => agent::Target::Unix(path.clone()),
            // clap's group makes one of them required.
            (None, None) => agent::Target::Unix(PathBuf::new()),
        }
    }
}

async fn health_once(uds: &Path, port: u32, timeout: Duration) -> anyhow::Result<(bool, String)> {
    let client = HealthClient::new(hull_proto::connect_agent(uds, port, timeout).await?);
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

/// How `hullctl pods` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// The methods hull-vmm's API serves.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Method {
    #[value(name = "GET")]
    Get,
    #[value(name = "PUT")]
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

async fn api(sock: &Path, method: Method, path: &str, body: Option<&str>) -> anyhow::Result<bool> {
    let r = pods::request(sock, method.as_str(), path, body.unwrap_or("")).await?;
    if !r.body.is_empty() {
        println!("{}", r.body);
    }
    let ok = (200..300).contains(&r.status);
    if !ok {
        eprintln!("hullctl: status {}", r.status);
    }
    Ok(ok)
}

/// Runs a container command; returns the exit code for hullctl.
async fn container_cmd(cmd: &Cmd) -> anyhow::Result<i32> {
    let status = |s: u32| i32::try_from(s).unwrap_or(255);
    match cmd {
        Cmd::SandboxCreate { to, id, hostname } => {
            agent::Agent::connect(&to.target())
                .await?
                .create_sandbox(id, hostname)
                .await?;
            Ok(0)
        }
        Cmd::SandboxDestroy { to, id } => {
            agent::Agent::connect(&to.target())
                .await?
                .destroy_sandbox(id)
                .await?;
            Ok(0)
        }
        Cmd::Run {
            to,
            id,
            rootfs,
            block,
            fstype,
            hostname,
            detach,
            args,
        } => {
            let a = agent::Agent::connect(&to.target()).await?;
            let storages = match block {
                Some(serial) => vec![agent::block_storage(serial, fstype, rootfs)?],
                None => Vec::new(),
            };
            a.run(id, &agent::spec(rootfs, args, hostname), storages)
                .await?;
            if *detach {
                return Ok(0);
            }
            let st = a.attach_and_wait(id, "").await?;
            a.remove(id).await?;
            Ok(status(st))
        }
        Cmd::Exec {
            to,
            id,
            exec_id,
            args,
        } => {
            let a = agent::Agent::connect(&to.target()).await?;
            a.exec(id, exec_id, args).await?;
            Ok(status(a.attach_and_wait(id, exec_id).await?))
        }
        Cmd::Rm { to, id } => {
            agent::Agent::connect(&to.target())
                .await?
                .remove(id)
                .await?;
            Ok(0)
        }
        Cmd::AgentBench {
            unix,
            rootfs,
            n,
            stdout_mib,
        } => {
            bench::run(unix, rootfs, (*n).max(1), *stdout_mib).await?;
            Ok(0)
        }
        Cmd::AgentHealth { .. }
        | Cmd::Api { .. }
        | Cmd::TaskStats { .. }
        | Cmd::Pods { .. }
        | Cmd::Inspect { .. }
        | Cmd::Metrics { .. }
        | Cmd::Console { .. }
        | Cmd::Debug { .. }
        | Cmd::Disk { .. }
        | Cmd::Monitor { .. }
        | Cmd::Node { .. } => {
            unreachable!("handled in main")
        }
    }
}

fn main() {
    let args = Args::parse();
    // Like the shim it stands in for (agent-bench, run, exec).
    hull_heap::tune_for_stream_messages();
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
    let ok_code = |ok: bool| if ok { 0 } else { 1 };
    let res = rt.block_on(async {
        match &args.cmd {
            Cmd::AgentHealth {
                uds,
                port,
                wait,
                timeout,
            } => agent_health(
                uds,
                *port,
                Duration::from_secs(*wait),
                Duration::from_secs(*timeout),
            )
            .await
            .map(ok_code),
            Cmd::Api {
                sock,
                method,
                path,
                body,
            } => api(sock, *method, path, body.as_deref()).await.map(ok_code),
            Cmd::TaskStats {
                address,
                timeout,
                id,
            } => task::stats(address, id, Duration::from_secs(*timeout))
                .await
                .map(|j| {
                    println!("{j}");
                    0
                }),
            Cmd::Pods { output } => pods::pods(*output == Output::Json).await,
            Cmd::Inspect { pod } => pods::inspect(pod).await,
            Cmd::Metrics { pod } => pods::metrics(pod).await,
            Cmd::Debug {
                pod,
                tool,
                tty,
                no_tty,
                args,
            } => {
                let pod = pods::find(Path::new(hull_contract::pods::POD_STATE_ROOT), pod)?;
                let tty = match (tty, no_tty) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                };
                let req = debug::Request { tool, args, tty };
                debug::run(&pod, &req).await
            }
            Cmd::Console { pod, agent, follow } => {
                let source = if *agent {
                    guest::LogSource::Agent
                } else {
                    guest::LogSource::Kernel
                };
                let pod = pods::find(Path::new(hull_contract::pods::POD_STATE_ROOT), pod)?;
                guest::console(&pod, source, *follow).await
            }
            Cmd::Disk { cmd } => {
                let root = Path::new(hull_contract::pods::POD_STATE_ROOT);
                match cmd {
                    DiskCmd::Attach {
                        pod,
                        image,
                        read_only,
                    } => disk::attach(&pods::find(root, pod)?, image, *read_only).await,
                    DiskCmd::Detach { pod, slot } => {
                        disk::detach(&pods::find(root, pod)?, *slot).await
                    }
                }
            }
            Cmd::Monitor { listen } => monitor::run(listen).await,
            Cmd::Node { cmd } => node::run(cmd),
            other => container_cmd(other).await,
        }
    });
    match res {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hullctl: {e:#}");
            std::process::exit(1);
        }
    }
}
