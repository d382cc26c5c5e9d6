//! Lab test: a real Kubernetes 1.20 node in the nested-KVM lab (issue 16, "A real kubelet").
//! etcd, kube-apiserver (no scheduler, no controller-manager: pods name their node), Debian
//! 12's containerd 1.6 with CRI and a CNI bridge, and kubelet 1.20 over CRI v1alpha2; then what
//! a kubectl user does with the default runtime (runc): node Ready, a pod Running, `kubectl
//! exec`, `kubectl delete` with nothing left. See `tests/kube/lab/kube_vm.sh`.
//!
//! The binaries come from `scripts/ensure-kubernetes`, run here on the host first: a cold cache
//! builds them from Debian's source (about 10 minutes on 2 cores), a warm one costs nothing.
//! Alone: `cargo test -p hull-kube-tests --test lab_kube -- --ignored --exact NAME --nocapture`.

#[test]
#[ignore = "lab"]
fn kubelet_runs_a_runc_pod_through_containerd() {
    let kube = hull_kube_tests::ensure_kubernetes(&hull_tests::repo_root())
        .expect("scripts/ensure-kubernetes (kubelet, kube-apiserver, kubectl, etcd)");
    println!(
        "kubernetes {} (Debian {}): {}",
        kube.version,
        kube.debian_version,
        kube.kubelet.display()
    );
    let out_dir = hull_tests::lab_out_dir("kube");
    hull_tests::assert_lab_script(
        1200,
        "tests/kube/lab/kube_vm.sh",
        &[out_dir.as_os_str()],
        &out_dir,
    );
}
