//! One readable reason why a pod VM did not come up. It is the first line of the error that
//! RunPodSandbox returns, which `kubectl describe pod` shows in the pod's events; the logs the
//! shim quotes below it are for whoever digs further. The reason is read from what hull-vmm
//! logged last (vmm/API.md, Signals and exit status): its `VM ended:` line and, for a guest
//! kernel panic, the panic line it found in the guest's crash record.

use std::time::Duration;

/// How waiting for the agent ended without it.
#[derive(Debug)]
pub(super) enum NotReady {
    /// hull-vmm exited (maybe after virtiofsd, which follows it); its exit status as text.
    VmmExited(String),
    /// virtiofsd exited while hull-vmm runs on; its exit status.
    VirtiofsdExited(String),
    /// `[vm] boot_timeout_secs` passed; the last attempt's error.
    Timeout { after: Duration, last: String },
}

/// hull-vmm's last line: `hull-vmm: VM ended: <end> (exit status N)`.
const VM_ENDED: &str = "hull-vmm: VM ended: ";
/// hull-vmm's line after a guest kernel's crash record (vmm/src/pstore.rs).
const PANIC_LINE: &str = "hull-vmm: end of the guest kernel's log: ";

fn last_line_after<'a>(log: &'a str, prefix: &str) -> Option<&'a str> {
    log.lines()
        .rev()
        .find_map(|l| l.trim_end().strip_prefix(prefix))
}

/// The end hull-vmm logged, without its ` (exit status N)`.
fn vm_end(log: &str) -> Option<&str> {
    let end = last_line_after(log, VM_ENDED)?;
    Some(end.rsplit_once(" (exit status ").map_or(end, |(e, _)| e))
}

/// The reason, one line. `vmm_log` is the end of hull-vmm's log.
pub(super) fn reason(why: &NotReady, vmm_log: &str) -> String {
    match why {
        NotReady::VmmExited(status) => match vm_end(vmm_log) {
            Some(end) if end.starts_with("GuestPanic") => {
                match last_line_after(vmm_log, PANIC_LINE) {
                    Some(panic) => format!("the guest kernel panicked: {panic}"),
                    None => "the guest kernel panicked (it left no crash record)".to_owned(),
                }
            }
            Some(end) if end.starts_with("TripleFault") => {
                format!("the guest crashed: {end} (a triple fault resets a real CPU)")
            }
            Some(end) => match end.strip_prefix("error: ") {
                Some(error) => format!("hull-vmm failed: {error}"),
                None => format!("the guest stopped before its agent answered ({end})"),
            },
            None => {
                let last = vmm_log.lines().last().unwrap_or("its log is empty").trim();
                format!("hull-vmm exited ({status}) before the agent answered: {last}")
            }
        },
        NotReady::VirtiofsdExited(status) => {
            format!("virtiofsd exited ({status}) before the agent answered; hull-vmm still runs")
        }
        NotReady::Timeout { after, last } => format!(
            "the guest's agent did not answer within {} s (hull.toml [vm] boot_timeout_secs); \
             the guest is still running, or stuck; last attempt: {last}",
            after.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of hull-vmm's log after a guest kernel panic without a UART (lab_boot,
    /// vmm-panic-no-uart.err).
    const PANIC_LOG: &str = "\
<0>[    0.584339] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
<4>[    0.584613] CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.118-hull #1
<0>[    0.585430] Kernel Offset: disabled
hull-vmm: end of the guest kernel's log: Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
hull-vmm: VM ended: GuestPanic (exit status 3)
";

    fn exited(log: &str) -> String {
        reason(&NotReady::VmmExited("exit status: 3".into()), log)
    }

    #[test]
    fn a_guest_kernel_panic_is_named_with_its_panic_line() {
        assert_eq!(
            exited(PANIC_LOG),
            "the guest kernel panicked: Kernel panic - not syncing: VFS: Unable to mount root \
             fs on unknown-block(0,0)"
        );
        assert_eq!(
            exited("hull-vmm: VM ended: GuestPanic (exit status 3)\n"),
            "the guest kernel panicked (it left no crash record)"
        );
    }

    #[test]
    fn a_triple_fault_an_error_and_an_early_stop_are_told_apart() {
        assert_eq!(
            exited("hull-vmm: VM ended: TripleFault { vcpu: 0 } (exit status 3)"),
            "the guest crashed: TripleFault { vcpu: 0 } (a triple fault resets a real CPU)"
        );
        assert_eq!(
            exited("x\nhull-vmm: VM ended: error: create VM: KVM_CREATE_VM: Operation not permitted (os error 1) (exit status 1)\n"),
            "hull-vmm failed: create VM: KVM_CREATE_VM: Operation not permitted (os error 1)"
        );
        assert_eq!(
            exited("hull-vmm: VM ended: GuestReset (exit status 0)"),
            "the guest stopped before its agent answered (GuestReset)"
        );
    }

    #[test]
    fn a_vmm_that_logged_no_end_is_quoted() {
        assert_eq!(
            reason(
                &NotReady::VmmExited("signal: 31 (SIGSYS)".into()),
                "hull-vmm: starting\n"
            ),
            "hull-vmm exited (signal: 31 (SIGSYS)) before the agent answered: hull-vmm: starting"
        );
    }

    #[test]
    fn a_timeout_names_the_setting() {
        let r = reason(
            &NotReady::Timeout {
                after: Duration::from_secs(30),
                last: "connection refused".into(),
            },
            PANIC_LOG,
        );
        assert!(
            r.starts_with(
                "the guest's agent did not answer within 30 s (hull.toml [vm] boot_timeout_secs)"
            ),
            "{r}"
        );
        assert!(r.ends_with("last attempt: connection refused"), "{r}");
    }
}
