//! The agent side of a process's stdio: loops of `ReadStdout`/`ReadStderr` until `eof` into
//! any writer, and a reader fed into `WriteStdin`, then `CloseStdin`.
//!
//! The agent is not trusted (`bounds.rs`): a read answered with more than was asked for ends
//! the stream (ttrpc already caps a reply at 4 MiB), an empty read that is not EOF (which the
//! protocol rules out) is retried only after [`EMPTY_READ_PAUSE`], so a guest cannot spin
//! the shim's thread, and its error messages are clipped in the log.

use hull_proto::processes::{CloseStdinRequest, ReadStreamRequest, WriteStdinRequest};
use hull_proto::processes_ttrpc::ProcessesClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use std::time::Duration;

use super::{ProcRef, CHUNK};
use crate::bounds::clip_err;

/// Wait before asking again after an empty non-EOF read.
const EMPTY_READ_PAUSE: Duration = Duration::from_millis(100);

/// No deadline: a read waits for the process to write, a write for it to read.
fn no_deadline() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}

/// Agent stream → `tx` until EOF; then `tx` is shut down and dropped, which ends a FIFO copy
/// or gives a logger EOF.
pub(crate) async fn output<W: AsyncWrite + Unpin>(
    agent: ProcessesClient,
    p: ProcRef,
    stderr: bool,
    mut tx: W,
) {
    let mut discard = false;
    loop {
        let req = ReadStreamRequest {
            container_id: p.container_id.clone(),
            exec_id: p.exec_id.clone(),
            max_len: CHUNK,
            ..Default::default()
        };
        let r = if stderr {
            agent.read_stderr(no_deadline(), &req).await
        } else {
            agent.read_stdout(no_deadline(), &req).await
        };
        match r {
            Ok(r) if r.data.len() > CHUNK as usize => {
                tracing::warn!(id = %p.container_id, exec = %p.exec_id, stderr, len = r.data.len(), "the agent sent more output than asked for; ending the stream");
                let _ = tx.shutdown().await;
                return;
            }
            Ok(r) => {
                if r.data.is_empty() && !r.eof {
                    tokio::time::sleep(EMPTY_READ_PAUSE).await;
                    continue;
                }
                if !discard && !r.data.is_empty() {
                    if let Err(e) = tx.write_all(&r.data).await {
                        // The reader is gone (a logger died): keep draining, or the process
                        // blocks on a full pipe in the guest.
                        tracing::warn!(id = %p.container_id, exec = %p.exec_id, stderr, "output dropped: {e}");
                        discard = true;
                    }
                }
                if r.eof {
                    let _ = tx.shutdown().await;
                    // An idle pod should not keep what a burst of output needed.
                    hull_heap::release_free_memory();
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(id = %p.container_id, exec = %p.exec_id, stderr, "read output: {}", clip_err(&e));
                return;
            }
        }
    }
}

/// `rx` → agent stdin; at EOF (CloseIO and containerd's writer gone) closes the process's
/// stdin.
pub(crate) async fn input<R: AsyncRead + Unpin>(agent: ProcessesClient, p: ProcRef, mut rx: R) {
    // Spare capacity, not zeroes: a process whose stdin stays idle (most of them) never
    // touches these pages, and every pod's shim holds one such buffer per open stdin.
    let mut buf = Vec::with_capacity(CHUNK as usize);
    loop {
        buf.clear();
        match rx.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut data = &buf[..];
        // The agent may take part of a write; resend the rest.
        while !data.is_empty() {
            let req = WriteStdinRequest {
                container_id: p.container_id.clone(),
                exec_id: p.exec_id.clone(),
                data: data.to_vec(),
                ..Default::default()
            };
            match agent.write_stdin(no_deadline(), &req).await {
                Ok(r) if r.bytes_written > 0 => {
                    data = &data[(r.bytes_written as usize).min(data.len())..];
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(id = %p.container_id, "write stdin: {}", clip_err(&e));
                    return;
                }
            }
        }
    }
    tracing::debug!(id = %p.container_id, exec = %p.exec_id, "stdin ended; closing it");
    let req = CloseStdinRequest {
        container_id: p.container_id.clone(),
        exec_id: p.exec_id.clone(),
        ..Default::default()
    };
    if let Err(e) = agent.close_stdin(no_deadline(), &req).await {
        tracing::debug!(id = %p.container_id, "close stdin: {}", clip_err(&e));
    }
}

#[cfg(test)]
mod tests {
    use hull_proto::processes::ReadStreamResponse;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::fake_peers::{self, Agent, Script};

    fn reply(data: Vec<u8>, eof: bool) -> ReadStreamResponse {
        ReadStreamResponse {
            data,
            eof,
            ..Default::default()
        }
    }

    /// An agent that answers with more than was asked for: the stream ends there and the
    /// oversized reply reaches nobody. Empty reads that are not EOF are paced, not spun on.
    #[tokio::test(flavor = "current_thread")]
    async fn oversized_reads_end_the_stream_and_empty_ones_are_paced() {
        let dir = tempfile::tempdir().unwrap();
        let replies = [
            reply(b"ok\n".to_vec(), false),
            reply(Vec::new(), false),
            reply(Vec::new(), false),
            reply(vec![b'x'; CHUNK as usize + 1], false),
            reply(b"never\n".to_vec(), true),
        ];
        let agent = Agent {
            stdout: Script::new(replies),
            ..Default::default()
        };
        let (ag, client) = fake_peers::agent(dir.path(), agent).await;
        let (mut rx, tx) = tokio::io::duplex(4 * CHUNK as usize);
        let start = std::time::Instant::now();
        output(
            ProcessesClient::new(client),
            ProcRef::new("c", ""),
            false,
            tx,
        )
        .await;
        assert!(
            start.elapsed() >= 2 * EMPTY_READ_PAUSE,
            "{:?}",
            start.elapsed()
        );
        let mut got = Vec::new();
        rx.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok\n");
        fake_peers::stop(ag).await;
    }
}
