//! Intel MultiProcessor table (spec 1.4): how a guest without ACPI finds its vCPUs, the IOAPIC
//! and the ISA interrupt routing. Written byte by byte at the EBDA.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::{EBDA_START, IRQ_MAX};

const APIC_DEFAULT_BASE: u32 = 0xfee0_0000;
const IOAPIC_DEFAULT_BASE: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const MP_FLOATING_LEN: usize = 16;
const MP_HEADER_LEN: usize = 44;

#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("too many vCPUs for the MP table: {0}")]
    TooManyCpus(u8),
    #[error("MP table does not fit in guest memory: {0}")]
    Write(vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the MP table bytes for `num_cpus` vCPUs to be placed at `base`.
pub fn build(num_cpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 || num_cpus > 254 {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    let ioapic_id = num_cpus.saturating_add(1);
    let mut body = Vec::new();
    let mut entries: u16 = 0;
    for cpu in 0..num_cpus {
        body.push(0); // processor
        body.push(cpu);
        body.push(APIC_VERSION);
        body.push(if cpu == 0 { 0b11 } else { 0b01 }); // enabled (+ bootstrap)
        body.extend_from_slice(&0x600u32.to_le_bytes()); // family 6
        body.extend_from_slice(&0x201u32.to_le_bytes()); // fpu + apic
        body.extend_from_slice(&[0; 8]);
        entries += 1;
    }
    body.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']); // bus 0 = ISA
    body.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    body.extend_from_slice(&IOAPIC_DEFAULT_BASE.to_le_bytes());
    entries += 2;
    for irq in 0..=IRQ_MAX {
        let irq = u8::try_from(irq).unwrap_or(u8::MAX);
        // INT, conforming polarity/trigger, ISA bus irq -> same IOAPIC pin.
        body.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        entries += 1;
    }
    // Local interrupts: ExtINT on LINT0 of every LAPIC, NMI on LINT1.
    body.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    body.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    entries += 2;

    let table_len = u16::try_from(MP_HEADER_LEN + body.len()).unwrap_or(u16::MAX);
    let mut header = Vec::with_capacity(MP_HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&table_len.to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"HULLVMM ");
    header.extend_from_slice(b"000000000000");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&entries.to_le_bytes());
    header.extend_from_slice(&APIC_DEFAULT_BASE.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length/checksum, reserved
    let mut table = header;
    table.extend_from_slice(&body);
    table[7] = checksum(&table);

    let table_addr = u32::try_from(base + MP_FLOATING_LEN as u64).unwrap_or(0);
    let mut mpf = Vec::with_capacity(MP_FLOATING_LEN);
    mpf.extend_from_slice(b"_MP_");
    mpf.extend_from_slice(&table_addr.to_le_bytes());
    mpf.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length in 16-byte units, rev, csum, features
    mpf[10] = checksum(&mpf);

    let mut out = mpf;
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table for `num_cpus` at the EBDA.
pub fn setup<M: GuestMemory>(mem: &M, num_cpus: u8) -> Result<(), MptableError> {
    let bytes = build(num_cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts() {
        let t = build(2, EBDA_START).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let table = &t[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([table[4], table[5]]));
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert!(build(0, EBDA_START).is_err());
        // The largest supported VM's table stays inside the EBDA, below 640 KiB.
        assert!(EBDA_START + build(32, EBDA_START).unwrap().len() as u64 <= 0xa0000);
    }
}
