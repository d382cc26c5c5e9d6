#!/usr/bin/env bash
# Runs inside the lab: a minimal Kubernetes 1.20 node and control plane (issue 16, "A real
# kubelet"), from scripts/ensure-kubernetes's cache: etcd and kube-apiserver (self-signed
# serving certificate, static tokens, AlwaysAllow, no scheduler and no controller-manager, so
# pods name their node), Debian 12's containerd 1.6 with its CRI plugin and a CNI bridge as
# tests/cri/lab/cri_vm.sh sets them up, and kubelet 1.20 talking CRI v1alpha2 to it. Then what
# a kubectl user does, with the default runtime (runc): the node becomes Ready, a busybox pod
# runs, `kubectl exec` in it, `kubectl delete` removes it. Prints PASS/FAIL lines and an INFO
# line with the time of each step; exits 1 on any FAIL.
# usage: kube_vm.sh OUTDIR [BINDIR VMLINUX INITRD VIRTIOFSD]
#        (with the hull stack given, containerd also gets the runtime handler hull and the
#        cluster a RuntimeClass hull; the checks still run the runc pod only)
# The binaries: scripts/ensure-kubernetes's warm cache (fill it on the host first: the lab has
# no uplink); KUBE_ENV=FILE names a file of its output lines instead.
set -u
OUT=$1 BIN=${2:-} VMLINUX=${3:-} INITRD=${4:-} VIRTIOFSD=${5:-}
# shellcheck source-path=SCRIPTDIR source=../../../lab/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../../../lab/lib.sh" || exit 1
fresh_dir "$OUT"

declare -A kube=()
if [[ -n ${KUBE_ENV:-} ]]; then
	cp "$KUBE_ENV" "$OUT/kube.env"
elif ! "$lab_repo/scripts/ensure-kubernetes" >"$OUT/kube.env" 2>"$OUT/ensure-kubernetes.err"; then
	flunk "scripts/ensure-kubernetes (run it on the host first): $(tail -n 3 "$OUT/ensure-kubernetes.err")"
	exit 1
fi
while IFS='=' read -r k v; do kube[$k]=$v; done <"$OUT/kube.env"
for k in kubelet kube_apiserver kubectl etcd; do
	[[ -x ${kube[$k]:-} ]] || {
		flunk "ensure-kubernetes named no runnable $k ('${kube[$k]:-}')"
		exit 1
	}
done
info "kubernetes ${kube[version]} (Debian ${kube[debian_version]}, ${kube[go]}), etcd ${kube[etcd_version]}, $(containerd --version | awk '{print $3}')"

# Everything on the lab's tmpfs /tmp (overlayfs cannot sit on the overlay root).
r=/tmp/hull-kube-lab
rm -rf "$r"
mkdir -p "$r/pki" "$r/cni" "$r/logs"
A=$r/containerd.sock
NODE=$(hostname)
# The lab has loopback only. kube-apiserver needs an address to advertise (and the kubelet a
# node IP) that is not loopback: a dummy interface holds one, with the default route, which
# is where both look for "the host's address".
NODE_IP=10.99.0.1
ip link add kube0 type dummy 2>/dev/null
ip addr add "$NODE_IP/24" dev kube0 2>/dev/null
ip link set kube0 up
ip route add default dev kube0 2>/dev/null
pids=()
# shellcheck disable=SC2317 # called through the trap
finish() {
	local p
	for ((p = ${#pids[@]} - 1; p >= 0; p--)); do
		kill "${pids[p]}" 2>/dev/null && wait "${pids[p]}" 2>/dev/null
	done
	# kubelet's pods are containerd's: stop_containerd unmounts what is left.
	stop_containerd "$r/containerd"
	find /sys/fs/cgroup/kubepods -depth -type d -exec rmdir {} + 2>/dev/null
	ip link del kube0 2>/dev/null
	cp -r "$r/logs" "$OUT/" 2>/dev/null
}
trap finish EXIT
# step NAME T0: an INFO line with NAME's time since T0.
step_ms() { info "step '$1' took $(ms_since "$2") ms"; }
t_all=$(date +%s%N)

# --- etcd -----------------------------------------------------------------------------------
t0=$(date +%s%N)
"${kube[etcd]}" --name lab --data-dir "$r/etcd" \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 >"$r/logs/etcd.log" 2>&1 &
pids+=($!)
# shellcheck disable=SC2317 # called through poll
etcd_up() { [[ $(timeout 5 busybox wget -q -O - http://127.0.0.1:2379/health 2>/dev/null) == *'"health":"true"'* ]]; }
if poll 1200 etcd_up; then pass "etcd serves (health true)"; else
	flunk "etcd did not become healthy in 120 s: $(tail -n 5 "$r/logs/etcd.log")"
	exit 1
fi
step_ms "etcd up" "$t0"

# --- kube-apiserver -------------------------------------------------------------------------
# Static tokens (token,user,uid,"groups"): one for kubectl, one for the kubelet. The service
# account key signs and checks service account tokens (1.20 requires the issuer flags).
ADMIN_TOKEN=hull-lab-admin KUBELET_TOKEN=hull-lab-kubelet
cat >"$r/pki/tokens.csv" <<EOF
$ADMIN_TOKEN,admin,admin,"system:masters"
$KUBELET_TOKEN,system:node:$NODE,kubelet,"system:nodes"
EOF
openssl genrsa -out "$r/pki/sa.key" 2048 2>/dev/null
t0=$(date +%s%N)
# No controller-manager creates the default service account (and its token secret), so the
# ServiceAccount admission plugin would refuse every pod; TaintNodesByCondition would taint
# the new node not-ready, and only the node lifecycle controller lifts that taint.
"${kube[kube_apiserver]}" --etcd-servers=http://127.0.0.1:2379 \
	--advertise-address="$NODE_IP" --secure-port=6443 --insecure-port=0 \
	--cert-dir="$r/pki" --token-auth-file="$r/pki/tokens.csv" \
	--authorization-mode=AlwaysAllow --anonymous-auth=false \
	--service-account-key-file="$r/pki/sa.key" --service-account-signing-key-file="$r/pki/sa.key" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-cluster-ip-range=10.96.0.0/24 \
	--disable-admission-plugins=ServiceAccount,TaintNodesByCondition \
	--kubelet-preferred-address-types=InternalIP,Hostname \
	--allow-privileged=true >"$r/logs/kube-apiserver.log" 2>&1 &
pids+=($!)
# kubeconfig TOKEN FILE: a kubeconfig for the local apiserver with TOKEN (its certificate is
# self-signed: not verified).
kubeconfig() {
	cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: $1
contexts:
- name: lab
  context: {cluster: lab, user: u}
current-context: lab
EOF
}
kubeconfig "$ADMIN_TOKEN" "$r/admin.kubeconfig"
kubeconfig "$KUBELET_TOKEN" "$r/kubelet.kubeconfig"
kc() { timeout 120 "${kube[kubectl]}" --kubeconfig "$r/admin.kubeconfig" "$@"; }
# shellcheck disable=SC2317 # called through poll
api_ready() { [[ $(kc get --raw /readyz 2>/dev/null) == ok ]]; }
if poll 3000 api_ready; then pass "kube-apiserver ready (/readyz ok)"; else
	flunk "kube-apiserver not ready in 300 s: $(kc get --raw '/readyz?verbose' 2>&1 | grep -v ' ok$' | tail -n 5) $(tail -n 5 "$r/logs/kube-apiserver.log")"
	exit 1
fi
step_ms "kube-apiserver ready" "$t0"
check "the default namespace exists" default "$(kc get namespace default -o jsonpath='{.metadata.name}' 2>&1)"

# --- containerd 1.6 with CRI and CNI (as tests/cri/lab/cri_vm.sh) ---------------------------
cd_dir=$r/containerd
mkdir -p "$cd_dir"
containerd_config "$r/config.toml" "$cd_dir" "$A"
if [[ -n $BIN ]]; then
	write_hull_toml "$r/hull.toml" "$BIN" "$VMLINUX" "$INITRD" "$VIRTIOFSD"
	sed -e "s|/etc/hull/hull.toml|$r/hull.toml|" -e '/^version = /d' \
		"$lab_repo/deploy/containerd/hull.toml" >>"$r/config.toml"
fi
# The runc shim puts containers in kubelet's cgroup parents as plain paths (SystemdCgroup
# false): kubelet's --cgroup-driver=cgroupfs.
cat >>"$r/config.toml" <<EOF
[debug]
  level = "debug"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/hull-pause:latest"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$r/cni"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
cat >"$r/cni/10-hull-kube.conflist" <<'JSON'
{
  "cniVersion": "1.0.0",
  "name": "hull-kube-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "hullkube0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.89.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
JSON
t0=$(date +%s%N)
start_containerd "${BIN:-/usr/bin}" "$r/config.toml" "$r/logs/containerd.log"
# shellcheck disable=SC2317 # called through poll
ctr_up() { ctr -a "$A" version; }
if poll 600 ctr_up; then pass "containerd serves"; else
	flunk "containerd did not start: $(tail -n 5 "$r/logs/containerd.log")"
	exit 1
fi
IMG=docker.io/library/hull-busybox:latest
import_image "$A" k8s.io "$r/busybox.tar"
import_image "$A" k8s.io "$r/pause.tar" docker.io/library/hull-pause:latest /bin/sleep infinity
step_ms "containerd up, images imported" "$t0"

# --- kubelet --------------------------------------------------------------------------------
# Flags rather than a config file: kubelet 1.20's flag defaults keep anonymous access with
# AlwaysAllow on its own API (the apiserver reaches it for exec and logs), said explicitly.
t0=$(date +%s%N)
"${kube[kubelet]}" --kubeconfig="$r/kubelet.kubeconfig" --root-dir="$r/kubelet" \
	--cert-dir="$r/kubelet/pki" --hostname-override="$NODE" --node-ip="$NODE_IP" \
	--register-node=true --container-runtime=remote \
	--container-runtime-endpoint="unix://$A" --runtime-request-timeout=10m \
	--cgroup-driver=cgroupfs --fail-swap-on=false \
	--anonymous-auth=true --authorization-mode=AlwaysAllow \
	--pod-infra-container-image=docker.io/library/hull-pause:latest \
	--eviction-hard='memory.available<10Mi,nodefs.available<1%,imagefs.available<1%' \
	--image-gc-high-threshold=100 --v=2 >"$r/logs/kubelet.log" 2>&1 &
pids+=($!)
# shellcheck disable=SC2317 # called through poll
node_ready() {
	[[ $(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
if poll 3000 node_ready; then pass "node $NODE registered and Ready"; else
	flunk "node $NODE not Ready in 300 s: $(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}' 2>&1); kubelet: $(grep -E '^[EF][0-9]{4}' "$r/logs/kubelet.log" | tail -n 5)"
	exit 1
fi
step_ms "kubelet up, node Ready" "$t0"
info "node: $(kc get node "$NODE" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion} {.status.nodeInfo.kubeletVersion} {.status.addresses}' 2>&1)"
if [[ -n $BIN ]]; then
	kc apply -f - >/dev/null 2>&1 <<'EOF'
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: hull}
handler: hull
EOF
	check "RuntimeClass hull exists" hull "$(kc get runtimeclass hull -o jsonpath='{.handler}' 2>&1)"
fi

# --- a pod with runc: Running, exec, delete -------------------------------------------------
# pod_yaml NAME [RUNTIMECLASS]: a busybox pod bound to this node (there is no scheduler).
pod_yaml() {
	cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  nodeName: $NODE
  ${2:+runtimeClassName: $2}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 10
  containers:
  - name: c
    image: $IMG
    imagePullPolicy: Never
    command: [sleep, "3600"]
EOF
}
# pod_cycle NAME [RUNTIMECLASS]: create, Running, exec, delete; a FAIL ends the cycle.
pod_cycle() {
	local name=$1 rc=${2:-} t0 out
	t0=$(date +%s%N)
	if ! pod_yaml "$name" "$rc" | kc create -f - >"$r/err" 2>&1; then
		flunk "$name: kubectl create: $(<"$r/err")"
		return 1
	fi
	if kc wait --for=condition=Ready "pod/$name" --timeout=110s >"$r/err" 2>&1; then
		check "$name: pod phase" Running "$(kc get pod "$name" -o jsonpath='{.status.phase}' 2>&1)"
	else
		flunk "$name: not Ready: $(kc get pod "$name" -o jsonpath='{.status}' 2>&1 | cut -c1-800)"
		kc describe pod "$name" >"$OUT/describe-$name.txt" 2>&1
		return 1
	fi
	step_ms "$name: create to Running" "$t0"
	info "$name: pod IP $(kc get pod "$name" -o jsonpath='{.status.podIP}' 2>&1) (CNI bridge 10.89.0.0/16)"
	t0=$(date +%s%N)
	out=$(kc exec "$name" -- echo hi 2>&1)
	check "$name: kubectl exec echo hi" hi "$out"
	step_ms "$name: kubectl exec" "$t0"
	t0=$(date +%s%N)
	if kc delete pod "$name" --wait=true --timeout=110s >"$r/err" 2>&1; then
		check "$name: gone from the API after delete" "" "$(kc get pod "$name" -o name 2>/dev/null)"
	else
		flunk "$name: kubectl delete: $(<"$r/err")"
	fi
	step_ms "$name: kubectl delete" "$t0"
}
pod_cycle runc-pod

# After the delete, kubelet stops the pod's containers and sandbox (and removes them later).
# shellcheck disable=SC2317 # called through poll
no_tasks() { [[ -z $(ctr -a "$A" -n k8s.io tasks ls -q 2>/dev/null) ]]; }
if poll 600 no_tasks; then pass "no containerd task left after the delete"; else
	flunk "containerd tasks left: $(ctr -a "$A" -n k8s.io tasks ls 2>&1 | tr '\n' ' ')"
fi
info "whole run took $(ms_since "$t_all") ms"
if ((fail)); then
	info "kubelet errors (last 15; full log in $OUT/logs):"
	grep -E '^[EF][0-9]{4}' "$r/logs/kubelet.log" | tail -n 15 | cut -c1-400
fi
exit $fail
