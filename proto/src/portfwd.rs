//! The port-forward stream (DESIGN §1, CRI PortForward): guest vsock port
//! [`hull_contract::vsock::PORTFWD_PORT`]. For each TCP connection it forwards, the host
//! opens one hybrid vsock connection to that port and writes `PORT <n>\n`; the agent dials
//! localhost:n in the guest and answers `OK\n`, or `ERR <reason>\n` and closes. After `OK` the
//! stream carries the TCP connection's bytes both ways ([`splice`] on both ends).
//!
//! This is the only copy of the header's format: the agent serves it, the shim speaks it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::line::{read_line, Line};

/// Once one direction of a forwarded connection has ended, how long the other may go on
/// before both are closed. containerd gives a PortForward stream the same second; hull-vmm
/// turns a host-side end of stream into a full vsock shutdown, so a longer half-closed life
/// is not possible through the VM anyway, and a peer that never closes must not hold the
/// stream (and its fds on both sides) for the pod's life.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

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

/// Copies both ways between `a` and `b` until both directions have ended, or one has and
/// [`CLOSE_GRACE`] has passed since. An end of stream is passed on as a write shutdown.
pub async fn splice<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let a_to_b = async {
        let _ = tokio::io::copy(&mut ar, &mut bw).await;
        let _ = bw.shutdown().await;
    };
    let b_to_a = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::pin!(a_to_b, b_to_a);
    tokio::select! {
        () = &mut a_to_b => { let _ = tokio::time::timeout(CLOSE_GRACE, &mut b_to_a).await; }
        () = &mut b_to_a => { let _ = tokio::time::timeout(CLOSE_GRACE, &mut a_to_b).await; }
    }
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
    async fn splice_passes_an_end_on_and_bounds_the_other_direction() {
        // Client half-closes; the server answers within the grace and closes: all arrives.
        let (client, mut c) = tokio::io::duplex(64);
        let (server, mut s) = tokio::io::duplex(64);
        let fwd = tokio::spawn(splice(client, server));
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        s.write_all(b"pong").await.unwrap();
        drop(s);
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong");
        fwd.await.unwrap();

        // A server that never closes after the client's end: the splice ends after the grace.
        let (client, mut c) = tokio::io::duplex(64);
        let (server, _s) = tokio::io::duplex(64);
        let t0 = std::time::Instant::now();
        let fwd = tokio::spawn(splice(client, server));
        c.shutdown().await.unwrap();
        tokio::time::timeout(CLOSE_GRACE * 5, fwd)
            .await
            .expect("splice ended")
            .unwrap();
        assert!(t0.elapsed() >= CLOSE_GRACE);
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
