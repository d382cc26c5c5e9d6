//! The shim's handling of what the agent answers: the bytes of a StatsContainer reply become
//! the cgroup v2 metrics containerd decodes; the bytes of an error status become the status
//! containerd gets (clipped) and a bounded log line; a WaitProcess reply becomes the exit
//! status of `/tasks/exit` (255 for anything no process can have); a GetOomEvent reply's
//! container id becomes a bounded log line and, for the pod's own containers only, a
//! `/tasks/oom` event; a ListPids reply a pid list or, past a VM's pids, an error; and a
//! stream of OOM events at times the fuzzer picks is paced and logged within the limits.
//! Whatever the guest's agent sends must not panic the shim (one per pod, `panic = "abort"`), and codes,
//! messages and statuses must pass through as DESIGN §2 shim/ and `bounds.rs` say.
#![no_main]

use hull_shim::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, reply)) = data.split_first() else {
        return;
    };
    // 0 and 1 keep the meaning the first seeds were written for (stats, error status).
    match sel % 8 {
        0 | 2 => {
            let _ = fuzzing::stats_reply(reply);
        }
        1 | 3 => {
            let _ = fuzzing::error_reply(reply);
            let _ = fuzzing::error_reply_clipped(reply);
        }
        4 => {
            let _ = fuzzing::wait_reply(reply);
        }
        5 => {
            let _ = fuzzing::oom_reply(reply);
        }
        7 => {
            let _ = fuzzing::pids_reply(reply);
        }
        _ => fuzzing::oom_rates(reply),
    }
});
