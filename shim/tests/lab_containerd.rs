//! Lab test: pods in hull VMs through a real containerd (Debian's 1.6). Inside the nested-KVM
//! lab, `ctr run --runtime io.containerd.hull.v2` starts containerd-shim-hull-v2, which boots
//! hull-vmm with a virtiofsd-served rootfs; the same container runs with runc and must look the
//! same (output, exit code, rootfs writes, a read-only bind mount, stdin that ends); a hull pod
//! then runs the rest of the task API (exec with and without a terminal, exec stdin,
//! pause/resume, metrics, an OOM kill, the events, an rslave bind that sees a later host
//! mount); hull-vmm runs jailed (non-root uid, no capabilities, no_new_privs, seccomp, its own
//! namespaces and root) and virtiofsd with fewer capabilities; an rshared bind is refused;
//! kill -9 of hull-vmm gives exit status 255, and kill -9 of hull-vmm or the shim, during
//! boot or after, leaves nothing behind. See `shim/tests/lab/ctr_vm.sh`.
//!
//! Slow (lab boot, then a VM per `ctr run` under nested KVM), so ignored unless asked for
//! (`scripts/run-tests` runs the lab tier). Alone:
//! `cargo test -p hull-shim --test lab_containerd -- --include-ignored --nocapture`.

#[test]
#[ignore = "lab"]
fn ctr_runs_containers_in_hull_vms_like_runc() {
    hull_tests::assert_pod_lab_script(1800, "shim/tests/lab/ctr_vm.sh", "shim-ctr");
}
