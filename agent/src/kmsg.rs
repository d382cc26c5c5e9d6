//! The kernel's log on the console, when the command line asks for it
//! ([`hull_contract::guest_env::KMSG_TO_CONSOLE`]): read once, after the agent serves, so a
//! `quiet` boot is timed as it is and its whole log is still readable on the host.

use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use hull_contract::guest_env::{KMSG_COPIED, KMSG_TO_CONSOLE};

/// Whether this process started without a console: a guest booted with no UART finds none to
/// open for /init, and fd 2 is then the /dev/null Rust's runtime put there (guest/README).
/// Told by the device number, not by a look at /dev/null: PID 1 asks before it mounts /dev.
pub fn console_missing() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(stderr) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(stderr)
        .metadata()
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3))
}

/// PID 1's log lines for the kernel log when there is no console: each `write` (the fmt
/// layer writes each event once) becomes one record, tagged. At a panic the end of the
/// kernel log is what hull-vmm gets back from the guest (ramoops, vmm/src/pstore.rs), so an
/// agent that fails before the kernel panics says why there. The kernel rate-limits writers
/// of /dev/kmsg (10 lines in 5 s by default): these are warnings and errors only.
#[derive(Debug, Default)]
pub struct KernelLog(Option<std::fs::File>);

impl KernelLog {
    const TAG: &'static [u8] = b"hull-agent: ";
}

impl Write for KernelLog {
    /// Opens /dev/kmsg at the first line that finds it: PID 1 sets up its log before it
    /// mounts /dev, and a line from before that is lost (as it would be on no console).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.is_none() {
            self.0 = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        }
        if let Some(f) = &mut self.0 {
            let mut record = Vec::with_capacity(Self::TAG.len() + buf.len());
            record.extend_from_slice(Self::TAG);
            record.extend_from_slice(buf);
            f.write(&record)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the kernel command line asked for the copy.
pub fn wanted() -> bool {
    std::env::var_os(KMSG_TO_CONSOLE).is_some_and(|v| v == "1")
}

/// One /dev/kmsg record (`PRIO,SEQ,USEC,FLAGS[,…];text` then `\n`-led continuation lines),
/// as dmesg prints it: `[    S.UUUUUU] text`. None for what is not a record.
fn format_record(rec: &str) -> Option<String> {
    let (head, body) = rec.split_once(';')?;
    let usec: u64 = head.split(',').nth(2)?.parse().ok()?;
    // Continuation lines (dictionary KEY=value pairs) start with a space; dmesg leaves them out.
    let text = body.lines().next().unwrap_or("");
    Some(format!(
        "[{:5}.{:06}] {text}",
        usec / 1_000_000,
        usec % 1_000_000
    ))
}

/// Copies every record /dev/kmsg holds now to `out`, then [`KMSG_COPIED`]; returns how many.
pub fn copy_to(out: &mut impl Write) -> io::Result<usize> {
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    // One read returns one record; the kernel caps a record well below this.
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => {
                if let Some(line) = format_record(&String::from_utf8_lossy(&buf[..len])) {
                    writeln!(out, "{line}")?;
                    n += 1;
                }
            }
            // Records overwritten before we read them: the next read goes on after the gap.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    writeln!(out, "{KMSG_COPIED} ({n} records)")?;
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_log_line_is_one_tagged_write() {
        let f = tempfile::tempfile().expect("tmp");
        let mut k = KernelLog(Some(f.try_clone().expect("dup")));
        let line = b" WARN ignoring init arguments: x\n";
        assert_eq!(k.write(line).expect("write"), line.len());
        let mut got = String::new();
        let mut f = f;
        std::io::Seek::rewind(&mut f).expect("rewind");
        f.read_to_string(&mut got).expect("read");
        assert_eq!(got, "hull-agent:  WARN ignoring init arguments: x\n");
    }

    #[test]
    fn records_read_as_dmesg_prints_them() {
        assert_eq!(
            format_record(
                "7,339,12345678,-;initcall 0xffffffff82b1c2d0 returned 0 after 12 usecs\n"
            )
            .as_deref(),
            Some("[   12.345678] initcall 0xffffffff82b1c2d0 returned 0 after 12 usecs")
        );
        assert_eq!(
            format_record("6,340,5,-,caller=T1;virtio_blk virtio1: [vda] 16384 512-byte logical blocks\n SUBSYSTEM=virtio\n DEVICE=+virtio:virtio1\n")
                .as_deref(),
            Some("[    0.000005] virtio_blk virtio1: [vda] 16384 512-byte logical blocks")
        );
        assert_eq!(format_record("no record"), None);
        assert_eq!(format_record("6,1,x,-;bad time"), None);
    }
}
