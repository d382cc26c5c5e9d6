//! `hullctl debug POD [--tool PATH] [-t|-T] [-- ARGS...]`: a process in the pod's guest
//! itself, outside every container, for an operator (the contract is
//! `hull_contract::debug_shell`). The guest image holds only hull-agent, so the operator
//! brings the program: `--tool` (a statically linked busybox by default) is sent along and
//! run with ARGS (`sh` by default). The guest serves this only when the node's hull.toml
//! turned it on when the pod started (`[vm] debug_shell`); otherwise the connection is
//! refused and this says so.
//!
//! A terminal session passes the guest's output to the local terminal as it comes, escape
//! sequences included, as any remote shell does: the guest is the tenant's, so treat what it
//! prints as untrusted.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use hull_contract::debug_shell::{
    frame, parse_exit, resize, Kind, Start, MAX_PAYLOAD, MAX_TOOL_BYTES,
};
use hull_contract::pods::AGENT_SOCKET;
use hull_contract::vsock::DEBUG_PORT;
use hull_proto::debug_shell::FrameError;
use hull_proto::ConnectError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::pods::Pod;

/// What `hullctl debug` was asked for.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) tool: &'a Path,
    /// The tool's arguments; empty means `sh`.
    pub(crate) args: &'a [String],
    /// None: a terminal if both stdin and stdout are terminals.
    pub(crate) tty: Option<bool>,
}

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::pty::Winsize);

/// The local terminal's rows and columns (0, 0 if unknown).
fn window_size() -> (u16, u16) {
    let mut ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` to the pointer, which is a valid,
    // exclusively borrowed Winsize (the same layout, from nix); fd 1 is only read.
    match unsafe { tiocgwinsz(1, &mut ws) } {
        Ok(_) => (ws.ws_row, ws.ws_col),
        Err(_) => (0, 0),
    }
}

/// Puts the local terminal in raw mode until dropped: keys go to the guest's shell as typed
/// (^C included), and the guest's terminal echoes them.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).context("read the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("set the terminal raw")?;
        Ok(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> anyhow::Result<(Kind, Vec<u8>)> {
    hull_proto::debug_shell::read_frame(r)
        .await
        .map_err(|e| match e {
            FrameError::Io(e) => anyhow::Error::new(e).context("the guest closed the session"),
            FrameError::Decode(e) => anyhow::Error::new(e).context("the guest sent a bad frame"),
        })
}

/// `hullctl debug`: runs the session; returns the process's shell status.
pub(crate) async fn run(pod: &Pod, req: &Request<'_>) -> anyhow::Result<i32> {
    let tool = std::fs::read(req.tool).with_context(|| {
        format!(
            "read the program to run in the guest, {} (--tool: a statically linked one)",
            req.tool.display()
        )
    })?;
    if tool.len() as u64 > MAX_TOOL_BYTES {
        bail!(
            "{} is larger than the {MAX_TOOL_BYTES} bytes a guest takes",
            req.tool.display()
        );
    }
    let name = req
        .tool
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .context("--tool must name a file")?
        .to_owned();
    let tty = req
        .tty
        .unwrap_or_else(|| std::io::stdin().is_terminal() && std::io::stdout().is_terminal());
    let (rows, cols) = if tty { window_size() } else { (0, 0) };
    let mut args = vec![name.clone()];
    if req.args.is_empty() {
        args.push("sh".into());
    } else {
        args.extend(req.args.iter().cloned());
    }
    let env = std::env::var("TERM")
        .ok()
        .filter(|_| tty)
        .map(|t| vec![format!("TERM={t}")])
        .unwrap_or_default();
    let start = Start {
        args,
        env,
        tty,
        rows,
        cols,
        tool_name: Some(name),
    };

    let sock = pod.dir.join(AGENT_SOCKET);
    let stream = match hull_proto::connect_stream(&sock, DEBUG_PORT, Duration::from_secs(10)).await
    {
        Ok(s) => s,
        Err(ConnectError::Closed { .. }) => bail!(
            "pod {}: its guest does not serve the debug shell: it is off unless the node's \
             hull.toml sets [vm] debug_shell = true, and then only for pods started after",
            pod.sandbox_id
        ),
        Err(e) => return Err(e).context("reach the pod's guest"),
    };
    let (mut r, mut w) = stream.into_split();
    w.write_all(&frame(Kind::Start, &start.encode())).await?;
    for chunk in tool.chunks(MAX_PAYLOAD) {
        w.write_all(&frame(Kind::Tool, chunk)).await?;
    }
    w.write_all(&frame(Kind::ToolEnd, &[])).await?;

    // A terminal asked for with -t while stdin is not one (a script): nothing to make raw.
    let _raw = if tty && std::io::stdin().is_terminal() {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watch the terminal's size")?;
    let mut buf = vec![0u8; 32 << 10];
    let mut stdin_open = true;
    loop {
        tokio::select! {
            n = stdin.read(&mut buf), if stdin_open => {
                match n {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        w.write_all(&frame(Kind::StdinEof, &[])).await?;
                    }
                    Ok(n) => w.write_all(&frame(Kind::Stdin, &buf[..n])).await?,
                }
            }
            _ = winch.recv(), if tty => {
                let (rows, cols) = window_size();
                w.write_all(&frame(Kind::Resize, &resize(rows, cols))).await?;
            }
            f = read_frame(&mut r) => match f? {
                (Kind::Stdout, data) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
                (Kind::Stderr, data) => {
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                }
                (Kind::Exit, b) => {
                    let status = parse_exit(&b).context("the guest sent a bad exit frame")?;
                    return Ok(i32::try_from(status).unwrap_or(255));
                }
                (Kind::Error, b) => bail!(
                    "the guest could not run it: {}",
                    crate::guest::printable(&String::from_utf8_lossy(&b))
                ),
                (other, _) => bail!("the guest sent {other:?}, which only a host sends"),
            }
        }
    }
}
