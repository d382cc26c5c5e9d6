//! A `binary://` logger, started as containerd's shims start it (`NewBinaryCmd` and
//! `newBinaryIO` in containerd's `pkg/process`): argv from the URI query, an environment of
//! exactly `CONTAINER_ID` and `CONTAINER_NAMESPACE`, the process's stdout on fd 3, its stderr
//! on fd 4, and fd 5 to close (or write a byte to) once the logger is ready. The shim waits
//! for that before the process starts, so no output is produced with nobody to take it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::child::{spawn, ChildSetup, Supervised};
use crate::errors::ShimError;

/// How long a logger may take to say it is ready (containerd waits without a bound; a hung
/// logger must not hang Create).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a logger may take to exit once its pipes are closed, before SIGTERM; then as
/// long again before SIGKILL (containerd gives it 12 s after SIGTERM).
const EXIT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Logger {
    child: Supervised,
}

/// The write ends of the logger's stdout and stderr pipes.
#[derive(Debug)]
pub(crate) struct Sinks {
    pub(crate) stdout: pipe::Sender,
    pub(crate) stderr: pipe::Sender,
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> ShimError {
    move |source| ShimError::Io { context, source }
}

fn pipe_pair(what: &str) -> Result<(OwnedFd, OwnedFd), ShimError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ShimError::Io {
        context: format!("pipe for the logger's {what}"),
        source: e.into(),
    })
}

impl Logger {
    /// Starts `path args…` for container `id` of `namespace` and waits until it is ready.
    pub(crate) async fn start(
        path: &Path,
        args: &[String],
        id: &str,
        namespace: &str,
    ) -> Result<(Logger, Sinks), ShimError> {
        let (out_r, out_w) = pipe_pair("stdout")?;
        let (err_r, err_w) = pipe_pair("stderr")?;
        let (ready_r, ready_w) = pipe_pair("ready signal")?;
        let mut cmd = tokio::process::Command::new(path);
        cmd.args(args)
            .env_clear()
            .env("CONTAINER_ID", id)
            .env("CONTAINER_NAMESPACE", namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = spawn(
            &mut cmd,
            ChildSetup {
                cgroup_procs: None,
                fds: [
                    Some(out_r.as_raw_fd()),
                    Some(err_r.as_raw_fd()),
                    Some(ready_w.as_raw_fd()),
                ],
                ..Default::default()
            },
        )
        .map_err(io_err(format!("start logger {}", path.display())))?;
        let logger = Logger {
            child: Supervised::new("logger", child),
        };
        // The child has its copies; closing ours lets EOF on the ready pipe mean "ready or
        // dead", and EOF on the output pipes reach the logger when the sinks are dropped.
        drop((out_r, err_r, ready_w));
        let mut ready = pipe::Receiver::from_owned_fd(ready_r)
            .map_err(io_err("watch the logger's ready pipe".into()))?;
        let mut byte = [0u8; 1];
        // A byte or EOF both mean ready, as for containerd: a logger that died at once also
        // closes fd 5, and its death then shows as output that cannot be delivered.
        match tokio::time::timeout(READY_TIMEOUT, ready.read(&mut byte)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                logger.stop().await;
                return Err(io_err(format!("logger {}: ready pipe", path.display()))(e));
            }
            Err(_) => {
                logger.stop().await;
                return Err(ShimError::FailedPrecondition(format!(
                    "logger {} did not become ready within {READY_TIMEOUT:?}",
                    path.display()
                )));
            }
        }
        let sender = |fd: OwnedFd, what: &str| {
            pipe::Sender::from_owned_fd(fd).map_err(io_err(format!("logger {what} pipe")))
        };
        let sinks = Sinks {
            stdout: sender(out_w, "stdout")?,
            stderr: sender(err_w, "stderr")?,
        };
        Ok((logger, sinks))
    }

    /// Waits for the logger to finish its work after its pipes were closed, then stops it.
    pub(crate) async fn stop(&self) {
        if tokio::time::timeout(EXIT_GRACE, self.child.exited())
            .await
            .is_err()
        {
            self.child.stop(EXIT_GRACE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A logger in sh: says it is ready, copies fd 3 and fd 4 into files in `$1`, and records
    /// its environment.
    const LOGGER: &str = "#!/bin/sh\nexec 5>&-\nenv > \"$1/env\"\ncat <&3 > \"$1/out\" &\ncat <&4 > \"$1/err\"\nwait\n";

    #[tokio::test(flavor = "current_thread")]
    async fn logger_gets_both_streams_and_the_container_env() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("logger");
        std::fs::write(&bin, LOGGER).expect("write logger");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let args = [dir.path().display().to_string()];
        let (logger, mut sinks) = Logger::start(&bin, &args, "c1", "k8s.io")
            .await
            .expect("start logger");
        sinks.stdout.write_all(b"to stdout\n").await.expect("write");
        sinks.stderr.write_all(b"to stderr\n").await.expect("write");
        drop(sinks);
        logger.stop().await;
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
        assert_eq!(read("out"), "to stdout\n");
        assert_eq!(read("err"), "to stderr\n");
        let env = read("env");
        assert!(env.contains("CONTAINER_ID=c1"), "{env}");
        assert!(env.contains("CONTAINER_NAMESPACE=k8s.io"), "{env}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_logger_is_an_error_naming_it() {
        let e = Logger::start(Path::new("/nonexistent/logger"), &[], "c1", "ns")
            .await
            .expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/logger"), "{e}");
    }
}
