//! The stream listeners the agent serves besides ttrpc (port-forward, the debug shell): a
//! vsock port in the guest, a Unix socket in host mode. One accept loop for both, so each
//! service only says what it does with a stream.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

use crate::config::ListenAddr;

/// An accepted stream, vsock or Unix.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Binds `addr` (in host mode replacing a socket file a killed agent left) and hands each
/// accepted stream to `accept`, in the listener's own task, which runs until the runtime
/// ends. An accept error is logged under `what` and retried after a pause (EMFILE and
/// friends: the streams that hold fds get time to end) rather than ending the service.
pub(crate) fn spawn(
    addr: &ListenAddr,
    what: &'static str,
    accept: impl Fn(Box<dyn Stream>) + Send + 'static,
) -> std::io::Result<()> {
    let failed = move |e: std::io::Error| async move {
        tracing::warn!("{what} accept: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match addr {
        ListenAddr::Vsock { port } => {
            let l = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, *port))?;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => accept(Box::new(s)),
                        Err(e) => failed(e).await,
                    }
                }
            });
        }
        ListenAddr::Unix(path) => {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let l = tokio::net::UnixListener::bind(path)?;
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => accept(Box::new(s)),
                        Err(e) => failed(e).await,
                    }
                }
            });
        }
    }
    Ok(())
}
