//! Lab test: hull pods through containerd's CRI plugin (Debian's 1.6), next to runc. Inside
//! the nested-KVM lab a private containerd with CRI (sandbox image hull-pause, a CNI bridge,
//! runtime handlers `runc` and `hull`) runs the same pod for each handler, driven by
//! `hull-cri`: RunPodSandbox, two containers with ExecSync into each (hull: one guest kernel,
//! one boot id for the pod), an exit code and the CRI log file of a container that exits 3,
//! then stop/remove and no leftovers (processes, pod state, mounts, netns, cgroup). See
//! `tests/cri/lab/cri_vm.sh`.
//!
//! Slow (lab boot, then one VM boot under nested KVM). Alone:
//! `cargo test -p hull-cri-tests --test lab_cri -- --include-ignored --nocapture`.

#[test]
#[ignore = "lab"]
fn cri_runs_pods_in_hull_vms_like_runc() {
    let pod = hull_tests::pod_stack().expect("build the shim, hull-vmm, guest and virtiofsd");
    // This package's own binary: cargo builds it for the package's integration tests.
    let cri = std::path::Path::new(env!("CARGO_BIN_EXE_hull-cri"));
    // containerd's log and the hull pods' logs.
    let out_dir = hull_tests::lab_out_dir("cri");
    hull_tests::assert_lab_script(
        1200,
        "tests/cri/lab/cri_vm.sh",
        &[
            pod.bin_dir.as_os_str(),
            cri.as_os_str(),
            pod.image.vmlinux.as_os_str(),
            pod.image.initrd.as_os_str(),
            pod.virtiofsd.as_os_str(),
            out_dir.as_os_str(),
        ],
        &out_dir,
    );
}
