//! hull-vmm's and virtiofsd's own log lines go two ways: into the pod's log file (`vmm.log`,
//! `virtiofsd.log`, which a failed start quotes) and into the shim's log, which containerd
//! copies into its own with the pod's identity on every line (`bootstrap::pod_log`). Both
//! processes are quiet while all is well (warnings and errors only), so a healthy pod adds
//! nothing. What one process can put there is bounded ([`MAX_BYTES`]): past it, one line says
//! so and the rest is read and dropped, so the process never blocks on its stderr.

use std::io::Write;
use std::os::fd::OwnedFd;

use tokio::io::{AsyncBufReadExt, BufReader};

/// Most bytes of one process's log kept and relayed.
pub(crate) const MAX_BYTES: usize = 1 << 20;
/// Longest line relayed whole; a longer one is cut (and marked).
const MAX_LINE: usize = 4096;

/// A running relay.
#[derive(Debug)]
pub(crate) struct Relay(tokio::task::JoinHandle<()>);

impl Relay {
    /// Waits, at most `within`, until the relay has written everything: after the process
    /// exited, before its log file is quoted.
    pub(crate) async fn settle(self, within: std::time::Duration) {
        let _ = tokio::time::timeout(within, self.0).await;
    }
}

/// Starts relaying what `source` writes to the returned descriptor (give it as the process's
/// stderr, then drop it) into `file` and the shim's log. The relay ends when every writer has
/// closed the pipe.
pub(crate) fn start(
    source: &'static str,
    file: std::fs::File,
) -> std::io::Result<(OwnedFd, Relay)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    let task = tokio::spawn(relay(source, BufReader::new(rx), file));
    Ok((write, Relay(task)))
}

async fn relay<R: tokio::io::AsyncBufRead + Unpin>(
    source: &'static str,
    mut r: R,
    mut file: std::fs::File,
) {
    let mut budget = MAX_BYTES;
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if budget == 0 {
            continue;
        }
        if line.len() > budget {
            let note = format!("[{source}: output past {MAX_BYTES} bytes dropped]\n");
            let _ = file.write_all(note.as_bytes());
            tracing::warn!("{source}: its log passed {MAX_BYTES} bytes; the rest is dropped");
            budget = 0;
            continue;
        }
        budget -= line.len();
        let _ = file.write_all(&line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        // hull-vmm names itself on its lines; virtiofsd does not.
        let who = if text.starts_with(source) { "" } else { source };
        let sep = if who.is_empty() { "" } else { ": " };
        match text.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => tracing::warn!("{who}{sep}{}[…]", &text[..cut]),
            None => tracing::warn!("{who}{sep}{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_reach_the_file_within_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vmm.log");
        let file = std::fs::File::create(&path).expect("create");
        let big = "x".repeat(MAX_BYTES);
        let input = format!("first\nsecond\n{big}\nafter\n");
        relay("hull-vmm", input.as_bytes(), file).await;
        let got = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            got,
            format!("first\nsecond\n[hull-vmm: output past {MAX_BYTES} bytes dropped]\n")
        );
    }
}
