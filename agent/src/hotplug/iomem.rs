//! `/proc/iomem`, read to learn which platform device a virtio-mmio slot is.
//!
//! A slot declared with `virtio_mmio.device=SIZE@BASE:IRQ` becomes platform device
//! `virtio-mmio.N`, and the kernel names its memory resource after the device:
//! `d0000000-d00001ff : virtio-mmio.3`. Once the driver binds, it requests the same range
//! again, which shows as an indented child line of the same name; the device's own line may
//! itself sit under another range that contains it. Each line is
//! `<depth × 2 spaces>START-END : NAME`, the numbers in hex.

/// One range of /proc/iomem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range<'a> {
    /// Nesting level: 0 for a top-level range.
    pub(crate) depth: usize,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) name: &'a str,
}

/// The ranges of an iomem text, in order; lines of any other shape are left out.
pub(crate) fn ranges(text: &str) -> impl Iterator<Item = Range<'_>> {
    text.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Range<'_>> {
    let body = line.trim_start_matches(' ');
    let depth = (line.len() - body.len()) / 2;
    let (span, name) = body.split_once(" : ")?;
    let (start, end) = span.split_once('-')?;
    let (start, end) = (hex(start)?, hex(end)?);
    (end >= start && !name.is_empty()).then_some(Range {
        depth,
        start,
        end,
        name,
    })
}

/// 1 to 16 hex digits, nothing else (`from_str_radix` alone would take a sign).
fn hex(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// What /proc/iomem has at an MMIO base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot<'a> {
    /// A virtio-mmio platform device, by its (checked) name: `virtio-mmio.N`.
    VirtioMmio(&'a str),
    /// Ranges start there, none of them a virtio-mmio device; the first one's name.
    Other(&'a str),
    /// No range starts there.
    Missing,
}

/// The device whose range starts at `base`: a virtio-mmio device if any range starting there
/// is one (at whatever depth), else whatever else starts there.
pub(crate) fn slot_at(text: &str, base: u64) -> Slot<'_> {
    let mut other = None;
    for r in ranges(text).filter(|r| r.start == base) {
        if is_virtio_mmio_name(r.name) {
            return Slot::VirtioMmio(r.name);
        }
        other.get_or_insert(r.name);
    }
    other.map_or(Slot::Missing, Slot::Other)
}

/// `virtio-mmio.N`, N decimal: the only names the agent puts into a sysfs path or writes to
/// the driver's `bind` file.
pub(crate) fn is_virtio_mmio_name(name: &str) -> bool {
    name.strip_prefix("virtio-mmio.")
        .is_some_and(|n| (1..=10).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a hull guest's /proc/iomem with slot 3 bound and slot 4 a placeholder.
    const IOMEM: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000f0000-000fffff : Reserved
00100000-0fffffff : System RAM
  01000000-01e01d46 : Kernel code
d0000000-d00001ff : virtio-mmio.0
  d0000000-d00001ff : virtio-mmio.0
d0001000-d00011ff : virtio-mmio.1
d0003000-d00031ff : virtio-mmio.3
  d0003000-d00031ff : virtio-mmio.3
d0004000-d00041ff : virtio-mmio.4
fee00000-fee00fff : Local APIC
";

    #[test]
    fn finds_the_slot_at_a_base() {
        assert_eq!(
            slot_at(IOMEM, 0xd000_3000),
            Slot::VirtioMmio("virtio-mmio.3")
        );
        assert_eq!(
            slot_at(IOMEM, 0xd000_4000),
            Slot::VirtioMmio("virtio-mmio.4")
        );
        assert_eq!(slot_at(IOMEM, 0xd000_2000), Slot::Missing);
        assert_eq!(
            slot_at(IOMEM, 0xd000_3001),
            Slot::Missing,
            "inside a range is not its base"
        );
        assert_eq!(slot_at(IOMEM, 0xfee0_0000), Slot::Other("Local APIC"));
        assert_eq!(slot_at(IOMEM, 0x0100_0000), Slot::Other("Kernel code"));
        assert_eq!(slot_at("", 0), Slot::Missing);
        let r: Vec<_> = ranges(IOMEM)
            .filter(|r| r.name == "virtio-mmio.3")
            .collect();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].depth, r[1].depth), (0, 1));
        assert_eq!((r[0].start, r[0].end), (0xd000_3000, 0xd000_31ff));
    }

    #[test]
    fn a_device_nested_under_another_range_is_found() {
        let nested = "\
c0000000-dfffffff : Reserved
  d0003000-d00031ff : virtio-mmio.3
    d0003000-d00031ff : virtio-mmio.3
e0000000-e00001ff : something
  e0000000-e00000ff : virtio-mmio.7
";
        assert_eq!(
            slot_at(nested, 0xd000_3000),
            Slot::VirtioMmio("virtio-mmio.3")
        );
        assert_eq!(
            slot_at(nested, 0xe000_0000),
            Slot::VirtioMmio("virtio-mmio.7")
        );
        assert_eq!(slot_at(nested, 0xc000_0000), Slot::Other("Reserved"));
    }

    #[test]
    fn hostile_contents_are_skipped_or_refused() {
        let hostile = "\
d0003000-d00031ff : virtio-mmio.3/../../../../bind
d0004000-d00041ff : virtio-mmio.
d0005000-d00051ff : virtio-mmio.12345678901
d0006000-d00061ff : virtio-mmio.6 
d0007000-d00071ff : ../virtio-mmio.7
d0008000-d00080ff :
d0009000-d00090ff : virtio-mmio.9\u{0}
+d000a000-d000a1ff : virtio-mmio.10
d000b000-+d000b1ff : virtio-mmio.11
d000c1ff-d000c000 : virtio-mmio.12
10000000000000000-10000000000000001 : virtio-mmio.13
d000d000 : virtio-mmio.14
d000e000-d000e1ff virtio-mmio.15
\u{fffd}\u{fffd}\u{fffd}
d000f000-d000f1ff : virtio-mmio.16 : and more
";
        for (base, want) in [
            (0xd000_3000, Slot::Other("virtio-mmio.3/../../../../bind")),
            (0xd000_4000, Slot::Other("virtio-mmio.")),
            (0xd000_5000, Slot::Other("virtio-mmio.12345678901")),
            (0xd000_6000, Slot::Other("virtio-mmio.6 ")),
            (0xd000_7000, Slot::Other("../virtio-mmio.7")),
            (0xd000_8000, Slot::Missing),
            (0xd000_9000, Slot::Other("virtio-mmio.9\u{0}")),
            (0xd000_a000, Slot::Missing),
            (0xd000_b000, Slot::Missing),
            (0xd000_c1ff, Slot::Missing),
            (0xd000_d000, Slot::Missing),
            (0xd000_e000, Slot::Missing),
            (0xd000_f000, Slot::Other("virtio-mmio.16 : and more")),
        ] {
            assert_eq!(slot_at(hostile, base), want, "{base:#x}");
        }
        let long = format!("d0000000-d00001ff : {}\n", "x".repeat(1 << 20));
        assert!(matches!(slot_at(&long, 0xd000_0000), Slot::Other(_)));
        assert_eq!(ranges(hostile).count(), 7);
    }

    #[test]
    fn names() {
        assert!(is_virtio_mmio_name("virtio-mmio.0"));
        assert!(is_virtio_mmio_name("virtio-mmio.4294967295"));
        for bad in [
            "virtio-mmio",
            "virtio-mmio.",
            "virtio-mmio.-1",
            "virtio-mmio.1a",
            "xvirtio-mmio.1",
        ] {
            assert!(!is_virtio_mmio_name(bad), "{bad}");
        }
    }
}
