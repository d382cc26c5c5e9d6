//! The ttrpc server: binds the listen address and registers every service.

use std::sync::Arc;

use hull_proto::health_ttrpc::create_health;

use crate::config::ListenAddr;
use crate::service::health::HealthService;

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
    #[error("remove stale socket {path}: {source}")]
    StaleSocket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr`, registers the services and starts accepting. The returned server keeps
/// serving until it is dropped or shut down.
pub async fn start(addr: &ListenAddr) -> Result<ttrpc::r#async::Server, ServerError> {
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
    let mut server = ttrpc::r#async::Server::new()
        .bind(&ttrpc_addr)
        .map_err(|source| ServerError::Bind {
            addr: ttrpc_addr.clone(),
            source,
        })?
        .register_service(health);
    server.start().await.map_err(|source| ServerError::Start {
        addr: ttrpc_addr,
        source,
    })?;
    Ok(server)
}
