//! The shim server: log to the bundle's `log` FIFO, listen on `-socket`, serve the task API
//! under both service names, tell `start` it is up (close stdout), and run until Shutdown.
//!
//! No SIGCHLD reaper and no subreaper: the crate's reaper `waitpid(-1)`s every child and would
//! steal the exit status of the agent/VMM children that `tokio::process` waits for.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::Flags;
use ttrpc::asynchronous::transport::Listener;
use ttrpc::asynchronous::Server;

use super::{io_err, BootstrapError, CONFIG_OPTION_ENV, SANDBOX_ID_ENV};
use crate::address::socket_path;
use crate::events::Events;
use crate::pod::Pod;
use crate::task::TaskService;

const TASK_V3: &str = "containerd.task.v3.Task";
const TASK_V2: &str = "containerd.task.v2.Task";

pub(crate) async fn run(flags: Flags) -> Result<(), BootstrapError> {
    let bundle = super::bundle_dir(&flags)?;
    let config_option = std::env::var_os(CONFIG_OPTION_ENV).map(PathBuf::from);
    let (config_path, cfg) = crate::options::load_config(config_option.as_deref(), None)?;
    let level = if flags.debug {
        "debug"
    } else {
        cfg.log.level.as_str()
    };
    let sandbox_id = std::env::var(SANDBOX_ID_ENV).unwrap_or_else(|_| flags.id.clone());
    init_logging(&bundle.join("log"), level, &sandbox_id);
    tracing::info!(id = %flags.id, config = %config_path.display(), "shim serving");

    let Some(listener) = listen(&flags.socket).await? else {
        // Another server of this pod won the race and is answering; `start` has the address.
        signal_started();
        return Ok(());
    };
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| BootstrapError::Env("TTRPC_ADDRESS"))?;
    let events = Events::connect(&ttrpc_address, flags.namespace.clone()).await?;
    let exit = Arc::new(ExitSignal::default());
    let pod = Arc::new(Pod::new(sandbox_id, cfg, events, Arc::clone(&exit)));

    let mut server = Server::new()
        .add_listener(Listener::try_from(listener).map_err(io_err("ttrpc listener"))?)
        .register_service(task_services(TaskService::new(pod)));
    server.start().await.map_err(|e| BootstrapError::Io {
        context: "start the ttrpc server".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    signal_started();

    exit.wait().await;
    tracing::info!("shutting down");
    // Bounded: a peer that keeps its connection open must not keep the shim alive.
    if tokio::time::timeout(std::time::Duration::from_secs(5), server.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("ttrpc server did not shut down within 5 s; exiting anyway");
    }
    remove_socket(&flags.socket);
    Ok(())
}

/// One task service under both names: containerd 1.6/1.7 call v2, 2.x calls v3; the wire
/// messages are identical. `Service` is not `Clone`, so the generator runs twice.
fn task_services(
    svc: TaskService,
) -> std::collections::HashMap<String, ttrpc::asynchronous::Service> {
    let t: Arc<dyn containerd_shim::Task + Send + Sync> = Arc::new(svc);
    let mut services = create_task(Arc::clone(&t));
    let v2 = create_task(t).remove(TASK_V3);
    if let Some(v2) = v2 {
        services.insert(TASK_V2.to_owned(), v2);
    }
    services
}

/// Binds `address`; `None` if a live server already holds it. A stale socket is replaced.
async fn listen(address: &str) -> Result<Option<UnixListener>, BootstrapError> {
    let path = Path::new(socket_path(address));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    }
    let bind = || UnixListener::bind(path).map_err(io_err(format!("listen on {address}")));
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if super::start::answers(address).await {
                return Ok(None);
            }
            let _ = std::fs::remove_file(path);
            bind().map(Some)
        }
        Err(e) => Err(io_err(format!("listen on {address}"))(e)),
    }
}

fn remove_socket(address: &str) {
    let _ = std::fs::remove_file(socket_path(address));
}

/// `start` copies our stdout until EOF; pointing stdout at stderr (/dev/null) ends that copy.
fn signal_started() {
    // SAFETY: dup2 on the process's own standard descriptors; both stay valid, and nothing
    // holds a Rust object owning fd 1 that would be confused by its replacement.
    let rc = unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    if rc < 0 {
        tracing::error!(
            "closing stdout for start: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// tracing to containerd's `log` FIFO in the bundle, which containerd 1.6 copies into its own
/// log, every line prefixed with the pod's sandbox id (`pod_log`). Without the FIFO (a test),
/// logs go nowhere rather than to stdout, which is `start`'s.
fn init_logging(fifo: &Path, level: &str, sandbox_id: &str) {
    // One level for everything, as `log.level` says (validated by the config). Not an
    // `EnvFilter`: its directive parser brings a regex engine into every pod's shim.
    let filter = level
        .parse::<tracing_subscriber::filter::LevelFilter>()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    // Opening a FIFO for writing blocks until containerd reads it; containerd opens it first.
    match std::fs::OpenOptions::new().write(true).open(fifo) {
        Ok(f) => {
            let _ = tracing_subscriber::fmt()
                .with_max_level(filter)
                .with_ansi(false)
                .with_writer(super::pod_log::Prefixed::new(sandbox_id, f))
                .try_init();
        }
        Err(_) => {
            let _ = tracing_subscriber::fmt()
                .with_max_level(filter)
                .with_writer(std::io::sink)
                .try_init();
        }
    }
}
