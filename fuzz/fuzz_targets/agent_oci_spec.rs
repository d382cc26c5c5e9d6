//! The agent's OCI conversion: CreateContainer's spec, ExecProcess's process and
//! UpdateContainer's resources as JSON from the shim, up to the plans the init helper runs
//! and the device cgroup program. Malformed or hostile input must be refused (an error the
//! engine maps to INVALID_ARGUMENT), never a panic; an accepted plan survives its encoding.
#![no_main]

use hull_agent::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the request and its flags; the rest is the JSON.
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 | 1 => {
            let _ = fuzzing::create(json, sel & 0x10 != 0, sel % 4 == 1);
        }
        2 => {
            let _ = fuzzing::exec(json);
        }
        _ => {
            let _ = fuzzing::update(json);
        }
    }
});
