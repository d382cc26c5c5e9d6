//! `hullctl debug`'s end in the guest: one process per connection, run in the guest itself
//! outside every container ([`crate::engine::Engine::launch_in_guest`]), its stdio carried
//! as `hull_contract::debug_shell` frames. Served only when the kernel command line has
//! `HULL_DEBUG_SHELL=1` ([`enabled`]), which the shim adds only when the node's hull.toml
//! turns the shell on; otherwise nothing listens and the host's connect is refused.
//!
//! The host end is the node's root (the hybrid vsock socket is in the pod's root-only
//! directory), but what it sends is still checked: frame sizes, the program's size, its
//! name, and every wait is bounded until the process runs. Every session is logged at WARN
//! (the kernel log and the agent's log, both readable with `hullctl console`), so a tenant's
//! guest keeps a record of each operator session.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hull_contract::debug_shell::{frame, parse_resize, Kind, Start, MAX_PAYLOAD, MAX_TOOL_BYTES};
use hull_contract::guest_env::DEBUG_SHELL;
use hull_proto::debug_shell::{read_frame, FrameError};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::config::ListenAddr;
use crate::engine::error::chain;
use crate::engine::process::Process;
use crate::engine::spec::{check_env, DEFAULT_PATH};
use crate::engine::Engine;

/// Sessions served at once; more are closed at once.
const MAX_SESSIONS: usize = 4;
/// How long the host may take to send the start frame and each chunk of the program.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// After the host goes away: SIGHUP, then this long before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// Output read per frame.
const CHUNK: usize = 64 << 10;

/// Whether the kernel command line turned the debug shell on.
pub fn enabled() -> bool {
    std::env::var_os(DEBUG_SHELL).is_some_and(|v| v == "1")
}

/// Why a session ended before its process ran.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Protocol(String),
    #[error("no frame within {0:?}")]
    Timeout(Duration),
}

async fn read_frame_within<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(Kind, Vec<u8>), SessionError> {
    Ok(tokio::time::timeout(SETUP_TIMEOUT, read_frame(r))
        .await
        .map_err(|_| SessionError::Timeout(SETUP_TIMEOUT))??)
}

/// Receives the program into `dir/name` (made here, root-only), up to [`MAX_TOOL_BYTES`].
async fn receive_tool<R: AsyncRead + Unpin>(
    r: &mut R,
    dir: &Path,
    name: &str,
) -> Result<(), SessionError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut file = tokio::fs::File::from_std(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(dir.join(name))?,
    );
    let mut total: u64 = 0;
    loop {
        match read_frame_within(r).await? {
            (Kind::Tool, chunk) => {
                total += chunk.len() as u64;
                if total > MAX_TOOL_BYTES {
                    return Err(SessionError::Protocol(format!(
                        "the program is larger than {MAX_TOOL_BYTES} bytes"
                    )));
                }
                file.write_all(&chunk).await?;
            }
            (Kind::ToolEnd, _) => break,
            (other, _) => {
                return Err(SessionError::Protocol(format!(
                    "{other:?} while the program was being sent"
                )))
            }
        }
    }
    file.flush().await?;
    Ok(())
}

/// The process's environment: `PATH` with the program's directory first, `HOME`, then the
/// host's entries (each `NAME=value`).
fn environment(tool_dir: Option<&Path>, extra: &[String]) -> Result<Vec<String>, SessionError> {
    check_env(extra).map_err(|e| SessionError::Protocol(chain(&e)))?;
    let path = match tool_dir {
        Some(d) => DEFAULT_PATH.replacen("PATH=", &format!("PATH={}:", d.display()), 1),
        None => DEFAULT_PATH.to_owned(),
    };
    let mut env = vec![path, "HOME=/".to_owned()];
    env.extend(extra.iter().cloned());
    Ok(env)
}

/// Sends frames from the session's pumps, in order, to the host.
async fn writer<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(f) = rx.recv().await {
        if w.write_all(&f).await.is_err() {
            return;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

/// Copies one output stream of `p` to the host until it ends.
async fn pump(p: Arc<Process>, stderr: bool, tx: mpsc::Sender<Vec<u8>>) {
    let kind = if stderr { Kind::Stderr } else { Kind::Stdout };
    loop {
        match p.read(stderr, CHUNK).await {
            Ok((data, eof)) => {
                if !data.is_empty() && tx.send(frame(kind, &data)).await.is_err() {
                    return;
                }
                if eof {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Feeds the host's frames to `p` until the host closes the stream; then hangs up on `p`.
async fn feed<R: AsyncRead + Unpin>(mut r: R, p: Arc<Process>) {
    loop {
        match read_frame(&mut r).await {
            Ok((Kind::Stdin, data)) => {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    match p.write_stdin(rest).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => rest = &rest[n.min(rest.len())..],
                    }
                }
            }
            Ok((Kind::StdinEof, _)) => {
                let _ = p.close_stdin().await;
            }
            Ok((Kind::Resize, b)) => {
                if let Some((rows, cols)) = parse_resize(&b) {
                    let _ = p.resize(rows.into(), cols.into());
                }
            }
            // Anything else from the host at this point is ignored.
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if p.exited().is_none() {
        tracing::warn!(session = %p.exec_id, "debug shell: the host went away; hanging up");
        let _ = p.signal(Signal::SIGHUP);
        if tokio::time::timeout(HANGUP_GRACE, p.wait()).await.is_err() {
            let _ = p.signal(Signal::SIGKILL);
        }
    }
}

/// One session, from the start frame to the exit frame.
async fn serve<S>(stream: S, engine: Engine, root: PathBuf, session: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut r, w) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    let writing = tokio::spawn(writer(w, rx));
    let dir = root.join(&session);
    // The program goes before the last frame: a host that saw the end finds nothing left.
    let remove_program = || {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(session, "debug shell: remove {}: {e}", dir.display());
            }
        }
    };
    let last = match run(&mut r, &engine, &dir, &session).await {
        Ok(p) => {
            let out = tokio::spawn(pump(p.clone(), false, tx.clone()));
            let err = tokio::spawn(pump(p.clone(), true, tx.clone()));
            let feeding = tokio::spawn(feed(r, p.clone()));
            let status = match p.wait().await {
                Ok(exit) => crate::service::processes::exit_status(&exit).status,
                Err(_) => 255,
            };
            let _ = out.await;
            let _ = err.await;
            feeding.abort();
            tracing::warn!(session, status, "debug shell: the process ended");
            frame(Kind::Exit, &status.to_le_bytes())
        }
        Err(e) => {
            tracing::warn!(session, "debug shell: {e}");
            let msg = e.to_string();
            frame(Kind::Error, &msg.as_bytes()[..msg.len().min(MAX_PAYLOAD)])
        }
    };
    remove_program();
    let _ = tx.send(last).await;
    drop(tx);
    let _ = writing.await;
}

/// Reads the start frame (and the program), then starts the process.
async fn run<R: AsyncRead + Unpin>(
    r: &mut R,
    engine: &Engine,
    dir: &Path,
    session: &str,
) -> Result<Arc<Process>, SessionError> {
    let start = match read_frame_within(r).await? {
        (Kind::Start, b) => Start::decode(&b).map_err(FrameError::from)?,
        (other, _) => {
            return Err(SessionError::Protocol(format!(
                "the first frame is {other:?}, not Start"
            )))
        }
    };
    if let Some(name) = &start.tool_name {
        receive_tool(r, dir, name).await?;
    }
    let env = environment(start.tool_name.as_ref().map(|_| dir), &start.env)?;
    tracing::warn!(
        session,
        args = ?start.args,
        tty = start.tty,
        tool = start.tool_name.as_deref().unwrap_or("-"),
        "debug shell: the host starts a process in the guest, outside every container"
    );
    let p = engine
        .launch_in_guest(session, start.args.clone(), env, start.tty)
        .await
        .map_err(|e| {
            let mut msg = chain(&e);
            if msg.contains("No such file or directory") && start.tool_name.is_some() {
                msg.push_str(
                    " (a dynamically linked program needs a loader the guest does not have: \
                     give a statically linked one)",
                );
            }
            SessionError::Protocol(msg)
        })?;
    if start.tty && start.rows > 0 && start.cols > 0 {
        let _ = p.resize(start.rows.into(), start.cols.into());
    }
    Ok(p)
}

/// Numbers the sessions of this agent.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Listens on `addr` and serves each connection in a task of its own, at most
/// [`MAX_SESSIONS`] at once; programs sent by the host go under `root`.
pub fn start(addr: &ListenAddr, engine: Engine, root: PathBuf) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(MAX_SESSIONS));
    crate::listener::spawn(addr, "debug shell", move |s| {
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!("debug shell: {MAX_SESSIONS} sessions open; closing a new one");
            return;
        };
        let session = format!("debug-{}", SESSIONS.fetch_add(1, Ordering::Relaxed));
        let (engine, root) = (engine.clone(), root.clone());
        drop(tokio::spawn(async move {
            serve(s, engine, root, session).await;
            drop(permit);
        }));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_puts_the_program_first_and_refuses_bad_entries() {
        let env = environment(
            Some(Path::new("/run/hull/debug/debug-1")),
            &["TERM=xterm".into()],
        )
        .expect("env");
        assert!(env[0].starts_with("PATH=/run/hull/debug/debug-1:/usr/local/sbin:"));
        assert_eq!(env[1..], ["HOME=/".to_owned(), "TERM=xterm".to_owned()]);
        assert!(environment(None, &["NOEQUALS".into()]).is_err());
        assert!(environment(None, &["=x".into()]).is_err());
    }
}
