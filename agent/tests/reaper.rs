//! The reaper collects direct children and adopted orphans (its own test binary, because a
//! `waitpid(-1)` would steal the statuses of other tests' children).

use std::process::Command;
use std::time::{Duration, Instant};

use hull_agent::reaper::reap_exited;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

fn reap_until(deadline: Duration, mut done: impl FnMut(&WaitStatus) -> bool) -> Vec<WaitStatus> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < deadline {
        for status in reap_exited() {
            let stop = done(&status);
            seen.push(status);
            if stop {
                return seen;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("reaper did not see the expected exit in {deadline:?}; saw {seen:?}");
}

#[test]
fn reaps_children_and_adopted_orphans() {
    nix::sys::prctl::set_child_subreaper(true).expect("subreaper");

    // A direct child: its status arrives with its exit code.
    #[expect(clippy::zombie_processes, reason = "the reaper under test collects it")]
    let child = Command::new("sh")
        .args(["-c", "exit 3"])
        .spawn()
        .expect("spawn sh");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    reap_until(Duration::from_secs(10), |s| {
        *s == WaitStatus::Exited(pid, 3)
    });

    // An orphan: the shell exits at once and its background sleep is re-parented to us.
    // The sleep prints its pid so we know whom to expect.
    let out = Command::new("sh")
        .args(["-c", "sleep 0.2 & echo $!"])
        .output()
        .expect("run sh");
    let orphan: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("orphan pid");
    let orphan = Pid::from_raw(orphan);
    reap_until(Duration::from_secs(10), |s| {
        *s == WaitStatus::Exited(orphan, 0)
    });

    // Nothing left: no zombie children of ours.
    assert!(reap_exited().is_empty());
}
