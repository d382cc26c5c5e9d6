//! The device cgroup on cgroup v2: `linux.resources.devices` compiled to an eBPF program of
//! type BPF_PROG_TYPE_CGROUP_DEVICE and attached to the container's cgroup, as runc and youki
//! do (cgroup v2 has no `devices.allow` file).
//!
//! A small emitter rather than a crate: the program is a fixed prologue plus one short block
//! per rule, ten instruction kinds in all; `aya`/`libbpf-rs` would bring an ELF loader or a
//! C toolchain into a static guest binary for that. Loading and attaching are two bpf(2)
//! calls in [`crate::sys`].
//!
//! Semantics (OCI runtime spec): rules are evaluated in order and the last match wins; no
//! match denies. Like runc, the agent appends the devices every container needs (null, zero,
//! full, random, urandom, tty, console, ptmx, pts, tun and mknod of anything) after the spec's
//! rules, so a spec's "deny all" (containerd's default) does not break the container.

use std::os::fd::OwnedFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::{EngineError, Result};
use crate::sys::{BpfInsn as Insn, BpfLink};

/// `bpf_cgroup_dev_ctx.access_type`: low 16 bits device type, high 16 bits access.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// The instructions the emitter uses.
impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        }
    }
    /// `dst = *(u32 *)(src + off)`
    const fn ldx_w(dst: u8, src: u8, off: i16) -> Self {
        Self::new(0x61, dst, src, off, 0)
    }
    /// `dst &= imm` (64-bit ALU)
    const fn and_k(dst: u8, imm: i32) -> Self {
        Self::new(0x57, dst, 0, 0, imm)
    }
    /// `dst >>= imm`
    const fn rsh_k(dst: u8, imm: i32) -> Self {
        Self::new(0x77, dst, 0, 0, imm)
    }
    /// `dst = src`
    const fn mov_x(dst: u8, src: u8) -> Self {
        Self::new(0xbf, dst, src, 0, 0)
    }
    /// `dst = imm`
    const fn mov_k(dst: u8, imm: i32) -> Self {
        Self::new(0xb7, dst, 0, 0, imm)
    }
    /// `if dst != imm goto +off`
    const fn jne_k(dst: u8, imm: i32, off: i16) -> Self {
        Self::new(0x55, dst, 0, off, imm)
    }
    /// `if dst != src goto +off`
    const fn jne_x(dst: u8, src: u8, off: i16) -> Self {
        Self::new(0x5d, dst, src, off, 0)
    }
    const fn exit() -> Self {
        Self::new(0x95, 0, 0, 0, 0)
    }
}

/// A rule in the form the program checks: None = any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) allow: bool,
    pub(crate) kind: Option<i32>,
    pub(crate) major: Option<i32>,
    pub(crate) minor: Option<i32>,
    pub(crate) access: i32,
}

fn invalid(msg: String) -> EngineError {
    EngineError::InvalidArgument(msg)
}

fn number(v: Option<i64>, what: &str) -> Result<Option<i32>> {
    match v {
        None => Ok(None),
        Some(n) if n < 0 => Ok(None), // -1 is the spec's wildcard
        Some(n) => i32::try_from(n)
            .map(Some)
            .map_err(|_| invalid(format!("device {what} {n} out of range"))),
    }
}

/// Converts one spec rule; a type of `a` (or none) matches both block and char devices.
pub(crate) fn rule(d: &LinuxDeviceCgroup) -> Result<Rule> {
    let kind = match d.typ() {
        None | Some(LinuxDeviceType::A) => None,
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
        Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
        Some(other) => {
            return Err(invalid(format!(
                "device cgroup rule type {other:?} is not b, c or a"
            )))
        }
    };
    let access = match d.access().as_deref() {
        None | Some("") => ACC_ALL,
        Some(s) => s.chars().try_fold(0, |acc, c| match c {
            'r' => Ok(acc | ACC_READ),
            'w' => Ok(acc | ACC_WRITE),
            'm' => Ok(acc | ACC_MKNOD),
            _ => Err(invalid(format!("device cgroup access {s:?}: not r, w, m"))),
        })?,
    };
    Ok(Rule {
        allow: d.allow(),
        kind,
        major: number(d.major(), "major")?,
        minor: number(d.minor(), "minor")?,
        access,
    })
}

/// What every container may use whatever its spec says (appended last, so they win).
pub(crate) fn default_rules() -> Vec<Rule> {
    let c = |major, minor: Option<i32>, access| Rule {
        allow: true,
        kind: Some(DEV_CHAR),
        major,
        minor,
        access,
    };
    let rwm = ACC_ALL;
    vec![
        c(None, None, ACC_MKNOD),
        Rule {
            kind: Some(DEV_BLOCK),
            ..c(None, None, ACC_MKNOD)
        },
        c(Some(1), Some(3), rwm),    // null
        c(Some(1), Some(5), rwm),    // zero
        c(Some(1), Some(7), rwm),    // full
        c(Some(1), Some(8), rwm),    // random
        c(Some(1), Some(9), rwm),    // urandom
        c(Some(5), Some(0), rwm),    // tty
        c(Some(5), Some(1), rwm),    // console
        c(Some(5), Some(2), rwm),    // ptmx
        c(Some(136), None, rwm),     // pts/*
        c(Some(10), Some(200), rwm), // net/tun
    ]
}

/// Compiles rules (last match wins, default deny) into a program.
pub(crate) fn compile(rules: &[Rule]) -> Vec<Insn> {
    // r2 = type, r3 = access, r4 = major, r5 = minor; r1 (the context) is then free.
    let mut p = vec![
        Insn::ldx_w(2, 1, 0),
        Insn::and_k(2, 0xffff),
        Insn::ldx_w(3, 1, 0),
        Insn::rsh_k(3, 16),
        Insn::ldx_w(4, 1, 4),
        Insn::ldx_w(5, 1, 8),
    ];
    // Checked from the last rule back, so the first match found is the spec's last one.
    for r in rules.iter().rev() {
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        if let Some(k) = r.kind {
            checks.push(vec![Insn::jne_k(2, k, 0)]);
        }
        if r.access != ACC_ALL {
            // The request's access bits must all be in the rule's.
            checks.push(vec![
                Insn::mov_x(1, 3),
                Insn::and_k(1, r.access),
                Insn::jne_x(1, 3, 0),
            ]);
        }
        if let Some(m) = r.major {
            checks.push(vec![Insn::jne_k(4, m, 0)]);
        }
        if let Some(m) = r.minor {
            checks.push(vec![Insn::jne_k(5, m, 0)]);
        }
        let block_len: usize = checks.iter().map(Vec::len).sum::<usize>() + 2;
        let mut emitted = 0usize;
        for check in checks {
            for mut insn in check {
                emitted += 1;
                if insn.code == 0x55 || insn.code == 0x5d {
                    // Skip the rest of this block: to the next rule.
                    insn.off = i16::try_from(block_len - emitted).unwrap_or(i16::MAX);
                }
                p.push(insn);
            }
        }
        let unconditional = block_len == 2;
        p.push(Insn::mov_k(0, i32::from(r.allow)));
        p.push(Insn::exit());
        if unconditional {
            // It matches everything: what follows could never run, and the verifier
            // refuses unreachable instructions.
            return p;
        }
    }
    p.push(Insn::mov_k(0, 0));
    p.push(Insn::exit());
    p
}

/// The program for a spec's rules: theirs, then [`default_rules`].
pub(crate) fn program(spec_rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>> {
    let mut rules = spec_rules.iter().map(rule).collect::<Result<Vec<_>>>()?;
    rules.extend(default_rules());
    Ok(compile(&rules))
}

/// Loads `insns` and attaches them to the cgroup at `cgroup_dir`; returns the program's
/// descriptor (it stays attached after the descriptor is closed, until detached or the
/// cgroup is removed).
pub(crate) fn attach(cgroup_dir: &Path, insns: &[Insn]) -> Result<OwnedFd> {
    let prog = crate::sys::bpf_load_cgroup_device(insns).map_err(|(e, log)| {
        EngineError::Internal(format!("load device cgroup program: {e}; verifier: {log}"))
    })?;
    let dir = std::fs::File::open(cgroup_dir)
        .map_err(|e| EngineError::io(format!("open cgroup {cgroup_dir:?}"), e))?;
    crate::sys::bpf_cgroup_device(BpfLink::Attach, &dir, &prog).map_err(|e| {
        EngineError::FailedPrecondition(format!(
            "attach device cgroup program to {cgroup_dir:?}: {e}"
        ))
    })?;
    Ok(prog)
}

/// Detaches a program attached by [`attach`] (replacing it on update).
pub(crate) fn detach(cgroup_dir: &Path, prog: &OwnedFd) -> Result<()> {
    let dir = std::fs::File::open(cgroup_dir)
        .map_err(|e| EngineError::io(format!("open cgroup {cgroup_dir:?}"), e))?;
    crate::sys::bpf_cgroup_device(BpfLink::Detach, &dir, prog)
        .map_err(|e| EngineError::io(format!("detach device program from {cgroup_dir:?}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_rule(json: &str) -> LinuxDeviceCgroup {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn converts_spec_rules() {
        let r = rule(&spec_rule(
            r#"{"allow": true, "type": "c", "major": 1, "minor": -1, "access": "rw"}"#,
        ))
        .unwrap();
        assert_eq!(
            r,
            Rule {
                allow: true,
                kind: Some(DEV_CHAR),
                major: Some(1),
                minor: None,
                access: ACC_READ | ACC_WRITE
            }
        );
        let deny_all = rule(&spec_rule(r#"{"allow": false, "access": "rwm"}"#)).unwrap();
        assert_eq!((deny_all.kind, deny_all.access), (None, ACC_ALL));
        assert!(rule(&spec_rule(r#"{"allow": true, "access": "rx"}"#)).is_err());
    }

    /// Runs the program on one request, as the kernel would (only the instructions the
    /// emitter produces are interpreted).
    fn run(p: &[Insn], kind: i32, access: i32, major: i32, minor: i32) -> i64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            pc += 1;
            match i.code {
                0x61 => r[dst] = i64::from(ctx[usize::try_from(i.off / 4).unwrap()]),
                0x57 => r[dst] &= i64::from(i.imm),
                0x77 => r[dst] >>= i.imm,
                0xbf => r[dst] = r[src],
                0xb7 => r[dst] = i64::from(i.imm),
                0x55 if r[dst] != i64::from(i.imm) => pc += usize::try_from(i.off).unwrap(),
                0x5d if r[dst] != r[src] => pc += usize::try_from(i.off).unwrap(),
                0x55 | 0x5d => {}
                0x95 => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn last_match_wins_and_default_denies() {
        let rules = [
            rule(&spec_rule(r#"{"allow": false, "access": "rwm"}"#)).unwrap(),
            rule(&spec_rule(
                r#"{"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"}"#,
            ))
            .unwrap(),
        ];
        let p = compile(&rules);
        assert_eq!(
            run(&p, DEV_CHAR, ACC_READ, 1, 11),
            1,
            "read of the allowed device"
        );
        assert_eq!(
            run(&p, DEV_CHAR, ACC_WRITE, 1, 11),
            0,
            "write not in the rule"
        );
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 0, "another device");
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 1, 11), 0, "a block device");
        assert_eq!(
            run(&compile(&[]), DEV_CHAR, ACC_READ, 1, 3),
            0,
            "no rule: deny"
        );
        let full = program(&[spec_rule(r#"{"allow": false, "access": "rwm"}"#)]).unwrap();
        assert_eq!(
            run(&full, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3),
            1,
            "defaults: null"
        );
        assert_eq!(run(&full, DEV_CHAR, ACC_READ, 136, 4), 1, "defaults: pts");
        assert_eq!(run(&full, DEV_BLOCK, ACC_MKNOD, 8, 0), 1, "defaults: mknod");
        assert_eq!(
            run(&full, DEV_BLOCK, ACC_READ, 8, 0),
            0,
            "spec: deny block read"
        );
        assert_eq!(run(&full, DEV_CHAR, ACC_READ, 1, 11), 0, "spec: deny kmsg");
    }

    #[test]
    fn nothing_after_a_rule_that_matches_everything() {
        let allow_all = rule(&spec_rule(r#"{"allow": true, "access": "rwm"}"#)).unwrap();
        let deny_kmsg = rule(&spec_rule(
            r#"{"allow": false, "type": "c", "major": 1, "minor": 11, "access": "rwm"}"#,
        ))
        .unwrap();
        // Checked last-first: deny_kmsg, then allow_all ends the program.
        let p = compile(&[allow_all, deny_kmsg]);
        assert_eq!(p.last(), Some(&Insn::exit()));
        assert_eq!(p[p.len() - 2], Insn::mov_k(0, 1));
        assert_eq!(
            p.len(),
            6 + 5 + 2,
            "prologue, the kmsg block, the catch-all"
        );
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 11), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_WRITE, 8, 1), 1);
    }
}
