//! The architectural state a vCPU starts in: GDT, identity page tables, segment registers, MSRs,
//! FPU. Pure data: `vstate::vcpu` applies it through KVM.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use super::{BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDE_START, PDPTE_START, PML4_START};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the boot vCPU enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 16-bit real mode at `ip` with flat segments at 0 (test payloads).
    RealMode { ip: u64 },
    /// PVH: 32-bit protected mode, paging off, `rbx` = start_info.
    Pvh { ip: u64, start_info: u64 },
    /// Linux 64-bit boot protocol: long mode, identity-mapped, `rsi` = zero page.
    Linux64 { ip: u64, zero_page: u64 },
}

/// Builds a GDT entry from flags, base and limit (the layout the CPU reads).
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << (56 - 24))
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << (48 - 16))
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

fn bits(entry: u64, shift: u32, mask: u64) -> u8 {
    u8::try_from((entry >> shift) & mask).unwrap_or(0)
}

/// The KVM segment register that loading selector `index` of a GDT holding `entry` gives.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = u32::try_from((entry & 0xffff) | ((entry >> 32) & 0xf_0000)).unwrap_or(0);
    let g = bits(entry, 55, 1);
    let present = bits(entry, 47, 1);
    kvm_segment {
        base,
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: bits(entry, 40, 0xf),
        present,
        dpl: bits(entry, 45, 3),
        db: bits(entry, 54, 1),
        s: bits(entry, 44, 1),
        l: bits(entry, 53, 1),
        g,
        avl: bits(entry, 52, 1),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

fn write_gdt<M: GuestMemory>(mem: &M, table: &[u64]) -> Result<(), GuestMemoryError> {
    for (i, e) in table.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + (i as u64) * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
}

fn setup_page_tables<M: GuestMemory>(mem: &M) -> Result<(), GuestMemoryError> {
    // One PML4 entry -> one PDPT entry -> 512 2 MiB pages: the first GiB identity mapped.
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))?;
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))?;
    }
    Ok(())
}

/// Writes GDT/IDT/page tables as `mode` needs and returns the special registers to load on
/// top of the vCPU's current `sregs`.
pub fn setup_sregs<M: GuestMemory>(
    mem: &M,
    mode: EntryMode,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, GuestMemoryError> {
    match mode {
        EntryMode::RealMode { .. } => {
            for seg in [
                &mut sregs.cs,
                &mut sregs.ds,
                &mut sregs.es,
                &mut sregs.fs,
                &mut sregs.gs,
                &mut sregs.ss,
            ] {
                seg.base = 0;
                seg.selector = 0;
            }
        }
        EntryMode::Pvh { .. } | EntryMode::Linux64 { .. } => {
            let long = matches!(mode, EntryMode::Linux64 { .. });
            let code_flags = if long { 0xa09b } else { 0xc09b };
            let gdt = [
                gdt_entry(0, 0, 0),
                gdt_entry(code_flags, 0, 0xfffff),
                gdt_entry(0xc093, 0, 0xfffff),
                gdt_entry(0x808b, 0, 0xfffff),
            ];
            write_gdt(mem, &gdt)?;
            sregs.gdt.base = GDT_ADDR;
            sregs.gdt.limit = u16::try_from(gdt.len() * 8 - 1).unwrap_or(u16::MAX);
            sregs.idt.base = IDT_ADDR;
            sregs.idt.limit = 7;
            let code = segment_from_gdt(gdt[1], 1);
            let data = segment_from_gdt(gdt[2], 2);
            sregs.cs = code;
            sregs.ds = data;
            sregs.es = data;
            sregs.fs = data;
            sregs.gs = data;
            sregs.ss = data;
            sregs.tr = segment_from_gdt(gdt[3], 3);
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            if long {
                setup_page_tables(mem)?;
                sregs.cr3 = PML4_START;
                sregs.cr4 |= X86_CR4_PAE;
                sregs.cr0 |= X86_CR0_PG;
                sregs.efer |= EFER_LME | EFER_LMA;
            } else {
                sregs.cr4 = 0;
                sregs.efer = 0;
            }
        }
    }
    Ok(sregs)
}

/// General registers for `mode`.
pub fn regs(mode: EntryMode) -> kvm_regs {
    let mut r = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::RealMode { ip } => r.rip = ip,
        EntryMode::Pvh { ip, start_info } => {
            r.rip = ip;
            r.rbx = start_info;
        }
        EntryMode::Linux64 { ip, zero_page } => {
            r.rip = ip;
            r.rsp = BOOT_STACK_POINTER;
            r.rbp = BOOT_STACK_POINTER;
            r.rsi = zero_page;
        }
    }
    r
}

/// x87/SSE state a freshly reset CPU has.
pub fn fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MISC_ENABLE_FAST_STRING: u64 = 1;

/// Boot MSRs: syscall entry points cleared, TSC at 0, fast strings on.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
}

/// LAPIC register offsets and the delivery modes we program (LINT0 = ExtINT, LINT1 = NMI).
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(regs: &[std::os::raw::c_char; 1024], off: usize) -> u32 {
    let b = |i: usize| regs[off + i].to_ne_bytes()[0];
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(regs: &mut [std::os::raw::c_char; 1024], off: usize, v: u32) {
    for (i, byte) in v.to_le_bytes().iter().enumerate() {
        regs[off + i] = std::os::raw::c_char::from_ne_bytes([*byte]);
    }
}

/// Programs LINT0/LINT1 the way a PC's BIOS leaves them.
pub fn set_lint(regs: &mut [std::os::raw::c_char; 1024]) {
    let mode = |v: u32, m: u32| (v & !0x700) | (m << 8);
    let l0 = lapic_reg(regs, APIC_LVT0);
    set_lapic_reg(regs, APIC_LVT0, mode(l0, APIC_MODE_EXTINT));
    let l1 = lapic_reg(regs, APIC_LVT1);
    set_lapic_reg(regs, APIC_LVT1, mode(l1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_round_trip() {
        let code = gdt_entry(0xa09b, 0, 0xfffff);
        let s = segment_from_gdt(code, 1);
        assert_eq!(
            (s.l, s.db, s.g, s.present, s.type_, s.s),
            (1, 0, 1, 1, 0xb, 1)
        );
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.selector, 8);
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn lint_programming() {
        let mut r = [0 as std::os::raw::c_char; 1024];
        set_lint(&mut r);
        assert_eq!(lapic_reg(&r, APIC_LVT0), 0x700);
        assert_eq!(lapic_reg(&r, APIC_LVT1), 0x400);
    }
}
