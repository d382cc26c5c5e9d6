//! The kernel's log on the console, when the command line asks for it
//! ([`hull_contract::guest_env::KMSG_TO_CONSOLE`]): read once, after the agent serves, so a
//! `quiet` boot is timed as it is and its whole log is still readable on the host.

use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use hull_contract::guest_env::{KMSG_COPIED, KMSG_TO_CONSOLE};

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
