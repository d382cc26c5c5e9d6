//! Command-line configuration of the agent: where it listens and where host mode keeps state.

use std::path::PathBuf;
use std::str::FromStr;

use hull_contract::vsock::AGENT_PORT;

/// Errors in the agent's command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("listen address {0:?}: expected vsock:PORT or unix:PATH")]
    BadScheme(String),
    #[error("listen address {0:?}: bad vsock port")]
    BadPort(String),
    #[error("listen address {0:?}: unix socket path must be absolute")]
    RelativeUnixPath(String),
}

/// Where the agent's ttrpc service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// Guest mode: any CID, this port.
    Vsock { port: u32 },
    /// Host mode: a Unix socket (tests of the engine without a VM).
    Unix(PathBuf),
}

impl Default for ListenAddr {
    fn default() -> Self {
        ListenAddr::Vsock { port: AGENT_PORT }
    }
}

impl FromStr for ListenAddr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(port) = s.strip_prefix("vsock:") {
            let port = port
                .trim_start_matches("//")
                .parse::<u32>()
                .map_err(|_| ConfigError::BadPort(s.to_owned()))?;
            return Ok(ListenAddr::Vsock { port });
        }
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path.trim_start_matches("//"));
            if !path.is_absolute() {
                return Err(ConfigError::RelativeUnixPath(s.to_owned()));
            }
            return Ok(ListenAddr::Unix(path));
        }
        Err(ConfigError::BadScheme(s.to_owned()))
    }
}

impl ListenAddr {
    /// The address in the form ttrpc's `Server::bind` takes. This is the only place that
    /// knows ttrpc's address syntax.
    pub fn to_ttrpc(&self) -> String {
        match self {
            // -1 is VMADDR_CID_ANY in ttrpc's vsock syntax.
            ListenAddr::Vsock { port } => format!("vsock://-1:{port}"),
            ListenAddr::Unix(path) => format!("unix://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vsock_and_unix() {
        assert_eq!("vsock:1024".parse(), Ok(ListenAddr::Vsock { port: 1024 }));
        assert_eq!("vsock://77".parse(), Ok(ListenAddr::Vsock { port: 77 }));
        assert_eq!(
            "unix:/run/a.sock".parse(),
            Ok(ListenAddr::Unix(PathBuf::from("/run/a.sock")))
        );
        assert_eq!(ListenAddr::default().to_ttrpc(), "vsock://-1:1024");
        assert_eq!(
            ListenAddr::Unix("/x/y".into()).to_ttrpc(),
            "unix:///x/y".to_owned()
        );
    }

    #[test]
    fn rejects_bad_addresses() {
        assert!(matches!(
            "tcp:1".parse::<ListenAddr>(),
            Err(ConfigError::BadScheme(_))
        ));
        assert!(matches!(
            "vsock:x".parse::<ListenAddr>(),
            Err(ConfigError::BadPort(_))
        ));
        assert!(matches!(
            "vsock:-1".parse::<ListenAddr>(),
            Err(ConfigError::BadPort(_))
        ));
        assert!(matches!(
            "unix:rel/a.sock".parse::<ListenAddr>(),
            Err(ConfigError::RelativeUnixPath(_))
        ));
    }
}
