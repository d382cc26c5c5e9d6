//! What the host tests share: their prerequisite (a usable `/dev/kvm`; a software KVM is
//! enough for the tiny payloads) and bounded waiting.

use std::time::{Duration, Instant};

/// Panics unless `/dev/kvm` opens read-write: a host test without it must fail, not pass.
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("host tests need a usable /dev/kvm (a software KVM will do): {e}");
    }
}

/// Polls `f` until it yields a value; panics naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
