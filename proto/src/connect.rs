//! The host side of hull-vmm's hybrid vsock (DESIGN.md §1): connect to the VMM's Unix socket,
//! write `CONNECT <port>\n`, read `OK <n>\n`; from then on the stream is the guest connection.
//!
//! The handshake's text is `hull_contract::vsock`'s (the VMM parses it from there); this is
//! the only async host side of it: the shim and hullctl both call it.
//! Every step is bounded by one deadline, because a VMM that accepted the connection but whose
//! guest never answers must not hang a containerd task RPC.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use ttrpc::asynchronous::transport::Socket;
use ttrpc::asynchronous::Client;

use crate::line::{read_line, Line};

use hull_contract::vsock;

/// Why the hybrid vsock connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to hybrid vsock socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hybrid vsock {path} port {port}: {source}")]
    Io {
        path: PathBuf,
        port: u32,
        source: std::io::Error,
    },
    #[error("hybrid vsock {path} port {port}: connection closed during the handshake (is anything listening on the guest port?)")]
    Closed { path: PathBuf, port: u32 },
    #[error("hybrid vsock {path} port {port}: unexpected reply {reply:?}")]
    BadReply {
        path: PathBuf,
        port: u32,
        reply: String,
    },
    #[error("hybrid vsock {path} port {port}: no answer within {timeout:?}")]
    Timeout {
        path: PathBuf,
        port: u32,
        timeout: Duration,
    },
}

/// Connects to guest `port` through the hybrid vsock socket `uds` and returns the stream,
/// positioned right after the handshake.
pub async fn connect_stream(
    uds: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, ConnectError> {
    tokio::time::timeout(timeout, handshake(uds, port))
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Timeout {
                path: uds.to_path_buf(),
                port,
                timeout,
            })
        })
}

/// Connects to guest `port` through `uds` and returns a ttrpc client on that connection.
pub async fn connect_agent(
    uds: &Path,
    port: u32,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    let stream = connect_stream(uds, port, timeout).await?;
    Ok(Client::new(Socket::from(stream)))
}

async fn handshake(uds: &Path, port: u32) -> Result<UnixStream, ConnectError> {
    let mut s = UnixStream::connect(uds)
        .await
        .map_err(|source| ConnectError::Connect {
            path: uds.to_path_buf(),
            source,
        })?;
    let io = |source| ConnectError::Io {
        path: uds.to_path_buf(),
        port,
        source,
    };
    s.write_all(vsock::connect_request(port).as_bytes())
        .await
        .map_err(io)?;
    let line = match read_line(&mut s, vsock::MAX_REPLY_LINE).await.map_err(io)? {
        Line::Closed => {
            return Err(ConnectError::Closed {
                path: uds.to_path_buf(),
                port,
            })
        }
        Line::Text(l) => l,
        Line::TooLong => b"(a reply line longer than 64 bytes)".to_vec(),
    };
    if vsock::parse_ok(&line).is_none() {
        return Err(ConnectError::BadReply {
            path: uds.to_path_buf(),
            port,
            reply: String::from_utf8_lossy(&line).into_owned(),
        });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    use super::*;

    /// A fake VMM socket: reads the request line, answers `reply`, then echoes what follows.
    async fn fake_vmm(reply: &'static [u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while s.read(&mut b).await.expect("read") == 1 && b[0] != b'\n' {
                req.push(b[0]);
            }
            assert_eq!(req, b"CONNECT 1024");
            s.write_all(reply).await.expect("reply");
            let mut buf = [0u8; 16];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn ok_reply_leaves_the_guest_bytes_in_the_stream() {
        // The guest's first bytes arrive in the same segment as the OK line.
        let (_dir, path) = fake_vmm(b"OK 1073741824\nguest").await;
        let mut s = connect_stream(&path, 1024, Duration::from_secs(5))
            .await
            .expect("connect");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"guest");
        s.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn errors_name_the_socket_and_port() {
        let (_dir, path) = fake_vmm(b"ERR no listener\n").await;
        let e = connect_agent(&path, 1024, Duration::from_secs(5))
            .await
            .err()
            .expect("bad reply");
        assert!(
            matches!(e, ConnectError::BadReply { ref reply, .. } if reply == "ERR no listener")
        );
        assert!(e.to_string().contains("port 1024"), "{e}");

        let (_dir, path) = fake_vmm(b"").await;
        // The fake closes only when the client does; a silent peer ends in the timeout.
        let e = connect_agent(&path, 1024, Duration::from_millis(200))
            .await
            .err()
            .expect("silent peer");
        assert!(matches!(e, ConnectError::Timeout { .. }), "{e}");

        let missing = path.with_file_name("absent.sock");
        let e = connect_agent(&missing, 1024, Duration::from_secs(5))
            .await
            .err()
            .expect("no socket");
        assert!(matches!(e, ConnectError::Connect { .. }), "{e}");
    }

    #[tokio::test]
    async fn peer_closing_mid_handshake_is_closed_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            drop(s);
        });
        let e = connect_stream(&path, 7, Duration::from_secs(5))
            .await
            .expect_err("closed");
        assert!(matches!(e, ConnectError::Closed { port: 7, .. }), "{e}");
    }

    #[tokio::test]
    async fn overlong_reply_is_refused() {
        let (_dir, path) = fake_vmm(&[b'O'; 200]).await;
        let e = connect_stream(&path, 1024, Duration::from_secs(5))
            .await
            .expect_err("too long");
        assert!(matches!(e, ConnectError::BadReply { .. }), "{e}");
    }
}
