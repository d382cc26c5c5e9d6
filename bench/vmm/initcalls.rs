//! The guest kernel's own boot profile: what `initcall_debug` prints on the console, turned
//! into "which initcalls cost the most". hull's kernel has no kallsyms, so the kernel prints
//! each initcall as an address; the kernel's System.map (kept by guest/build) names it.

use std::collections::HashMap;

/// One initcall the kernel ran: its name (or address) and how long it took, in µs of guest time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Initcall {
    pub name: String,
    pub usecs: u64,
}

/// Text symbols of a System.map, by address.
pub(crate) fn symbols(system_map: &str) -> HashMap<u64, String> {
    system_map
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.next()?;
            matches!(kind, "t" | "T").then(|| (addr, name.to_owned()))
        })
        .collect()
}

/// The initcalls of a console log, in the order they returned. A name printed as
/// `0xffff…` (no kallsyms) is looked up in `syms`; a name the kernel printed itself is kept.
pub(crate) fn parse(console: &str, syms: &HashMap<u64, String>) -> Vec<Initcall> {
    console
        .lines()
        .filter_map(|l| {
            // "[    0.123456] initcall 0xffffffff82b1c2d0 returned 0 after 123 usecs"
            let rest = &l[l.find("] initcall ")? + "] initcall ".len()..];
            let mut f = rest.split_whitespace();
            let fun = f.next()?;
            if f.next()? != "returned" {
                return None;
            }
            let _ret = f.next()?;
            if f.next()? != "after" {
                return None;
            }
            let usecs = f.next()?.parse().ok()?;
            if f.next()? != "usecs" {
                return None;
            }
            let name = fun
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .and_then(|a| syms.get(&a).cloned())
                .unwrap_or_else(|| fun.to_owned());
            Some(Initcall { name, usecs })
        })
        .collect()
}

/// The guest clock (printk time, seconds) of the first console line containing `what`.
pub(crate) fn guest_time_of(console: &str, what: &str) -> Option<f64> {
    let l = console.lines().find(|l| l.contains(what))?;
    let t = l.strip_prefix('[')?.split(']').next()?;
    t.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "ffffffff81000000 T _text\n\
        ffffffff82b1c2d0 t virtio_mmio_init\n\
        ffffffff82b1c300 d some_data\n\
        ffffffff82b1c400 T inet_init\n";

    const CONSOLE: &str = "[    0.010000] calling  0xffffffff82b1c2d0 @ 1\n\
        [    0.012000] initcall 0xffffffff82b1c2d0 returned 0 after 2000 usecs\n\
        [    0.013000] initcall 0xffffffff82b1c400 returned -19 after 35 usecs\n\
        [    0.014000] initcall 0xffffffff82b1c300 returned 0 after 7 usecs\n\
        [    0.015000] initcall foo_init+0x0/0x20 returned 0 after 9 usecs\n\
        [    0.016000] initcall garbage returned 0 after many usecs\n\
        [    0.900000] Run /init as init process\n";

    #[test]
    fn initcalls_are_named_from_the_system_map() {
        let syms = symbols(MAP);
        assert_eq!(syms.len(), 3, "only text symbols: {syms:?}");
        let calls = parse(CONSOLE, &syms);
        let got: Vec<_> = calls.iter().map(|c| (c.name.as_str(), c.usecs)).collect();
        assert_eq!(
            got,
            [
                ("virtio_mmio_init", 2000),
                ("inet_init", 35),
                // Not a text symbol: kept as the kernel printed it.
                ("0xffffffff82b1c300", 7),
                ("foo_init+0x0/0x20", 9),
            ]
        );
    }

    #[test]
    fn guest_time_of_a_line() {
        assert_eq!(
            guest_time_of(CONSOLE, "Run /init as init process"),
            Some(0.9)
        );
        assert_eq!(guest_time_of(CONSOLE, "not there"), None);
    }
}
