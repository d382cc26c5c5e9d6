//! A process's terminal, made by the container process itself from the container's devpts,
//! as runc, crun and youki do.
//!
//! Why not in the agent: a pseudo-terminal belongs to the devpts instance whose ptmx it was
//! opened from. The agent's `/dev/ptmx` is the guest's devpts, while a container mounts its
//! own (`newinstance`), where a slave made by the agent does not exist: `tty` says "not a
//! tty" and programs that reopen their terminal fail. So the container process opens
//! `/dev/ptmx` once it sees the container's file system (an init after pivot_root, an exec
//! after joining the container's mount namespace), makes the slave its stdio and controlling
//! terminal, and sends the master to the agent with SCM_RIGHTS. runc has a separate console
//! socket for that; here it is one more line on the sync socket, so the master, errors and
//! replies arrive in one ordered stream.
//!
//! The slave is opened from the master itself (TIOCGPTPEER), not by the path `ptsname`
//! gives, which could name another file; that path must still be the slave, so a container
//! without its own devpts on /dev/pts gets a clear error instead of a terminal it cannot
//! name. This runs in the forked child of the single-threaded init helper (a fresh exec of
//! the agent, see [`super`]), where plain Rust, allocation included, is safe after fork.

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::pty::PtyMaster;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Uid;

use crate::engine::plan::InitReply;
use crate::sys;

/// Why a process could not get its terminal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    #[error("terminal: {step}: {source}")]
    Step {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "terminal: its slave is not {path:?} in the container ({detail}); /dev/pts must be \
         the devpts instance /dev/ptmx belongs to"
    )]
    NotVisible { path: PathBuf, detail: String },
}

fn fail(step: impl Into<String>) -> impl FnOnce(nix::Error) -> ConsoleError {
    let step = step.into();
    move |e| ConsoleError::Step {
        step,
        source: e.into(),
    }
}

fn fail_io(step: &str) -> impl FnOnce(std::io::Error) -> ConsoleError + '_ {
    move |source| ConsoleError::Step {
        step: step.to_owned(),
        source,
    }
}

/// A terminal whose slave is already the process's stdio.
#[derive(Debug)]
pub(crate) struct Terminal {
    master: PtyMaster,
    /// The slave's path inside the container (`/dev/pts/N`).
    pub(crate) slave: PathBuf,
}

/// Opens a terminal from the container's `/dev/ptmx` and makes its slave descriptors 0, 1
/// and 2 and the controlling terminal of the calling session leader, owned by `uid` (the
/// process's user, as a login terminal is).
pub(crate) fn open(uid: u32) -> Result<Terminal, ConsoleError> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(fail(
            "open /dev/ptmx (a terminal needs a devpts mounted on the container's /dev/pts)",
        ))?;
    // No grantpt: devpts gives a slave its owner and mode itself, and glibc's grantpt only
    // checks that /dev/pts/N exists, which is checked below with a clearer error.
    nix::pty::unlockpt(&master).map_err(fail("unlockpt"))?;
    let slave =
        sys::open_pty_peer(master.as_fd()).map_err(fail_io("open the slave (TIOCGPTPEER)"))?;
    // glibc's ptsname_r fails if /dev/pts/N does not exist.
    let path = PathBuf::from(nix::pty::ptsname_r(&master).map_err(fail(
        "ptsname (/dev/pts must be the devpts instance /dev/ptmx belongs to)",
    ))?);
    let ours = nix::sys::stat::fstat(&slave).map_err(fail("fstat the slave"))?;
    let not_visible = |detail: String| ConsoleError::NotVisible {
        path: path.clone(),
        detail,
    };
    let seen = nix::sys::stat::stat(&path).map_err(|e| not_visible(e.to_string()))?;
    if (seen.st_dev, seen.st_ino) != (ours.st_dev, ours.st_ino) {
        return Err(not_visible("another file is there".into()));
    }
    nix::unistd::fchown(&slave, Some(Uid::from_raw(uid)), None)
        .map_err(fail(format!("chown the slave to {uid}")))?;
    nix::unistd::dup2_stdin(&slave).map_err(fail("make the slave stdin"))?;
    nix::unistd::dup2_stdout(&slave).map_err(fail("make the slave stdout"))?;
    nix::unistd::dup2_stderr(&slave).map_err(fail("make the slave stderr"))?;
    drop(slave);
    sys::set_controlling_tty(0).map_err(fail_io("make it the controlling terminal"))?;
    Ok(Terminal {
        master,
        slave: path,
    })
}

/// Sends the master to the agent as an [`InitReply::Terminal`] line with the descriptor
/// attached, then closes this process's copy: the agent's is the only one left.
pub(crate) fn send_master(sock: &mut UnixStream, terminal: Terminal) -> Result<(), ConsoleError> {
    let mut line = serde_json::to_vec(&InitReply::Terminal)
        .map_err(|e| fail_io("encode the terminal reply")(e.into()))?;
    line.push(b'\n');
    let fds = [terminal.master.as_raw_fd()];
    let sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&line)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        ) {
            Err(nix::Error::EINTR) => {}
            r => break r.map_err(fail("send the master to the agent"))?,
        }
    };
    // The descriptor travelled with the first byte; the rest of a short send is plain data.
    sock.write_all(&line[sent..])
        .map_err(fail_io("send the master to the agent"))
}
