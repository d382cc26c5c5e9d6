//! In-process: after `Vmm::shutdown` no vCPU thread is left and the fd count is back where it
//! started. Its own test binary so no other VM runs in the process meanwhile.

mod support;

use std::time::Duration;

use hull_contract::vsock::GUEST_CID;
use hull_vmm::config::{ConsoleConfig, VmConfig, VsockConfig};
use hull_vmm::hostcheck::HostKvm;
use support::{require_kvm, wait_until};

fn vcpu_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("hull_vcpu"))
        .count()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn shutdown_leaves_no_threads_or_fds() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("p.bin");
    // sti; hlt; jmp: an idle guest, which the halt watch must leave alone.
    std::fs::write(&payload, [0xfb, 0xf4, 0xeb, 0xfd]).unwrap();
    let uds = dir.path().join("v.sock");
    let fds_before = fds();
    for round in 0..3 {
        let cfg = VmConfig {
            raw_payload: Some(payload.clone()),
            vcpus: 2,
            console: ConsoleConfig::Off,
            vsock: Some(VsockConfig {
                uds: uds.clone(),
                cid: GUEST_CID,
            }),
            ..Default::default()
        };
        let mut vmm = hull_vmm::builder::build_and_boot(&cfg, HostKvm::Hardware).unwrap();
        assert_eq!(vcpu_threads(), 2, "round {round}");
        vmm.pause().unwrap();
        vmm.resume().unwrap();
        vmm.request_stop();
        let reason = wait_until("stop", Duration::from_secs(5), || vmm.run_once(100));
        assert_eq!(reason, hull_vmm::exit::ExitReason::Stopped);
        vmm.shutdown();
        assert_eq!(vcpu_threads(), 0, "round {round}");
        // The next round's muxer replaces the socket file this one left.
        assert!(uds.exists());
    }
    assert_eq!(fds(), fds_before, "fd leak");
}
