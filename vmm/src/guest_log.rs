//! Log lines a guest can cause (a device that fails to activate, a NIC whose tap fails, …).
//! A guest can repeat what caused them without end, and hull-vmm's log is a host file: each
//! site writes its line once and then only counts (`guest.log_lines_suppressed` in the
//! metrics), and the whole process writes at most [`MAX_LINES`] such lines, so the log stays
//! bounded whatever the guest does. Lines go out with `write!`, never `eprintln!`, which
//! panics when stderr is gone (a closed pipe, a full disk, the jail's RLIMIT_FSIZE).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::METRICS;

/// Guest-caused lines one hull-vmm process writes at most.
pub(crate) const MAX_LINES: u64 = 64;

/// How many more guest-caused lines may be written.
#[derive(Debug)]
pub(crate) struct LineBudget(AtomicU64);

impl LineBudget {
    pub(crate) const fn new(lines: u64) -> Self {
        LineBudget(AtomicU64::new(lines))
    }

    /// Takes one line from the budget; false once it is spent.
    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

static BUDGET: LineBudget = LineBudget::new(MAX_LINES);

/// Writes `line` the first time a site gets here (`said` is the site's own flag), within the
/// process's budget; counts it otherwise.
pub(crate) fn once(said: &mut bool, line: fmt::Arguments<'_>) {
    if std::mem::replace(said, true) {
        METRICS.guest.log_lines_suppressed.inc();
    } else {
        emit(&BUDGET, line);
    }
}

/// Writes `line` within the process's budget, for a site that says it once by itself (its
/// device stops for good after it).
pub(crate) fn line(line: fmt::Arguments<'_>) {
    emit(&BUDGET, line);
}

fn emit(budget: &LineBudget, line: fmt::Arguments<'_>) {
    if !budget.take() {
        METRICS.guest.log_lines_suppressed.inc();
        return;
    }
    #[cfg(test)]
    if capture::push(&line) {
        return;
    }
    let _ = writeln!(std::io::stderr(), "hull-vmm: {line}");
}

/// What the calling test thread's guest-caused lines would have written.
#[cfg(test)]
pub(crate) mod capture {
    use std::cell::RefCell;

    thread_local! {
        static LINES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }

    /// Keeps the line when this thread captures; false when it does not.
    pub(super) fn push(line: &std::fmt::Arguments<'_>) -> bool {
        LINES.with(|l| match l.borrow_mut().as_mut() {
            Some(v) => {
                v.push(line.to_string());
                true
            }
            None => false,
        })
    }

    /// Runs `f`, returning the lines it logged on this thread.
    pub(crate) fn lines(f: impl FnOnce()) -> Vec<String> {
        LINES.with(|l| *l.borrow_mut() = Some(Vec::new()));
        f();
        LINES.with(|l| l.borrow_mut().take().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_says_it_once_then_counts() {
        let before = METRICS.guest.log_lines_suppressed.get();
        let mut said = false;
        let lines = capture::lines(|| {
            for i in 0..10_000 {
                once(&mut said, format_args!("failure {i}"));
            }
        });
        assert_eq!(lines, ["failure 0"]);
        // Other tests count into the same process-wide counter: at least ours are there.
        assert!(METRICS.guest.log_lines_suppressed.get() >= before + 9_999);
    }

    #[test]
    fn the_process_budget_bounds_every_site_together() {
        let budget = LineBudget::new(3);
        let lines = capture::lines(|| {
            for i in 0..1000 {
                emit(&budget, format_args!("site {i}"));
            }
        });
        assert_eq!(lines, ["site 0", "site 1", "site 2"]);
    }
}
