//! The shim's handling of what the agent answers: the bytes of a StatsContainer reply become
//! the cgroup v2 metrics containerd decodes, the bytes of an error status become the status
//! containerd gets. Whatever the guest's agent sends must not panic the shim (one per pod,
//! `panic = "abort"`), and codes and messages must pass through as DESIGN §2 shim/ says.
#![no_main]

use hull_shim::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, reply)) = data.split_first() else {
        return;
    };
    if sel % 2 == 0 {
        let _ = fuzzing::stats_reply(reply);
    } else {
        let _ = fuzzing::error_reply(reply);
    }
});
