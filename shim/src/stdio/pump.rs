//! A process's stdio between containerd's FIFOs and the agent's streams. The agent side is
//! a pump loop (`ReadStdout/ReadStderr` until `eof`, `WriteStdin` then `CloseStdin`) joined to
//! the crate's `IoTasks` through an in-memory pipe, so `IoTasks` keeps owning the FIFOs
//! (held open across a containerd restart, drained with a bound on shutdown).

use containerd_shim::asynchronous::io::IoTasks;
use hull_proto::processes::{CloseStdinRequest, ReadStreamRequest, WriteStdinRequest};
use hull_proto::processes_ttrpc::ProcessesClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::errors::ShimError;

/// Bytes asked of the agent per read, and the in-memory pipe's size.
const CHUNK: u32 = 64 * 1024;

/// No deadline: a read waits for the process to write, a write for it to read.
fn no_deadline() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}

/// Which process of which container.
#[derive(Debug, Clone)]
pub struct ProcRef {
    pub container_id: String,
    pub exec_id: String,
}

/// Wires the non-empty FIFO paths of a process to the agent.
pub fn connect(
    io: &IoTasks,
    agent: &ProcessesClient,
    proc_: &ProcRef,
    stdin: &str,
    stdout: &str,
    stderr: &str,
) -> Result<(), ShimError> {
    let shim_err = |context: &str| {
        let context = context.to_owned();
        move |source| ShimError::Shim { context, source }
    };
    for (path, is_err) in [(stdout, false), (stderr, true)] {
        if path.is_empty() {
            continue;
        }
        let (rx, tx) = tokio::io::simplex(CHUNK as usize);
        io.copy_to_fifo(rx, path).map_err(shim_err("stdio"))?;
        tokio::spawn(pump_out(agent.clone(), proc_.clone(), is_err, tx));
    }
    if !stdin.is_empty() {
        let (rx, tx) = tokio::io::simplex(CHUNK as usize);
        io.copy_from_fifo(stdin, tx).map_err(shim_err("stdin"))?;
        tokio::spawn(pump_in(agent.clone(), proc_.clone(), rx));
    }
    Ok(())
}

/// Agent stream → pipe until EOF; dropping `tx` then ends the FIFO copy.
async fn pump_out(
    agent: ProcessesClient,
    p: ProcRef,
    stderr: bool,
    mut tx: tokio::io::WriteHalf<tokio::io::SimplexStream>,
) {
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
            Ok(r) => {
                if !r.data.is_empty() && tx.write_all(&r.data).await.is_err() {
                    // The FIFO copy is gone (shutdown): nobody wants the rest.
                    return;
                }
                if r.eof {
                    let _ = tx.shutdown().await;
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(id = %p.container_id, exec = %p.exec_id, stderr, "read output: {e}");
                return;
            }
        }
    }
}

/// Pipe → agent stdin; at EOF (CloseIO and containerd's writer gone) closes the process's stdin.
async fn pump_in(
    agent: ProcessesClient,
    p: ProcRef,
    mut rx: tokio::io::ReadHalf<tokio::io::SimplexStream>,
) {
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut data = &buf[..n];
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
                    tracing::debug!(id = %p.container_id, "write stdin: {e}");
                    return;
                }
            }
        }
    }
    let req = CloseStdinRequest {
        container_id: p.container_id.clone(),
        exec_id: p.exec_id.clone(),
        ..Default::default()
    };
    if let Err(e) = agent.close_stdin(no_deadline(), &req).await {
        tracing::debug!(id = %p.container_id, "close stdin: {e}");
    }
}
