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

/// One record of the kernel's log, as /dev/kmsg gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    /// Microseconds after boot.
    pub(crate) usec: u64,
    /// syslog level, 0..=7 (the facility is left out).
    pub(crate) level: u32,
    pub(crate) text: String,
}

/// Parses one /dev/kmsg record (`PRIO,SEQ,USEC,FLAGS[,…];text` then `\n`-led continuation
/// lines); None for what is not a record.
fn parse_record(rec: &str) -> Option<Record> {
    let (head, body) = rec.split_once(';')?;
    let mut fields = head.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq: u64 = fields.next()?.parse().ok()?;
    let usec: u64 = fields.next()?.parse().ok()?;
    // Continuation lines (dictionary KEY=value pairs) start with a space; dmesg leaves them out.
    let text = body.lines().next().unwrap_or("").to_owned();
    Some(Record {
        seq,
        usec,
        level: prio & 7,
        text,
    })
}

/// A record as dmesg prints it: `[    S.UUUUUU] text`. None for what is not a record.
fn format_record(rec: &str) -> Option<String> {
    let r = parse_record(rec)?;
    Some(format!(
        "[{:5}.{:06}] {}",
        r.usec / 1_000_000,
        r.usec % 1_000_000,
        r.text
    ))
}

/// Calls `each` with every record /dev/kmsg holds now, oldest first, until it returns false.
fn for_each_record(mut each: impl FnMut(&str) -> bool) -> io::Result<()> {
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    // One read returns one record; the kernel caps a record well below this.
    let mut buf = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(len) => {
                if !each(&String::from_utf8_lossy(&buf[..len])) {
                    return Ok(());
                }
            }
            // Records overwritten before we read them: the next read goes on after the gap.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Copies every record /dev/kmsg holds now to `out`, then [`KMSG_COPIED`]; returns how many.
pub fn copy_to(out: &mut impl Write) -> io::Result<usize> {
    let mut n = 0;
    let mut result = Ok(());
    for_each_record(|rec| {
        if let Some(line) = format_record(rec) {
            result = writeln!(out, "{line}");
            n += 1;
        }
        result.is_ok()
    })?;
    result?;
    writeln!(out, "{KMSG_COPIED} ({n} records)")?;
    out.flush()?;
    Ok(n)
}

/// Most records one [`read_from`] returns when the caller names no limit.
pub(crate) const DEFAULT_MAX_RECORDS: usize = 1000;
/// Most text bytes one [`read_from`] returns, whatever the record limit: a reply stays far
/// below ttrpc's message limit (4 MiB) even with the kernel's longest records.
const MAX_READ_BYTES: usize = 1 << 20;

/// What one [`read_from`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelLogRead {
    pub(crate) records: Vec<Record>,
    pub(crate) next_cursor: u64,
    /// Records at or after the cursor that the kernel's ring had overwritten.
    pub(crate) dropped: u64,
}

/// Collects the records with `seq >= cursor` out of `records` (oldest first), at most `max`
/// (0: [`DEFAULT_MAX_RECORDS`]) and [`MAX_READ_BYTES`] of text; false from the returned
/// closure's caller means "stop reading".
#[derive(Debug)]
struct Collector {
    read: KernelLogRead,
    max: usize,
    bytes: usize,
    /// The seq the next record should have: a higher one means records were lost.
    expected: u64,
}

impl Collector {
    fn new(cursor: u64, max: usize) -> Self {
        Collector {
            read: KernelLogRead {
                next_cursor: cursor,
                ..Default::default()
            },
            max: if max == 0 { DEFAULT_MAX_RECORDS } else { max },
            bytes: 0,
            expected: cursor,
        }
    }

    /// Takes one raw record; false once the reply is full.
    fn push(&mut self, raw: &str) -> bool {
        let Some(r) = parse_record(raw) else {
            return true;
        };
        if r.seq < self.expected {
            return true;
        }
        // Cursor 0 is "the oldest held": what came before it is not a loss.
        if self.expected > 0 {
            self.read.dropped += r.seq - self.expected;
        }
        self.expected = r.seq + 1;
        self.read.next_cursor = self.expected;
        self.bytes += r.text.len();
        self.read.records.push(r);
        self.read.records.len() < self.max && self.bytes < MAX_READ_BYTES
    }
}

/// The kernel's log records from `cursor` on (`Guest.GetKernelLog`).
pub(crate) fn read_from(cursor: u64, max: usize) -> io::Result<KernelLogRead> {
    let mut c = Collector::new(cursor, max);
    for_each_record(|raw| c.push(raw))?;
    Ok(c.read)
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

    #[test]
    fn a_read_starts_at_the_cursor_and_counts_what_the_ring_lost() {
        let raw = |seq: u64| format!("14,{seq},{},-;line {seq}\n", seq * 10);
        // Records 5..=9 held, 7 lost while reading (EPIPE); the caller asks from 3.
        let mut c = Collector::new(3, 0);
        for seq in [5, 6, 8, 9] {
            assert!(c.push(&raw(seq)));
        }
        assert!(c.push("not a record"));
        let seqs: Vec<u64> = c.read.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [5, 6, 8, 9]);
        assert_eq!((c.read.next_cursor, c.read.dropped), (10, 3));
        assert_eq!(c.read.records[0].level, 6, "facility 1 (user) is left out");
        assert_eq!(c.read.records[0].text, "line 5");

        // From 0: everything held, nothing counted lost; a limit ends the read.
        let mut c = Collector::new(0, 2);
        assert!(c.push(&raw(5)));
        assert!(!c.push(&raw(6)), "full after 2");
        assert_eq!((c.read.next_cursor, c.read.dropped), (7, 0));

        // Records before the cursor are skipped; nothing new leaves the cursor where it was.
        let mut c = Collector::new(9, 0);
        assert!(c.push(&raw(8)));
        assert!(c.read.records.is_empty());
        assert_eq!(c.read.next_cursor, 9);
    }
}
