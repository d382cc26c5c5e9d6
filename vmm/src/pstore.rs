//! The guest kernel's log at a panic, without a console.
//!
//! A pod boots without a UART (every console byte would be a VM exit), so the panic line the
//! serial console watches for never reaches hull-vmm. Instead the guest's ramoops driver
//! (pstore, `CONFIG_PSTORE_RAM`) keeps a crash record in a small region of guest RAM that
//! hull-vmm names on the command line ([`cmdline_params`]): at a panic (or an oops) the kernel
//! writes the newest part of its log there, then resets (`panic=1`). When the VM resets,
//! hull-vmm reads the record ([`read`]): a panic record makes the reset a guest crash, and
//! the text goes to hull-vmm's log, where the shim quotes it.
//!
//! The region is [`arch::PSTORE_START`], in the legacy VGA window below 1 MiB: outside every
//! e820 RAM range (the kernel never allocates it), backed like all of low memory, and in the
//! 2 MiB of guest RAM every boot touches anyway. The guest owns its contents: whatever is
//! there is parsed defensively, bounded by the region's size, and only ever changes how this
//! VM's own end is reported.

use vm_memory::{Bytes, GuestAddress};

use crate::arch;
use crate::vstate::memory::GuestMemoryMmap;

/// `PERSISTENT_RAM_SIG` ("DBGC") xor the dmesg zone's type value (0): Linux's
/// `struct persistent_ram_buffer` header (fs/pstore/ram_core.c).
const DMESG_ZONE_SIG: u32 = 0x4347_4244;
/// `sig`, `start` and `size`, each a little-endian u32, then the data.
const HEADER_LEN: usize = 12;
/// What ramoops puts before each record (`====<sec>.<usec>-<D|C>`).
const RECORD_MAGIC: &str = "====";

/// The `ramoops.*` kernel parameters that place one dmesg record of the whole region at
/// [`arch::PSTORE_START`], with no console, ftrace or pmsg zones (each defaults to 4 KiB,
/// which would leave the dmesg record a quarter of the region), mapped as normal memory.
pub(crate) fn cmdline_params() -> [(&'static str, String); 7] {
    let size = format!("{:#x}", arch::PSTORE_SIZE);
    [
        ("ramoops.mem_address", format!("{:#x}", arch::PSTORE_START)),
        ("ramoops.mem_size", size.clone()),
        ("ramoops.record_size", size),
        ("ramoops.console_size", "0".to_owned()),
        ("ramoops.ftrace_size", "0".to_owned()),
        ("ramoops.pmsg_size", "0".to_owned()),
        ("ramoops.mem_type", "2".to_owned()),
    ]
}

/// Bytes [`cmdline_params`] add to the command line, each parameter with a separating space.
pub(crate) fn cmdline_len() -> usize {
    cmdline_params()
        .iter()
        .map(|(k, v)| crate::config::cmdline_param_len(k, v))
        .sum()
}

/// A crash record the guest kernel left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrashRecord {
    /// The kmsg dump reason pstore wrote (`Panic`, `Oops`, `Emergency`, …).
    pub reason: String,
    /// The record's log text, control characters other than newlines and tabs replaced.
    pub text: String,
}

impl CrashRecord {
    /// The kernel panicked (rather than oopsed and went on).
    pub fn is_panic(&self) -> bool {
        self.reason == "Panic"
    }

    /// The panic's own line (`Kernel panic - not syncing: …`), which comes before its
    /// backtrace: quoted again after the record, so the end of the log names the cause.
    pub fn panic_line(&self) -> Option<&str> {
        use crate::exit::KERNEL_PANIC_LINE;
        let line = self
            .text
            .lines()
            .rev()
            .find(|l| l.contains(KERNEL_PANIC_LINE))?;
        line.find(KERNEL_PANIC_LINE).map(|at| &line[at..])
    }
}

/// The crash record in `mem`'s pstore region, if the guest wrote one. Nothing for a region
/// the guest never set up (no ramoops in its kernel), an empty one, a compressed record
/// (hull's guest kernel does not compress) or one whose header does not hold together.
pub(crate) fn read(mem: &GuestMemoryMmap) -> Option<CrashRecord> {
    let len = usize::try_from(arch::PSTORE_SIZE).ok()?;
    let mut region = vec![0u8; len];
    mem.read_slice(&mut region, GuestAddress(arch::PSTORE_START))
        .ok()?;
    parse(&region)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let word: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

/// Parses a zone: a ring of `data.len()` bytes holding `size` valid ones that end at `start`.
fn parse(region: &[u8]) -> Option<CrashRecord> {
    if u32_at(region, 0)? != DMESG_ZONE_SIG {
        return None;
    }
    let start = usize::try_from(u32_at(region, 4)?).ok()?;
    let size = usize::try_from(u32_at(region, 8)?).ok()?;
    let data = region.get(HEADER_LEN..)?;
    // Linux's own test of a zone it finds at boot (`persistent_ram_post_init`).
    if size == 0 || size > data.len() || start > size {
        return None;
    }
    let bytes: Vec<u8> = if size < data.len() {
        data[..size].to_vec()
    } else {
        // A full ring: the oldest byte is the one `start` is about to overwrite.
        let start = start.min(data.len());
        data[start..]
            .iter()
            .chain(&data[..start])
            .copied()
            .collect()
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.splitn(3, '\n');
    let stamp = lines.next()?;
    // `D`ecompressed text only: a `C`ompressed record would be noise in a log.
    if !stamp.starts_with(RECORD_MAGIC) || !stamp.ends_with("-D") {
        return None;
    }
    // pstore's own first line: `<reason>#<count> Part<n>`.
    let reason = lines.next()?.split('#').next()?;
    let body = lines.next().unwrap_or("");
    Some(CrashRecord {
        reason: printable(reason),
        text: printable(body.trim_end_matches(['\0', '\n'])),
    })
}

/// `s` with every control character but newline and tab replaced by `?`: the text goes into a
/// host log file, where a guest's escape sequences have no business.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// The whole pstore region as a zone header (`sig`, `start`, `size`) and `data`, zero-filled.
#[cfg(test)]
fn zone(sig: u32, start: u32, size: u32, data: &[u8]) -> Vec<u8> {
    let len = usize::try_from(arch::PSTORE_SIZE).expect("16 KiB");
    let mut z = Vec::with_capacity(len);
    z.extend(sig.to_le_bytes());
    z.extend(start.to_le_bytes());
    z.extend(size.to_le_bytes());
    z.extend(data);
    z.resize(len, 0);
    z
}

/// The pstore region holding `text` as ramoops writes a crash record, for tests.
#[cfg(test)]
pub(crate) fn zone_holding(text: &str) -> Vec<u8> {
    let n = u32::try_from(text.len()).expect("a short text");
    zone(DMESG_ZONE_SIG, n, n, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PANIC: &str = "====1765000000.123456-D\nPanic#1 Part1\n<6>[    0.5] booting\n\
                         <0>[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\n";

    #[test]
    fn a_panic_record_is_read_back_with_its_reason_and_log() {
        let r = parse(&zone_holding(PANIC)).expect("a record");
        assert!(r.is_panic());
        assert_eq!(
            r.panic_line(),
            Some("Kernel panic - not syncing: VFS: Unable to mount root fs")
        );
        assert_eq!(
            r.text,
            "<6>[    0.5] booting\n<0>[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs"
        );
        let oops = PANIC.replace("Panic#1", "Oops#1");
        let r = parse(&zone_holding(&oops)).expect("a record");
        assert_eq!(r.reason, "Oops");
        assert!(!r.is_panic());
    }

    #[test]
    fn no_record_without_the_signature_data_or_a_plain_text_header() {
        assert_eq!(parse(&zone(0, 0, 0, &[])), None, "ramoops never ran");
        assert_eq!(
            parse(&zone(DMESG_ZONE_SIG, 0, 0, &[])),
            None,
            "zapped at boot"
        );
        let compressed = PANIC.replace("-D\n", "-C\n");
        assert_eq!(parse(&zone_holding(&compressed)), None);
        assert_eq!(parse(&zone_holding("hello\nPanic#1 Part1\nx")), None);
    }

    #[test]
    fn a_hostile_header_is_refused_or_bounded_never_out_of_range() {
        let cap = u32::try_from(arch::PSTORE_SIZE).unwrap() - 12;
        assert_eq!(
            parse(&zone(DMESG_ZONE_SIG, 0, cap + 1, PANIC.as_bytes())),
            None
        );
        assert_eq!(
            parse(&zone(DMESG_ZONE_SIG, u32::MAX, 10, PANIC.as_bytes())),
            None
        );
        assert_eq!(parse(&zone(DMESG_ZONE_SIG, u32::MAX, u32::MAX, &[])), None);
        assert_eq!(parse(&[0x44, 0x42]), None, "shorter than a header");
        // A full ring that wrapped: `start` is where the oldest byte is.
        let cap = usize::try_from(cap).unwrap();
        let mut logical = PANIC.as_bytes().to_vec();
        logical.resize(cap, b'x');
        let start = 100;
        let mut data = logical[cap - start..].to_vec();
        data.extend(&logical[..cap - start]);
        let z = zone(
            DMESG_ZONE_SIG,
            u32::try_from(start).unwrap(),
            u32::try_from(cap).unwrap(),
            &data,
        );
        let r = parse(&z).expect("a record");
        assert!(r.is_panic());
        assert!(r.text.starts_with("<6>[    0.5] booting\n"), "{}", r.text);
    }

    #[test]
    fn control_characters_from_the_guest_do_not_reach_the_host_log() {
        let evil = PANIC.replace("booting", "boot\u{1b}[2J\ring\u{7}");
        let r = parse(&zone_holding(&evil)).expect("a record");
        assert!(r.text.contains("boot?[2J?ing?"), "{}", r.text);
    }

    #[test]
    fn the_record_is_read_from_guest_memory_at_the_pstore_region() {
        let mem = crate::vstate::memory::create(4 << 20).expect("guest memory");
        assert_eq!(read(&mem), None, "fresh memory holds no record");
        mem.write_slice(&zone_holding(PANIC), GuestAddress(arch::PSTORE_START))
            .expect("write");
        assert!(read(&mem).expect("a record").is_panic());
    }

    #[test]
    fn the_parameters_name_the_region_and_leave_it_all_to_the_dmesg_record() {
        let p: Vec<String> = cmdline_params()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            p.join(" "),
            "ramoops.mem_address=0xa0000 ramoops.mem_size=0x4000 ramoops.record_size=0x4000 \
             ramoops.console_size=0 ramoops.ftrace_size=0 ramoops.pmsg_size=0 ramoops.mem_type=2"
        );
        assert_eq!(cmdline_len(), p.join(" ").len() + 1);
    }
}
