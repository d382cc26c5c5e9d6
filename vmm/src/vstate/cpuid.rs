//! CPUID a vCPU sees: what KVM supports, filtered to a sane, consistent virtual CPU. Each vCPU
//! gets its own APIC id and a topology of `n` single-threaded cores in one package; the
//! hypervisor bit is set; performance monitoring is hidden (no vPMU); leaves that describe
//! host-only facilities are cleared.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;
const LEAF_AMD_FEATURES: u32 = 0x8000_0001;
const LEAF_AMD_PERFMON_V2: u32 = 0x8000_0022;

const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_PDCM: u32 = 1 << 15; // perf capabilities MSR
const ECX_MONITOR: u32 = 1 << 3;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_HTT: u32 = 1 << 28;
const AMD_ECX_PERFCTR_CORE: u32 = 1 << 23;
const AMD_ECX_PERFCTR_NB: u32 = 1 << 24;
const AMD_ECX_PERFCTR_LLC: u32 = 1 << 28;

/// Topology level types for leaves 0xb/0x1f.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to number `n` things.
fn bits_for(n: u8) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - (u32::from(n) - 1).leading_zeros()
    }
}

fn topology(e: &mut kvm_cpuid_entry2, cpu: u8, n: u8) {
    let id = u32::from(cpu);
    e.edx = id;
    match e.index {
        0 => {
            e.eax = 0; // one thread per core
            e.ebx = 1;
            e.ecx = (LEVEL_SMT << 8) | e.index;
        }
        1 => {
            e.eax = bits_for(n);
            e.ebx = u32::from(n);
            e.ecx = (LEVEL_CORE << 8) | e.index;
        }
        _ => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = e.index;
        }
    }
}

/// Advertises the LAPIC's TSC-deadline mode. KVM_GET_SUPPORTED_CPUID always reports it off
/// because it needs the in-kernel LAPIC; KVM_CAP_TSC_DEADLINE_TIMER says it is there (KVM API
/// docs). Without it the guest calibrates its LAPIC timer against the PIT at boot (~0.2 s in
/// the lab, and under a slow host it gives up: "APIC timer disabled due to verification
/// failure", leaving every tick to the PIT).
pub fn add_tsc_deadline(cpuid: &mut CpuId) {
    for e in cpuid.as_mut_slice().iter_mut() {
        if e.function == LEAF_FEATURES {
            e.ecx |= ECX_TSC_DEADLINE;
        }
    }
}

/// Filters `cpuid` in place for vCPU `cpu` of `n`.
pub fn filter(cpuid: &mut CpuId, cpu: u8, n: u8) {
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(cpu) << 24) | (u32::from(n) << 16);
                e.ebx = (e.ebx & !0xff00) | (8 << 8); // CLFLUSH line size: 64 bytes
                e.ecx |= ECX_HYPERVISOR;
                e.ecx &= !(ECX_PDCM | ECX_MONITOR);
                if n > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE => {
                // eax[31:26] = cores per package - 1; eax[25:14] = threads sharing - 1.
                let cores = u32::from(n.max(1)) - 1;
                e.eax = (e.eax & 0x3fff) | (cores << 26);
            }
            LEAF_PMU | LEAF_AMD_PERFMON_V2 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_EXT_TOPOLOGY => topology(e, cpu, n),
            LEAF_AMD_FEATURES => {
                e.ecx &= !(AMD_ECX_PERFCTR_CORE | AMD_ECX_PERFCTR_NB | AMD_ECX_PERFCTR_LLC);
            }
            LEAF_AMD_SIZES => {
                // ecx[7:0] = cores - 1, ecx[15:12] = APIC id bits.
                e.ecx = (u32::from(n.max(1)) - 1) | (bits_for(n) << 12);
            }
            LEAF_AMD_EXT_APIC => {
                e.eax = u32::from(cpu);
                e.ebx = u32::from(cpu); // core id, one thread per core
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            eax: 0xffff_ffff,
            ..Default::default()
        }
    }

    #[test]
    fn per_vcpu_ids_topology_and_no_pmu() {
        let entries = [
            entry(1, 0),
            entry(0xa, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
        ];
        let mut c = CpuId::from_entries(&entries).unwrap();
        filter(&mut c, 3, 4);
        let s = c.as_slice();
        assert_eq!(s[0].ebx >> 24, 3);
        assert_eq!((s[0].ebx >> 16) & 0xff, 4);
        assert_ne!(s[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(s[0].ecx & ECX_PDCM, 0);
        assert_eq!((s[1].eax, s[1].ebx, s[1].ecx, s[1].edx), (0, 0, 0, 0));
        assert_eq!((s[2].eax, s[2].ebx, s[2].edx), (0, 1, 3));
        assert_eq!((s[3].eax, s[3].ebx, s[3].ecx >> 8), (2, 4, LEVEL_CORE));
        assert_eq!((s[4].ebx, s[4].ecx), (0, 2));
    }

    #[test]
    fn tsc_deadline_is_added_to_leaf_1_only() {
        let mut zero = entry(1, 0);
        zero.ecx = 0;
        let mut other = entry(7, 0);
        other.ecx = 0;
        let mut c = CpuId::from_entries(&[zero, other]).unwrap();
        add_tsc_deadline(&mut c);
        filter(&mut c, 0, 1);
        let s = c.as_slice();
        assert_eq!(s[0].ecx & ECX_TSC_DEADLINE, ECX_TSC_DEADLINE);
        assert_eq!(s[1].ecx, 0);
    }

    #[test]
    fn bits() {
        assert_eq!(
            (
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(4),
                bits_for(5)
            ),
            (0, 1, 2, 2, 3)
        );
    }
}
