//! The port-forward stream (DESIGN §1, CRI PortForward): guest vsock port
//! [`PORTFWD_VSOCK_PORT`]. For each TCP connection it forwards, the host opens one hybrid
//! vsock connection to that port and writes `PORT <n>\n`; the agent dials localhost:n in the
//! guest and answers `OK\n`, or `ERR <reason>\n` and closes. After `OK` the stream carries the
//! TCP connection's bytes both ways.
//!
//! This is the only copy of the header's format: the agent serves it, the shim speaks it.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::line::{read_line, Line};

/// The guest vsock port the agent serves port-forward streams on.
pub const PORTFWD_VSOCK_PORT: u32 = 1025;

/// Longest header line accepted (`ERR` reasons are cut to fit).
const MAX_LINE: usize = 200;

/// Why a port-forward header exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PortFwdError {
    #[error("port-forward stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("port-forward stream closed before its header line")]
    Closed,
    #[error("port-forward stream: malformed header {0:?}")]
    Malformed(String),
    #[error("guest port {port}: {reason}")]
    Refused { port: u16, reason: String },
}

/// Host side: asks for guest `port` and waits for the agent's answer. On `Ok` the stream is
/// the guest connection.
pub async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    port: u16,
) -> Result<(), PortFwdError> {
    s.write_all(format!("PORT {port}\n").as_bytes()).await?;
    let line = header(s).await?;
    if line == "OK" {
        return Ok(());
    }
    match line.strip_prefix("ERR ") {
        Some(reason) => Err(PortFwdError::Refused {
            port,
            reason: reason.to_owned(),
        }),
        None => Err(PortFwdError::Malformed(line)),
    }
}

/// Agent side: reads the requested port.
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Result<u16, PortFwdError> {
    let line = header(s).await?;
    line.strip_prefix("PORT ")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .ok_or(PortFwdError::Malformed(line))
}

/// Agent side: answers a request; `Err(reason)` is sent as `ERR reason` (one line).
pub async fn reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    result: Result<(), String>,
) -> std::io::Result<()> {
    let line = match result {
        Ok(()) => "OK\n".to_owned(),
        Err(reason) => {
            let mut r: String = reason.replace(['\n', '\r'], " ");
            // Leaves room for "ERR " and the newline; cut on a character boundary.
            while r.len() > MAX_LINE - 5 {
                r.pop();
            }
            format!("ERR {r}\n")
        }
    };
    s.write_all(line.as_bytes()).await?;
    s.flush().await
}

async fn header<S: AsyncRead + Unpin>(s: &mut S) -> Result<String, PortFwdError> {
    match read_line(s, MAX_LINE).await? {
        Line::Text(l) => Ok(String::from_utf8_lossy(&l).into_owned()),
        Line::Closed => Err(PortFwdError::Closed),
        Line::TooLong => Err(PortFwdError::Malformed(format!(
            "a line longer than {MAX_LINE} bytes"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_request_and_its_answers() {
        let (mut host, mut guest) = tokio::io::duplex(1024);
        let agent = tokio::spawn(async move {
            let port = read_request(&mut guest).await.unwrap();
            reply(&mut guest, Ok(())).await.unwrap();
            guest.write_all(b"payload").await.unwrap();
            port
        });
        request(&mut host, 8080).await.unwrap();
        let mut rest = [0u8; 7];
        host.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"payload");
        assert_eq!(agent.await.unwrap(), 8080);

        let (mut host, mut guest) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            read_request(&mut guest).await.unwrap();
            let long = format!("connection refused\n{}", "x".repeat(500));
            reply(&mut guest, Err(long)).await.unwrap();
        });
        match request(&mut host, 9).await {
            Err(PortFwdError::Refused { port: 9, reason }) => {
                assert!(reason.starts_with("connection refused x"), "{reason}");
                assert!(reason.len() <= MAX_LINE, "{}", reason.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_requests_are_refused() {
        for bad in [
            &b"PORT 0\n"[..],
            b"PORT 65536\n",
            b"PORT x\n",
            b"CONNECT 80\n",
            b"PORT 80",
        ] {
            let mut s = bad;
            assert!(read_request(&mut s).await.is_err(), "{bad:?}");
        }
        let long = format!("PORT {}\n", "1".repeat(300));
        let mut s = long.as_bytes();
        assert!(matches!(
            read_request(&mut s).await,
            Err(PortFwdError::Malformed(_))
        ));
    }
}
