//! Lab test: pods in hull VMs through a real containerd (Debian's 1.6). Inside the nested-KVM
//! lab, `ctr run --runtime io.containerd.hull.v2` starts containerd-shim-hull-v2, which boots
//! hull-vmm with a virtiofsd-served rootfs; the same container runs with runc and must look the
//! same (output, exit code, rootfs writes, a read-only bind mount); a hull pod then runs the
//! rest of the task API (exec with and without a terminal, pause/resume, metrics, an OOM kill,
//! the events); kill -9 of hull-vmm gives exit status 255 and nothing is left behind. See
//! `tests/lab/ctr_vm.sh`.
//!
//! Slow (lab boot, then a VM per `ctr run` under nested KVM). Alone:
//! `cargo test -p hull-shim --test lab_containerd -- --nocapture`.

#[test]
fn ctr_runs_containers_in_hull_vms_like_runc() {
    let root = hull_tests::repo_root();
    let pod = hull_tests::pod_stack().expect("build the shim, hull-vmm, guest and virtiofsd");
    let out_dir = root.join("target/lab-out/shim-ctr");
    let status = hull_tests::lab_script(
        1200,
        "shim/tests/lab/ctr_vm.sh",
        &[
            pod.bin_dir.as_os_str(),
            pod.image.vmlinux.as_os_str(),
            pod.image.initrd.as_os_str(),
            pod.virtiofsd.as_os_str(),
            out_dir.as_os_str(),
        ],
    )
    .expect("lab/run");
    assert!(
        status.success(),
        "lab checks failed ({status}); containerd log in {}",
        out_dir.display()
    );
}
