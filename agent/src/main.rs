//! `hull-agent`: `/init` of the hull guest, or `--listen unix:PATH` on the host for tests.
//! `hull-agent __hull_init` is the container init helper (see `engine::init`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hull_agent::config::ListenAddr;
use hull_agent::engine::{Engine, EngineConfig};
use hull_agent::logbuf::LogBuffer;
use hull_agent::sandbox::Sandbox;
use hull_agent::service::AgentState;
use hull_agent::storage::StorageConfig;
use hull_agent::{engine, init, portfwd, reaper, server, switch_root, sys, AGENT_VERSION};
use tokio::signal::unix::{signal, SignalKind};

/// How long a host-mode agent told to stop lets in-flight RPCs finish.
const SERVER_SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

#[derive(Debug, Parser)]
#[command(name = "hull-agent", version, about = "hull guest agent (PID 1)")]
struct Args {
    /// Where the ttrpc service listens: vsock:PORT (guest) or unix:PATH (host mode).
    #[arg(long, default_value = "vsock:1024")]
    listen: ListenAddr,
    /// Where port-forward streams are served (hull-proto `portfwd`): vsock:PORT or
    /// unix:PATH; default vsock:1025 when --listen is a vsock, none in host mode.
    #[arg(long)]
    portfwd_listen: Option<ListenAddr>,
    /// Where `hullctl debug` is served (hull-contract `debug_shell`): vsock:PORT or unix:PATH;
    /// default vsock:1026 when the kernel command line has HULL_DEBUG_SHELL=1, else none.
    #[arg(long)]
    debug_shell_listen: Option<ListenAddr>,
    /// State directory; CopyFile writes only below it.
    #[arg(long, default_value = "/run/hull")]
    root: PathBuf,
    /// cgroup v2 directory under which containers get their cgroups.
    #[arg(long, default_value = "/sys/fs/cgroup/hull")]
    cgroup_parent: PathBuf,
    /// Directory of the pod's virtio-fs share; given in host mode, it is used as is.
    #[arg(long)]
    share_dir: Option<PathBuf>,
    /// Where resolv.conf, hosts and hostname are written (default /etc, or ROOT/etc in host mode).
    #[arg(long)]
    etc_dir: Option<PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            listen: ListenAddr::default(),
            portfwd_listen: None,
            debug_shell_listen: None,
            root: "/run/hull".into(),
            cgroup_parent: "/sys/fs/cgroup/hull".into(),
            share_dir: None,
            etc_dir: None,
        }
    }
}

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == engine::init::INIT_ARG)
    {
        engine::init::main();
    }
    let is_init = std::process::id() == 1;
    if is_init {
        // The boot profile's "/init started" (bench/vmm). Nothing to report on failure yet:
        // tracing is not set up, and the ready mark will fail the same way.
        let _ = sys::boot_timer_mark(hull_contract::boot_timer::INIT_STARTED);
    }
    if is_init && switch_root::needed() {
        // Containers cannot pivot_root while `/` is the initramfs.
        if let Err(e) = switch_root::switch() {
            eprintln!(
                "hull-agent: cannot leave the initramfs ({e}); containers will fail to start"
            );
        }
    }
    // The first console line: the lab smoke test and the VMM's boot log look for it.
    eprintln!(
        "hull-agent {AGENT_VERSION} starting{}",
        if is_init { " as PID 1" } else { "" }
    );
    hull_heap::tune_for_stream_messages();
    let logs = LogBuffer::new(hull_agent::logbuf::DEFAULT_CAPACITY);
    init_tracing(&logs, is_init);

    let args = match Args::try_parse() {
        Ok(args) => args,
        // The kernel hands unknown cmdline words to init as arguments; PID 1 must not die of
        // them, so it logs and runs with defaults.
        Err(e) if is_init => {
            tracing::warn!("ignoring init arguments: {}", e.kind());
            Args::default()
        }
        Err(e) => e.exit(),
    };

    if is_init {
        for failure in init::mount_pseudo_filesystems() {
            tracing::error!("{failure}");
        }
        if let Err(e) = sys::loopback_up() {
            tracing::error!("bring up loopback: {e}");
        }
    } else if let Err(e) = isolate_host_mode() {
        eprintln!("hull-agent: {e:#}");
        std::process::exit(1);
    }

    // One thread for every connection and stream; work that blocks (launching processes,
    // mounts, the freezer, cgroup removal) goes to the blocking pool. A unary RPC then costs
    // no cross-thread wake-up: with two workers Health.Check took 80-96 us p50 on a 2-core VM,
    // with this 24-36 us (bench/agent/run), at the same stdout throughput.
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("agent")
        .build()
        .context("create tokio runtime")
        .and_then(|rt| rt.block_on(run(args, is_init, logs)));

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

/// Host mode gets its own UTS and mount namespaces (while still single-threaded), so
/// CreateSandbox's hostname and the storages it mounts never touch the host.
fn isolate_host_mode() -> anyhow::Result<()> {
    use nix::mount::MsFlags;
    use nix::sched::CloneFlags;
    nix::sched::unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS)
        .context("unshare uts+mount namespaces for host mode")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private in host mode")?;
    Ok(())
}

async fn run(args: Args, is_init: bool, logs: LogBuffer) -> anyhow::Result<()> {
    if !is_init {
        // Orphans of host-mode containers must come back to us, as they would to PID 1.
        nix::sys::prctl::set_child_subreaper(true).context("become child subreaper")?;
    }
    let (reaper_handle, reaper_fut) = reaper::new();
    let reaper = tokio::spawn(reaper_fut);
    std::fs::create_dir_all(&args.root).with_context(|| format!("create {:?}", args.root))?;
    let engine = Engine::new(
        EngineConfig {
            init_exe: "/proc/self/exe".into(),
            cgroup_parent: args.cgroup_parent.clone(),
            host_mode: !is_init,
        },
        reaper_handle,
    )
    .map_err(|e| anyhow::anyhow!("{}", engine::error::chain(&e)))?;
    let etc_dir = args.etc_dir.clone().unwrap_or_else(|| {
        if is_init {
            "/etc".into()
        } else {
            args.root.join("etc")
        }
    });
    let storage = StorageConfig {
        share_premounted: args.share_dir.is_some(),
        share_dir: args
            .share_dir
            .clone()
            .unwrap_or_else(|| args.root.join("shared")),
    };
    let debug_shell = args.debug_shell_listen.clone().or_else(|| {
        hull_agent::debug_shell::enabled().then_some(ListenAddr::Vsock {
            port: hull_contract::vsock::DEBUG_PORT,
        })
    });
    if let Some(addr) = &debug_shell {
        hull_agent::debug_shell::start(addr, engine.clone(), args.root.join("debug"))
            .with_context(|| format!("debug shell listener {addr:?}"))?;
        tracing::warn!("debug shell: serving on {addr:?} (the node's hull.toml turned it on)");
    }
    let state = AgentState {
        engine,
        sandbox: Arc::new(Sandbox::new(etc_dir, storage, !is_init)),
        logs,
        copy_root: args.root.clone(),
        rpc: hull_agent::rpc_stats::RpcStats::default(),
    };
    let portfwd = args.portfwd_listen.clone().or(match args.listen {
        ListenAddr::Vsock { .. } => Some(ListenAddr::Vsock {
            port: hull_contract::vsock::PORTFWD_PORT,
        }),
        ListenAddr::Unix(_) => None,
    });
    if let Some(addr) = &portfwd {
        // Before the ttrpc listener: the boot-timer mark and SERVING mean "all of it is up".
        portfwd::start(addr).with_context(|| format!("port-forward listener {addr:?}"))?;
    }
    let mut server = server::start(&args.listen, state).await?;
    tracing::info!("ready: serving ttrpc on {}", args.listen.to_ttrpc());

    if is_init {
        if let Err(e) = sys::boot_timer_mark(hull_contract::boot_timer::AGENT_READY) {
            tracing::warn!("boot timer mark: {e}");
        }
        if hull_agent::kmsg::wanted() {
            // Off the runtime's thread: every console byte is a VM exit. Not through a held
            // stderr lock either: the agent's own log lines (tracing, on this runtime's one
            // thread) would wait for the whole copy, and so would every RPC.
            tokio::task::spawn_blocking(|| {
                if let Err(e) = hull_agent::kmsg::copy_to(&mut std::io::stderr()) {
                    tracing::warn!("copy the kernel log to the console: {e}");
                }
            });
        }
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
    // ttrpc waits up to 5 s per connection for its handlers, and the shim's long polls
    // (GetOOMEvent, stdout reads) only end with their container: the shim that sent SIGTERM
    // waited that long for every pod, and `shim delete` after it.
    match tokio::time::timeout(SERVER_SHUTDOWN_GRACE, server.shutdown()).await {
        Ok(r) => r.context("shut down ttrpc server")?,
        Err(_) => tracing::debug!("ttrpc handlers still running at exit"),
    }
    for addr in [Some(&args.listen), portfwd.as_ref(), debug_shell.as_ref()]
        .into_iter()
        .flatten()
    {
        if let ListenAddr::Unix(path) = addr {
            let _ = std::fs::remove_file(path);
        }
    }
    reaper.abort();
    Ok(())
}

/// PID 1 must never exit (the kernel would panic): after a fatal error it says why (on the
/// console, or in the kernel log without one) and keeps reaping, so the shim sees a VM that
/// does not answer and reports its logs.
fn park_as_init(why: &str) -> ! {
    // Through tracing (set up by now): to the console, or the kernel log without one.
    tracing::error!("fatal: {why}; parking as init");
    loop {
        let _ = reaper::reap_exited();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Every line goes to the in-memory log (`Guest.GetLogs`). As PID 1, stderr is the guest
/// console, an emulated 8250 that costs a VM exit per byte: an INFO line there cost the boot
/// ~100 ms in the lab (bench/vmm, guest/README), so the console gets warnings and errors only
/// unless the kernel command line sets `RUST_LOG` (the kernel passes it to /init).
///
/// `RUST_LOG` is one level (`error` … `trace`), not `EnvFilter` directives: their parser
/// made the initrd 105 KB (gzip-ed) bigger, and the binary stays in guest RAM for the pod's
/// life (guest/README).
fn init_tracing(logs: &LogBuffer, is_init: bool) {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok());
    let console = if is_init && from_env.is_none() {
        LevelFilter::WARN
    } else {
        LevelFilter::TRACE
    };
    // A guest without a console (no UART, the pods' default): the kernel log instead, where
    // the host finds it after a panic. The kernel stamps the time.
    let line = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false);
    let line = if is_init && hull_agent::kmsg::console_missing() {
        // A panic's message goes to stderr, /dev/null here: through tracing it reaches the
        // kernel log (and the crash record, if PID 1's death panics the kernel) and the
        // in-memory log.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            tracing::error!("panic: {info}");
            default_hook(info);
        }));
        line.without_time()
            .with_writer(std::sync::Mutex::new(hull_agent::kmsg::KernelLog::default()))
            .boxed()
    } else {
        line.with_writer(std::io::stderr).boxed()
    };
    tracing_subscriber::registry()
        .with(from_env.unwrap_or(LevelFilter::INFO))
        .with(line.with_filter(console))
        .with(logs.layer())
        .init();
}
