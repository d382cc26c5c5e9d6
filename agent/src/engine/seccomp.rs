//! OCI seccomp profiles compiled to BPF with `seccompiler` (pure Rust, so the static guest
//! binary needs no libseccomp.a; it is also the filter compiler the VMM uses).
//!
//! seccompiler builds one filter per (mismatch, match) action pair, while an OCI profile gives
//! each syscall its own action. The kernel runs every installed filter and keeps the result of
//! highest precedence, so the profile becomes a stack: one filter returns the default action
//! for every syscall the profile does not list (and Allow for the listed ones), plus one
//! filter per other action returning that action for its syscalls and Allow otherwise. Each
//! syscall thus gets exactly one non-Allow verdict, the one the profile gives it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::TargetArch;
use serde_json::{json, Value};

use super::error::{EngineError, Result};

/// A compiled filter: BPF instructions as (code, jt, jf, k).
pub(crate) type Program = Vec<(u16, u8, u8, u32)>;

const EPERM: u32 = 1;

fn action_json(action: LinuxSeccompAction, errno: Option<u32>) -> Result<Value> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => json!({ "errno": errno.unwrap_or(EPERM) }),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            json!("kill_thread")
        }
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActLog => json!("log"),
        LinuxSeccompAction::ScmpActTrace => json!({ "trace": errno.unwrap_or(EPERM) }),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(EngineError::InvalidArgument(
                "seccomp action SCMP_ACT_NOTIFY is not supported".into(),
            ))
        }
    })
}

fn op_json(op: LinuxSeccompOperator, value_two: Option<u64>) -> Value {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => json!("ne"),
        LinuxSeccompOperator::ScmpCmpLt => json!("lt"),
        LinuxSeccompOperator::ScmpCmpLe => json!("le"),
        LinuxSeccompOperator::ScmpCmpEq => json!("eq"),
        LinuxSeccompOperator::ScmpCmpGe => json!("ge"),
        LinuxSeccompOperator::ScmpCmpGt => json!("gt"),
        LinuxSeccompOperator::ScmpCmpMaskedEq => json!({ "masked_eq": value_two.unwrap_or(0) }),
    }
}

/// Whether seccompiler knows the syscall on x86_64. Profiles list syscalls of every kernel
/// and arch; like runc, names this platform lacks are skipped.
fn known_syscall(name: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(known) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
        return *known;
    }
    let probe = json!({ "p": { "mismatch_action": "allow", "match_action": "trap",
        "filter": [ { "syscall": name } ] } });
    let known =
        seccompiler::compile_from_json(probe.to_string().as_bytes(), TargetArch::x86_64).is_ok();
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_owned(), known);
    known
}

/// Compiles `profile` into the filters to install, in order. Empty when nothing is filtered.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<Vec<Program>> {
    let default = action_json(profile.default_action(), profile.default_errno_ret())?;
    // action (as JSON text) -> syscall -> rules (None = unconditional)
    let mut by_action: BTreeMap<String, BTreeMap<String, Option<Vec<Value>>>> = BTreeMap::new();
    for entry in profile.syscalls().iter().flatten() {
        let action = action_json(entry.action(), entry.errno_ret())?;
        if action == default {
            continue;
        }
        let cond: Option<Vec<Value>> =
            entry.args().as_ref().filter(|a| !a.is_empty()).map(|args| {
                args.iter()
                    .map(|a| {
                        json!({ "index": a.index(), "type": "qword",
                        "op": op_json(a.op(), a.value_two()), "val": a.value() })
                    })
                    .collect()
            });
        if let Some(c) = &cond {
            if let Some(bad) = entry.args().iter().flatten().find(|a| a.index() > 5) {
                return Err(EngineError::InvalidArgument(format!(
                    "seccomp argument index {} out of range 0..=5",
                    bad.index()
                )));
            }
            debug_assert!(!c.is_empty());
        }
        let syscalls = by_action.entry(action.to_string()).or_default();
        for name in entry.names() {
            if !known_syscall(name) {
                tracing::debug!(syscall = %name, "seccomp: unknown syscall skipped");
                continue;
            }
            match (syscalls.get_mut(name), &cond) {
                (Some(existing), Some(c)) => {
                    if let Some(rules) = existing {
                        rules.push(json!({ "syscall": name, "args": c }));
                    }
                }
                (_, None) => {
                    syscalls.insert(name.clone(), None);
                }
                (None, Some(c)) => {
                    syscalls.insert(
                        name.clone(),
                        Some(vec![json!({ "syscall": name, "args": c })]),
                    );
                }
            }
        }
    }

    let rules_of = |syscalls: &BTreeMap<String, Option<Vec<Value>>>| -> Vec<Value> {
        syscalls
            .iter()
            .flat_map(|(name, rules)| match rules {
                None => vec![json!({ "syscall": name })],
                Some(r) => r.clone(),
            })
            .collect()
    };
    let mut filters = serde_json::Map::new();
    let allow = json!("allow");
    if default != allow {
        let listed: Vec<Value> = by_action.values().flat_map(rules_of).collect();
        filters.insert(
            "0default".into(),
            json!({ "mismatch_action": default, "match_action": "allow", "filter": listed }),
        );
    }
    for (i, (action, syscalls)) in by_action.iter().enumerate() {
        let action: Value = serde_json::from_str(action).unwrap_or(Value::Null);
        if action == allow || syscalls.is_empty() {
            continue;
        }
        filters.insert(
            format!("{}action", i + 1),
            json!({ "mismatch_action": "allow", "match_action": action, "filter": rules_of(syscalls) }),
        );
    }
    let text = Value::Object(filters).to_string();
    let compiled = seccompiler::compile_from_json(text.as_bytes(), TargetArch::x86_64)
        .map_err(|e| EngineError::InvalidArgument(format!("compile seccomp profile: {e}")))?;
    let mut names: Vec<&String> = compiled.keys().collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| {
            compiled[n]
                .iter()
                .map(|f| (f.code, f.jt, f.jf, f.k))
                .collect()
        })
        .collect())
}

/// Installs compiled filters on the calling thread.
pub(crate) fn install(programs: &[Program]) -> std::result::Result<(), seccompiler::Error> {
    for p in programs {
        let bpf: seccompiler::BpfProgram = p
            .iter()
            .map(|&(code, jt, jf, k)| seccompiler::sock_filter { code, jt, jf, k })
            .collect();
        seccompiler::apply_filter(&bpf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn deny_list_compiles_to_one_filter() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir","mkdirat","no_such_call"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        );
        let f = compile(&p).unwrap();
        assert_eq!(f.len(), 1);
        assert!(!f[0].is_empty());
    }

    #[test]
    fn allow_list_with_mixed_actions_stacks_filters() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW",
                 "args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
                {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        );
        assert_eq!(compile(&p).unwrap().len(), 2);
    }

    #[test]
    fn refuses_notify_and_bad_index() {
        let p = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        assert!(compile(&p).is_err());
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],
               "action":"SCMP_ACT_ERRNO","args":[{"index":9,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(compile(&p).is_err());
    }
}
