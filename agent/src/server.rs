//! The ttrpc server: binds the listen address and registers every service.

use std::sync::Arc;

use hull_proto::containers_ttrpc::create_containers;
use hull_proto::events_ttrpc::create_events;
use hull_proto::files_ttrpc::create_files;
use hull_proto::guest_ttrpc::create_guest;
use hull_proto::health_ttrpc::create_health;
use hull_proto::network_ttrpc::create_network;
use hull_proto::processes_ttrpc::create_processes;
use hull_proto::sandbox_ttrpc::create_sandbox;

use crate::config::ListenAddr;
use crate::rpc_stats::instrument;
use crate::service::containers::ContainersService;
use crate::service::events::EventsService;
use crate::service::files::FilesService;
use crate::service::guest::GuestService;
use crate::service::health::HealthService;
use crate::service::network::NetworkService;
use crate::service::processes::ProcessesService;
use crate::service::sandbox::SandboxService;
use crate::service::AgentState;

/// Errors starting the agent's server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("start ttrpc server on {addr}: {source}")]
    Start {
        addr: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("remove stale socket or move new socket to {path}: {source}")]
    StaleSocket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr`, registers the services and starts accepting. The returned server keeps
/// serving until it is dropped or shut down.
pub async fn start(
    addr: &ListenAddr,
    state: AgentState,
) -> Result<ttrpc::r#async::Server, ServerError> {
    if let ListenAddr::Unix(path) = addr {
        // A socket file left by a killed agent would make bind fail with EADDRINUSE.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ServerError::StaleSocket {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
    }
    let ttrpc_addr = addr.to_ttrpc();
    let health = create_health(Arc::new(HealthService::new()));
    let server = match addr {
        // ttrpc binds, then listens: a client that sees the socket file in between is refused.
        // Bind under a temporary name and rename once listening, so the file appears only
        // when it accepts connections.
        ListenAddr::Unix(path) => {
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            let tmp_addr = ListenAddr::Unix(tmp.clone()).to_ttrpc();
            let server = ttrpc::r#async::Server::new()
                .bind(&tmp_addr)
                .map_err(|source| ServerError::Bind {
                    addr: tmp_addr,
                    source,
                })?;
            std::fs::rename(&tmp, path).map_err(|source| ServerError::StaleSocket {
                path: path.display().to_string(),
                source,
            })?;
            server
        }
        ListenAddr::Vsock { .. } => {
            ttrpc::r#async::Server::new()
                .bind(&ttrpc_addr)
                .map_err(|source| ServerError::Bind {
                    addr: ttrpc_addr.clone(),
                    source,
                })?
        }
    };
    let rpc = state.rpc.clone();
    let timed = |services| instrument(services, &rpc);
    let mut server = server
        .register_service(timed(health))
        .register_service(timed(create_sandbox(Arc::new(SandboxService(
            state.clone(),
        )))))
        .register_service(timed(create_containers(Arc::new(ContainersService(
            state.clone(),
        )))))
        .register_service(timed(create_processes(Arc::new(ProcessesService(
            state.clone(),
        )))))
        .register_service(timed(create_events(Arc::new(EventsService(state.clone())))))
        .register_service(timed(create_files(Arc::new(FilesService(state.clone())))))
        .register_service(timed(create_guest(Arc::new(GuestService(state)))))
        .register_service(timed(create_network(Arc::new(NetworkService))));
    server.start().await.map_err(|source| ServerError::Start {
        addr: ttrpc_addr,
        source,
    })?;
    Ok(server)
}
