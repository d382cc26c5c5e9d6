#!/usr/bin/env bash
# Runs inside the lab (see tests/cri/tests/lab_cri.rs): a private containerd from Debian with
# its CRI plugin (sandbox image hull-pause, a CNI bridge network, runtime handlers runc and
# hull) runs the same pod through the CRI API, with hull-cri as the client, first with runc,
# then with hull (containerd-shim-hull-v2 → hull-vmm with virtiofsd → the hull guest):
# RunPodSandbox, two long-running containers, ExecSync in each (kernel, boot id: one VM per
# pod, an exit code), the pod's network (dual stack: CNI addresses and MAC in the container,
# TCP both ways between the bridge host and the pod over IPv4 and IPv6; hull: hostNetwork,
# hostIPC and hostPID pods are refused, runc runs the latter two), the pod's PID
# (shareProcessNamespace), UTS and IPC namespaces and /dev/shm shared by both, an emptyDir with
# medium Memory (hull: a guest tmpfs shared by the pod's containers), ContainerStats,
# UpdateContainerResources, an OOM-killed container (reason OOMKilled), a container whose
# output lands in its CRI log file and whose exit code CRI reports, then stop and remove
# everything and look for leftovers (processes, pod state, mounts, the pod's network
# namespace, its cgroup). While both pods run, CRI PortForward to servers in each pod, the
# guest's interface counters in the hull shim's Task.Stats, TCP between the pods both ways,
# and between the hull pod and a second, small hull pod, whose annotation limits its NIC (the
# limit in hull-vmm's API, a throttled transfer that arrives whole, the limit lifted at runtime),
# found by `hullctl pods` and `inspect` under its Kubernetes name; the node's Prometheus endpoint
# (`hullctl monitor`) passes Debian's promtool and a real Prometheus scrapes it. Then a pod with sysctls (a safe, an
# unsafe and containerd 2.x's two net.* defaults) per runtime: a container reads the same values.
# Prints one PASS/FAIL line per check and INFO lines with timings; exits 1 on any FAIL.
# usage: cri_vm.sh BINDIR HULL_CRI VMLINUX INITRD VIRTIOFSD OUTDIR [CONTAINERD_BINDIR [full|smoke]]
#        (BINDIR holds the shim, hull-vmm and hullctl; HULL_CRI is the CRI client binary;
#        CONTAINERD_BINDIR another containerd than the system's, see below; `smoke` leaves out
#        what does not depend on containerd's version: port-forward, Task.Stats, the second hull
#        pod and the create/remove cycles)
set -u
BIN=$1 CRI=$2 VMLINUX=$3 INITRD=$4 VIRTIOFSD=$5 OUT=$6 SUITE=${8:-full}
HULL_CRI_CONTAINERD=${7:-${HULL_CRI_CONTAINERD:-}}
# shellcheck source-path=SCRIPTDIR source=../../../lab/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../../../lab/lib.sh" || exit 1
fresh_dir "$OUT"

# containerd root and state on the lab's tmpfs /tmp: overlayfs cannot sit on the overlay root.
r=/tmp/hull-cri-lab
rm -rf "$r"
mkdir -p "$r/cni" "$r/logs"
A=$r/containerd.sock
CG=hull-cri-test # cgroup parent of the pods (kubelet's would be kubepods/...)
write_hull_toml "$r/hull.toml" "$BIN" "$VMLINUX" "$INITRD" "$VIRTIOFSD"
# Pods may set their own I/O limits (the second hull pod does: pod_limits).
printf '[annotations]\nallowed = ["io.hull.limits."]\n' >>"$r/hull.toml"
# Each way a pod start fails gets one readable reason, the first line of RunPodSandbox's error
# (what `kubectl describe` shows): a runtime handler each, with a hull.toml broken that way.
# hull-nokernel: its kernel is not there; hull-panic: its initrd is junk, so the guest kernel
# finds no root and panics; hull-slow: its boot timeout is 1 s, less than a lab boot.
broken_runtimes="hull-nokernel hull-panic hull-slow"
head -c 65536 /dev/urandom >"$r/junk.initrd"
sed "s|^kernel = .*|kernel = \"$r/no-such-vmlinux\"|" "$r/hull.toml" >"$r/hull-nokernel.toml"
sed "s|^initrd = .*|initrd = \"$r/junk.initrd\"|" "$r/hull.toml" >"$r/hull-panic.toml"
sed "s|^boot_timeout_secs = .*|boot_timeout_secs = 1|" "$r/hull.toml" >"$r/hull-slow.toml"
# hull-debug: a node that turned `hullctl debug` on (debug_shell below).
# It also has slots for disks attached at run time (grow_pod's `hullctl disk attach`).
sed "s|^boot_timeout_secs = .*|&\ndebug_shell = true\ndisk_slots = 2|" "$r/hull.toml" >"$r/hull-debug.toml"
grep -q '^debug_shell = true' "$r/hull-debug.toml" || flunk "hull-debug.toml: no debug_shell line"
# HULL_CRI_CONTAINERD: the bin directory of another containerd (scripts/ensure-containerd: Debian
# trixie's 1.7 or sid's 2.x) to run instead of Debian 12's 1.6, with its own ctr and runc shim.
ctrd_bin=${HULL_CRI_CONTAINERD:-}
if [[ -n $ctrd_bin ]]; then
	PATH=$ctrd_bin:$PATH
	export PATH
fi
ctrd_version=$(containerd --version 2>&1 | awk '{print $3}')
info "containerd $ctrd_version ($(command -v containerd))"
[[ -z $ctrd_bin ]] || check "the containerd under test is $ctrd_bin's" "$ctrd_bin/containerd" "$(command -v containerd)"
# The node's own configuration first, in the version its containerd reads natively: 2.x:
# version 3 (CRI's settings in the plugins io.containerd.cri.v1.images and .runtime); 1.6 and
# 1.7: version 2. Then the installer's node-side script adds the hull runtime to it
# (deploy/kubernetes/installer/hull-node, which the DaemonSet runs; its config step is hullctl
# node containerd-add): 2.x imports a drop-in, 1.6 and 1.7 get the runtime's tables appended
# (their `imports` would replace the node's whole CRI section). At the end its uninstall must
# give the node's file back byte for byte.
if [[ $ctrd_version == v2.* || $ctrd_version == 2.* ]]; then
	v3=1 cri_images="'io.containerd.cri.v1.images'" cri_runtime="'io.containerd.cri.v1.runtime'"
	config_version=3 containerd_config "$r/config.toml" "$r" "$A"
	want_mode=import
else
	v3=0 cri_images='"io.containerd.grpc.v1.cri"' cri_runtime='"io.containerd.grpc.v1.cri"'
	containerd_config "$r/config.toml" "$r" "$A"
	want_mode=edit
fi
{
	echo '[debug]'
	echo '  level = "debug"'
	if ((v3)); then
		echo "[plugins.$cri_images.pinned_images]"
		echo '  sandbox = "docker.io/library/hull-pause:latest"'
	else
		echo "[plugins.$cri_images]"
		echo '  sandbox_image = "docker.io/library/hull-pause:latest"'
	fi
	echo "[plugins.$cri_runtime.cni]"
	# 2.1 reads a list (bin_dir is deprecated there).
	((v3)) && echo '  bin_dirs = ["/usr/lib/cni"]' || echo '  bin_dir = "/usr/lib/cni"'
	echo "  conf_dir = \"$r/cni\""
	echo "[plugins.$cri_runtime.containerd]"
	echo '  default_runtime_name = "runc"'
	echo "  [plugins.$cri_runtime.containerd.runtimes.runc]"
	echo '    runtime_type = "io.containerd.runc.v2"'
	# Broken hull installations, one per way a pod start fails (failed_starts below), and
	# one with the debug shell on.
	for broken in $broken_runtimes hull-debug; do
		echo "  [plugins.$cri_runtime.containerd.runtimes.$broken]"
		echo '    runtime_type = "io.containerd.hull.v2"'
		# As deploy/containerd/hull.toml has it: hull-debug's pod sets io.hull.limits.*.
		echo '    pod_annotations = ["io.hull.*"]'
		echo '    privileged_without_host_devices = true'
		echo "    [plugins.$cri_runtime.containerd.runtimes.$broken.options]"
		echo "      ConfigPath = \"$r/$broken.toml\""
	done
} >>"$r/config.toml"
cp "$r/config.toml" "$r/config.node"
# hull_node install|uninstall: the script straight on this node (HOST=/), with a payload of
# this run's files (links, not copies; containerd still runs BIN's shim, first on its PATH),
# no node to label (NODE_NAME unset), and a restart hook that notes the request (containerd
# starts later). Prints the script's containerd line ("changed=… mode=…").
payload=$r/payload
mkdir -p "$payload/bin" "$payload/share" "$payload/libexec"
ln -s "$BIN/containerd-shim-hull-v2" "$BIN/hull-vmm" "$BIN/hullctl" "$payload/bin/"
ln -s "$VMLINUX" "$payload/share/vmlinux"
ln -s "$INITRD" "$payload/share/initrd.cpio.gz"
ln -s "$VIRTIOFSD" "$payload/libexec/virtiofsd"
cp "$r/hull.toml" "$payload/hull.toml"
echo cri-lab >"$payload/release"
: >"$r/restarts"
hull_node() {
	echo "--- hull-node $1" >>"$r/hull-node.log"
	PATH=$BIN:$PATH HOST=/ HULL_PREFIX=$r/opt/hull HULL_PAYLOAD=$payload HULL_CONFIG=$r/hull.toml \
		CONTAINERD_CONFIG=$r/config.toml HULL_RESTART_CONTAINERD="echo restart >>$r/restarts" \
		sh "$lab_repo/deploy/kubernetes/installer/hull-node" "$1" >>"$r/hull-node.log" 2>&1 ||
		echo "hull-node $1 failed: $(tail -n 3 "$r/hull-node.log" | paste -sd ' ')"
	tail -n 4 "$r/hull-node.log" | grep -o 'changed=[a-z]* mode=[a-z]*' | tail -n 1
}
check "installer: hull-node install on containerd $ctrd_version's node config (other runtimes in it)" \
	"changed=true mode=$want_mode" "$(hull_node install)"
check "installer: it requested one containerd restart" 1 "$(wc -l <"$r/restarts")"
grep -q "ConfigPath = .$r/hull.toml" "$r/config.toml" /etc/containerd/conf.d/hull.toml 2>/dev/null ||
	flunk "the hull runtime in containerd's configuration names no ConfigPath"
check "installer: hull-node install again (already installed) changes nothing" \
	"changed=false mode=$want_mode" "$(hull_node install)"
check "installer: and restarts nothing" 1 "$(wc -l <"$r/restarts")"
check "installer: the release is in place, the shim linked on the node's PATH" \
	"$r/opt/hull/current/bin/containerd-shim-hull-v2" "$(readlink /usr/local/bin/containerd-shim-hull-v2)"
# The pod network: a bridge with host-local addresses (Debian's containernetworking-plugins).
# containerd's CRI adds the loopback network itself (go-cni WithLoNetwork, /usr/lib/cni/loopback).
# Dual stack: IPv4 first (the pod's primary IP), then IPv6. The lab has no uplink: traffic stays
# between the bridge (10.88.0.1 and fd88::1, the lab host) and pods.
cat >"$r/cni/10-hull-cri.conflist" <<'JSON'
{
  "cniVersion": "1.0.0",
  "name": "hull-cri-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "hullcri0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }], [{ "subnet": "fd88::/64" }]],
        "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]
      }
    }
  ]
}
JSON
# Pods off the lab's CPU 0, where every crash of the lab's kernel hit (lab/lib.sh): containerd
# pinned, and the pods' cgroup parent a cpuset without CPU 0 (the shim's move of hull-vmm into
# its pod cgroup resets a taskset).
LAB_PODS_OFF_CPU0=1 start_containerd "$BIN" "$r/config.toml" "$OUT/containerd.log"
# The installer's host checks (what it asks before labelling a node): the lab's node passes.
if node_check=$("$BIN/hullctl" node check 2>&1); then
	pass "installer: hullctl node check: $(paste -sd ';' <<<"$node_check")"
else
	flunk "installer: hullctl node check: $node_check"
fi
cgroup_off_cpu0 "$CG" || flunk "a cpuset for $CG: $(off_cpu0_cpus)"
# shellcheck disable=SC2317 # called through the trap
finish() {
	[[ -n $hostweb ]] && kill "$hostweb" 2>/dev/null
	stop_containerd "$r"
	find "/sys/fs/cgroup/$CG" -depth -type d -exec rmdir {} + 2>/dev/null
}
trap finish EXIT
# A server on the lab host for pods to reach (busybox httpd on both families' wildcard; its
# bridge addresses exist once the first pod is up).
mkdir -p "$r/www"
echo from-host >"$r/www/f"
hostweb=
start_hostweb() {
	[[ -n $hostweb ]] && kill -0 "$hostweb" 2>/dev/null && return 0
	busybox httpd -f -p 8081 -h "$r/www" </dev/null >/dev/null 2>&1 &
	hostweb=$!
	sleep 0.3
}
# http_get HOST PORT PATH: the body of a plain HTTP GET, with bash's /dev/tcp only.
http_get() {
	local out
	exec 9<>"/dev/tcp/$1/$2" || return 1
	printf 'GET %s HTTP/1.0\r\n\r\n' "$3" >&9
	out=$(timeout 10 cat <&9)
	exec 9<&-
	tail -n 1 <<<"$out"
}
cri() { timeout 330 "$CRI" --sock "$A" "$@"; }
poll 300 cri version
info "CRI: $(cri version 2>&1)"
# shellcheck disable=SC2317 # called through poll
net_ready() { [[ $(cri status -f NetworkReady 2>/dev/null) == true ]]; }
poll 300 net_ready
check "CRI network ready (CNI config loaded)" true "$(cri status -f NetworkReady 2>&1)"

IMG=docker.io/library/hull-busybox:latest
import_image "$A" k8s.io "$r/busybox.tar"
import_image "$A" k8s.io "$r/pause.tar" docker.io/library/hull-pause:latest /bin/sleep infinity

host_kernel=$(uname -r)
host_boot=$(cat /proc/sys/kernel/random/boot_id)
info "lab host: kernel $host_kernel, boot id $host_boot"

# Containers: two that keep running, one that writes to both streams and exits 3, and one
# that the OOM killer ends (a 64 MiB buffer under a 32 MiB limit).
ctrjson() { # NAME RESOURCES_JSON CMD...
	local name=$1 res=$2 args
	shift 2
	args=$(printf '"%s",' "$@")
	printf '{"name": "%s", "image": "%s", "command": [%s], "log_path": "%s.log", "resources": %s}\n' \
		"$name" "$IMG" "${args%,}" "$name" "$res" >"$r/$name.json"
}
# c1 and c2 share an emptyDir with medium Memory: kubelet makes it a tmpfs at this path.
VOL=$r/kubelet/pods/uid-cri/volumes/kubernetes.io~empty-dir/cache
mkdir -p "$VOL"
ctrjson c1 '{}' sleep 1000
ctrjson c2 '{}' sleep 1000
for n in c1 c2; do
	sed -i "s|}\$|, \"mounts\": [{\"container_path\": \"/cache\", \"host_path\": \"$VOL\"}]}|" "$r/$n.json"
done
ctrjson c3 '{}' sh -c 'echo to-stdout; echo to-stderr >&2; exit 3'
ctrjson c4 "{\"memory_limit_bytes\": $((32 << 20))}" dd if=/dev/zero of=/dev/null bs=64M count=1
# UpdateContainerResources of c1 to this.
echo "{\"memory_limit_bytes\": $((48 << 20)), \"cpu_period\": 100000, \"cpu_quota\": 50000}" >"$r/update.json"

# Runs CMD in container ID of runtime RT; its stdout and stderr go to ours. hull: CRI ExecSync.
# runc: in the lab, runc's exec'd processes join the container's mount namespace but not its
# root: the lab runs in a chroot on the initramfs, where runc cannot pivot_root, so the
# container's root is only its init's chroot. So a check of what the container sees (its
# mounts, files, cgroup files) enters the init's namespaces and root with nsenter instead.
in_ctr() { # RT ID CMD...
	local rt=$1 id=$2
	shift 2
	if [[ $rt == runc ]]; then
		nsenter -t "$(cri inspect "$id" -f pid)" -a -r -w "$@"
	else
		cri exec-sync "$id" -- "$@"
	fi
}

# Per pod (keyed by runtime handler, or hull2): its id, netns, IPv4 and IPv6, container ids (for
# teardown) and c1 (which serves http://IP:8080/f with "from-KEY-pod").
declare -A pods=() podrt=() netns=() timing=() podip=() podip6=() ctrs=() c1=()
# Runs the pod scenario with runtime handler $1; returns early (after a FAIL) when a step
# leaves nothing to check further. What it made is recorded in pods/ctrs for teardown.
scenario() {
	local rt=$1 logdir=$r/logs/$1 podjson=$r/pod-$1.json pod id n t0 rc out
	local -A cid=() kern=() boot=()
	mkdir -p "$logdir"
	# shareProcessNamespace: the pod's containers share the sandbox's PID namespace.
	printf '{"name": "cri-%s", "uid": "uid-cri-%s", "namespace": "default", "hostname": "cri-%s", "log_directory": "%s", "cgroup_parent": "/%s/pod-%s", "namespaces": {"pid": "pod"}}\n' \
		"$rt" "$rt" "$rt" "$logdir" "$CG" "$rt" >"$podjson"
	# A fresh emptyDir for this pod, as kubelet mounts it for medium Memory.
	umount "$VOL" 2>/dev/null
	mount -t tmpfs -o size=16m,mode=777 tmpfs "$VOL" || flunk "$rt: mount the emptyDir tmpfs"
	t0=$(date +%s%N)
	if ! pod=$(cri runp --runtime "$rt" "$podjson" 2>"$r/err"); then
		flunk "$rt: RunPodSandbox: $(<"$r/err")"
		return 1
	fi
	timing[$rt.runp]=$(ms_since "$t0")
	pods[$rt]=$pod podrt[$rt]=$rt
	info "$rt: RunPodSandbox took ${timing[$rt.runp]} ms (pod ${pod:0:12})"
	check "$rt: pod state" SANDBOX_READY "$(cri inspectp "$pod" -f state 2>&1)"
	netns[$rt]=$(cri inspectp "$pod" -f netns 2>/dev/null)
	info "$rt: pod IP $(cri inspectp "$pod" -f ip 2>&1), netns ${netns[$rt]}"

	for n in c1 c2 c3 c4; do
		if ! id=$(cri create "$pod" "$r/$n.json" "$podjson" 2>"$r/err"); then
			flunk "$rt: CreateContainer $n: $(<"$r/err")"
			return 1
		fi
		ctrs[$rt]+=" $id"
		cid[$n]=$id
		[[ $n == c1 ]] && c1[$rt]=$id
		t0=$(date +%s%N)
		if ! cri start "$id" 2>"$r/err"; then
			flunk "$rt: StartContainer $n: $(<"$r/err")"
			return 1
		fi
		timing[$rt.$n]=$(ms_since "$t0")
		info "$rt: StartContainer $n took ${timing[$rt.$n]} ms"
	done

	for n in c1 c2; do
		check "$rt: $n state" CONTAINER_RUNNING "$(cri inspect "${cid[$n]}" -f state 2>&1)"
		kern[$n]=$(cri exec-sync "${cid[$n]}" -- uname -r 2>"$r/err") ||
			flunk "$rt: $n: exec-sync uname -r: $(<"$r/err")"
		boot[$n]=$(cri exec-sync "${cid[$n]}" -- cat /proc/sys/kernel/random/boot_id 2>"$r/err") ||
			flunk "$rt: $n: exec-sync cat boot_id: $(<"$r/err")"
		out=$(cri exec-sync "${cid[$n]}" -- sh -c 'echo x; exit 7' 2>"$r/err") && rc=0 || rc=$?
		check "$rt: $n: exec-sync output and exit code" "x 7" "$out $rc"
	done
	if [[ $rt == hull ]]; then
		if [[ ${kern[c1]} == *-hull && ${kern[c2]} == "${kern[c1]}" ]]; then
			pass "hull: both containers run on the guest kernel ${kern[c1]} (lab host: $host_kernel)"
		else
			flunk "hull: guest kernels: c1 '${kern[c1]}', c2 '${kern[c2]}'"
		fi
		if [[ -n ${boot[c1]} && ${boot[c1]} == "${boot[c2]}" && ${boot[c1]} != "$host_boot" ]]; then
			pass "hull: one VM for the pod: both containers see boot id ${boot[c1]}, not the host's"
		else
			flunk "hull: boot ids: c1 '${boot[c1]}', c2 '${boot[c2]}', host '$host_boot'"
		fi
		local vmms
		vmms=$(pgrep -f "^$BIN/hull-vmm " | tr '\n' ' ')
		check "hull: exactly one hull-vmm for the pod" 1 "$(wc -w <<<"$vmms")"
		# The task pid of every container of a hull pod is the VMM's (DESIGN §2, Kata's way).
		check "hull: the sandbox's pid is the hull-vmm pid" "${vmms% }" "$(cri inspectp "$pod" -f pid 2>&1)"
	else
		check "runc: c1 kernel is the lab host's" "$host_kernel" "${kern[c1]}"
		check "runc: c2 kernel is the lab host's" "$host_kernel" "${kern[c2]}"
		check "runc: c1 boot id is the lab host's" "$host_boot" "${boot[c1]}"
		check "runc: c2 boot id is the lab host's" "$host_boot" "${boot[c2]}"
	fi

	# The pod's network: c1 has the pod's CNI address on eth0 with the MAC of the netns' eth0
	# (hull: the guest NIC, wired to the veth by tc); the bridge host reaches a server in c1,
	# and c1 reaches one on the bridge host.
	local ip ip6 mac seen body
	ip=$(cri inspectp "$pod" -f ip 2>&1)
	podip[$rt]=$ip
	ip6=$(cri inspectp "$pod" -f ips 2>&1 | tr ' ' '\n' | grep -m1 ':')
	podip6[$rt]=$ip6
	mac=$(nsenter --net="${netns[$rt]}" ip -o link show eth0 2>&1 | grep -o 'link/ether [0-9a-f:]*')
	seen=$(in_ctr "$rt" "${cid[c1]}" ip -o -4 addr show eth0 2>&1)
	if [[ $ip == 10.88.* && $seen == *" inet $ip/16 "* ]]; then
		pass "$rt: c1's eth0 has the pod's CNI address $ip"
	else
		flunk "$rt: pod IP '$ip'; c1's eth0: $seen"
	fi
	seen=$(in_ctr "$rt" "${cid[c1]}" ip -o link show eth0 2>&1)
	if [[ -n $mac && $seen == *"$mac "* ]]; then
		pass "$rt: c1's eth0 has the netns' eth0 MAC (${mac#link/ether })"
	else
		flunk "$rt: netns eth0 '$mac'; c1's eth0: $seen"
	fi
	in_ctr "$rt" "${cid[c1]}" sh -c "mkdir -p /tmp/www && echo from-$rt-pod >/tmp/www/f && httpd -p 8080 -h /tmp/www </dev/null >/dev/null 2>&1" 2>"$r/err" ||
		flunk "$rt: c1: start httpd: $(<"$r/err")"
	for ((i = 0; i < 50; i++)); do
		body=$(http_get "$ip" 8080 /f 2>/dev/null) && [[ $body == "from-$rt-pod" ]] && break
		sleep 0.2
	done
	check "$rt: the bridge host reaches a TCP server in the pod ($ip:8080)" "from-$rt-pod" "$body"
	start_hostweb
	check "$rt: the pod reaches a TCP server on the bridge host (10.88.0.1:8081)" from-host \
		"$(in_ctr "$rt" "${cid[c1]}" wget -q -O - http://10.88.0.1:8081/f 2>&1)"
	# IPv6, the same way. The guest's address is usable once its duplicate address detection
	# is over (about a second), hence the retries.
	seen=$(in_ctr "$rt" "${cid[c1]}" ip -o -6 addr show eth0 scope global 2>&1)
	if [[ $ip6 == fd88:* && $seen == *" inet6 $ip6/64 "* ]]; then
		pass "$rt: c1's eth0 has the pod's CNI IPv6 address $ip6"
	else
		flunk "$rt: pod IPv6 '$ip6'; c1's eth0: $seen"
	fi
	body=''
	for ((i = 0; i < 50; i++)); do
		body=$(http_get "$ip6" 8080 /f 2>/dev/null) && [[ $body == "from-$rt-pod" ]] && break
		sleep 0.2
	done
	check "$rt: the bridge host reaches the pod's server over IPv6 ([$ip6]:8080)" "from-$rt-pod" "$body"
	body=''
	for ((i = 0; i < 25; i++)); do
		body=$(in_ctr "$rt" "${cid[c1]}" timeout 5 wget -q -O - 'http://[fd88::1]:8081/f' 2>&1) &&
			[[ $body == from-host ]] && break
		sleep 0.2
	done
	check "$rt: the pod reaches the bridge host's server over IPv6 ([fd88::1]:8081)" from-host "$body"

	# The pod's PID namespace (shareProcessNamespace): c1 sees both containers' `sleep 1000`
	# and the sandbox's `sleep infinity`, and nothing of the node (hull: of the guest agent).
	local procs
	procs=$(in_ctr "$rt" "${cid[c1]}" ps -o args 2>&1)
	if [[ $(grep -c '^sleep 1000$' <<<"$procs") == 2 && $(grep -cE '^(/bin/)?sleep infinity$' <<<"$procs") == 1 ]] &&
		! grep -qE 'hull-agent|containerd' <<<"$procs"; then
		pass "$rt: c1 sees the pod's processes and no others (shared PID namespace)"
	else
		flunk "$rt: processes c1 sees: $(tr '\n' '|' <<<"$procs")"
	fi
	check "$rt: c1's hostname is the pod's (the sandbox's UTS namespace)" "cri-$rt" \
		"$(cri exec-sync "${cid[c1]}" -- hostname 2>&1)"

	# The pod's IPC namespace: both containers are in the same one, and what c1 puts in the
	# pod's /dev/shm, c2 reads.
	local ipc1 ipc2
	ipc1=$(cri exec-sync "${cid[c1]}" -- readlink /proc/self/ns/ipc 2>&1)
	ipc2=$(cri exec-sync "${cid[c2]}" -- readlink /proc/self/ns/ipc 2>&1)
	if [[ $ipc1 == ipc:* && $ipc1 == "$ipc2" ]]; then
		pass "$rt: c1 and c2 share the pod's IPC namespace ($ipc1)"
	else
		flunk "$rt: IPC namespaces: c1 '$ipc1', c2 '$ipc2'"
	fi
	in_ctr "$rt" "${cid[c1]}" sh -c "echo shm-$rt >/dev/shm/hull-ipc" 2>"$r/err" ||
		flunk "$rt: c1: write /dev/shm: $(<"$r/err")"
	check "$rt: c2 reads what c1 wrote to the pod's /dev/shm" "shm-$rt" \
		"$(in_ctr "$rt" "${cid[c2]}" cat /dev/shm/hull-ipc 2>&1)"

	# Memory-backed volumes: the pod's /dev/shm and the emptyDir are tmpfs mounts in the
	# containers (hull: in the guest) of the host tmpfs's size, shared by c1 and c2. With hull
	# the files stay in guest RAM: the host's tmpfs stays empty.
	# shellcheck disable=SC2016 # awk's fields
	check "$rt: /dev/shm and the emptyDir are tmpfs in c1" "tmpfs tmpfs" \
		"$(in_ctr "$rt" "${cid[c1]}" awk '$2 == "/dev/shm" {a = $3} $2 == "/cache" {b = $3} END {print a, b}' /proc/self/mounts 2>&1)"
	in_ctr "$rt" "${cid[c1]}" sh -c "echo vol-$rt >/cache/f" 2>"$r/err" ||
		flunk "$rt: c1: write the emptyDir: $(<"$r/err")"
	# shellcheck disable=SC2016 # awk's field
	check "$rt: c2 reads c1's file in the emptyDir, 16 MiB in size" "vol-$rt 16384" \
		"$(in_ctr "$rt" "${cid[c2]}" sh -c 'cat /cache/f; df -k /cache | awk "NR == 2 {print \$2}"' 2>&1 | tr '\n' ' ' | sed 's/ $//')"
	if [[ $rt == hull ]]; then
		check "hull: the emptyDir's file is in guest RAM, not in the host tmpfs" "" "$(ls -A "$VOL")"
	else
		check "runc: the emptyDir's file is in the host tmpfs" "vol-runc" "$(cat "$VOL/f" 2>&1)"
	fi

	# ContainerStats: CPU time that grows with work done in the container, a working set
	# that is there and below the usage and the node's memory.
	local cpu0 cpu1 ws use
	cpu0=$(cri stats "${cid[c1]}" -f cpu_usage_core_ns 2>&1)
	# shellcheck disable=SC2016 # the container's shell expands it
	cri exec-sync "${cid[c1]}" -- sh -c 'i=0; while [ $i -lt 30000 ]; do i=$((i + 1)); done' 2>"$r/err" ||
		flunk "$rt: c1: exec-sync busy loop: $(<"$r/err")"
	cri stats "${cid[c1]}" >"$r/stats-$rt.json" 2>&1
	cpu1=$(cri stats "${cid[c1]}" -f cpu_usage_core_ns 2>&1)
	ws=$(cri stats "${cid[c1]}" -f memory_working_set_bytes 2>&1)
	use=$(cri stats "${cid[c1]}" -f memory_usage_bytes 2>&1)
	info "$rt: c1 stats: $(tr -d ' \n' <"$r/stats-$rt.json")"
	if [[ $cpu0 =~ ^[0-9]+$ && $cpu1 =~ ^[0-9]+$ ]] && ((cpu0 > 0 && cpu1 > cpu0)); then
		pass "$rt: c1 CPU usage grows with work ($cpu0 -> $cpu1 ns)"
	else
		flunk "$rt: c1 CPU usage: '$cpu0' then '$cpu1'"
	fi
	if [[ $ws =~ ^[0-9]+$ && $use =~ ^[0-9]+$ ]] && ((ws > 0 && ws <= use && use < 1 << 30)); then
		pass "$rt: c1 memory: working set $ws <= usage $use bytes"
	else
		flunk "$rt: c1 memory: working set '$ws', usage '$use'"
	fi

	# UpdateContainerResources reaches the container's cgroup (a cgroup namespace: the
	# container's /sys/fs/cgroup is its own cgroup).
	if cri update "${cid[c1]}" "$r/update.json" 2>"$r/err"; then
		check "$rt: c1 memory.max and cpu.max after UpdateContainerResources" "$((48 << 20)) 50000 100000" \
			"$(in_ctr "$rt" "${cid[c1]}" cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max 2>&1 | tr '\n' ' ' | sed 's/ $//')"
	else
		flunk "$rt: UpdateContainerResources: $(<"$r/err")"
	fi

	# c4: killed by the OOM killer; CRI says so.
	for ((i = 0; i < 300; i++)); do
		[[ $(cri inspect "${cid[c4]}" -f reason 2>/dev/null) == OOMKilled ]] && break
		sleep 0.1
	done
	check "$rt: c4 was OOM-killed (state, exit code, reason)" "CONTAINER_EXITED 137 OOMKilled" \
		"$(cri inspect "${cid[c4]}" -f state 2>&1) $(cri inspect "${cid[c4]}" -f exit_code 2>&1) $(cri inspect "${cid[c4]}" -f reason 2>&1)"

	# c3: its output goes to its CRI log file (written by containerd), its status to inspect.
	for ((i = 0; i < 600; i++)); do
		[[ $(cri inspect "${cid[c3]}" -f state 2>/dev/null) == CONTAINER_EXITED ]] && break
		sleep 0.1
	done
	out=$(cri inspect "${cid[c3]}" 2>&1)
	check "$rt: c3 exited with code 3 (state, exit code, reason)" "CONTAINER_EXITED 3 Error" \
		"$(cri inspect "${cid[c3]}" -f state 2>&1) $(cri inspect "${cid[c3]}" -f exit_code 2>&1) $(cri inspect "${cid[c3]}" -f reason 2>&1)"
	local log=$logdir/c3.log
	check "$rt: c3 log path" "$log" "$(cri inspect "${cid[c3]}" -f log_path 2>&1)"
	for ((i = 0; i < 100; i++)); do
		grep -qE '^[^ ]+ stdout F to-stdout$' "$log" 2>/dev/null &&
			grep -qE '^[^ ]+ stderr F to-stderr$' "$log" 2>/dev/null && break
		sleep 0.1
	done
	if grep -qE '^[^ ]+ stdout F to-stdout$' "$log" 2>/dev/null &&
		grep -qE '^[^ ]+ stderr F to-stderr$' "$log" 2>/dev/null; then
		pass "$rt: c3's CRI log has its stdout and stderr lines"
	else
		flunk "$rt: c3's CRI log $log: '$(cat "$log" 2>&1)'; status: $out"
	fi
}

# Stops and removes what scenario $1 (or mini_pod $1) made, checking each step.
teardown() {
	local rt=$1 pod=${pods[$1]:-} id ids
	read -ra ids <<<"${ctrs[$1]:-}"
	# The pod's VMM, guest console and virtiofsd logs go with the pod: keep a copy.
	if [[ $rt == hull && -n $pod ]]; then
		mkdir -p "$OUT/hull-pod"
		cp /var/log/hull/pods/"$pod"/*.log "$OUT/hull-pod/" 2>/dev/null
	fi
	# SIGTERM ends each container at once; the grace period only has to cover the lab's slow
	# exit path (seen with containerd 1.7's runc shim: the exit event 2.02 s after the TERM, so a
	# 2 s timeout went on to a kill that raced the shim's own exit).
	for id in "${ids[@]}"; do
		cri stop --timeout 10 "$id" 2>"$r/err" || flunk "$rt: StopContainer ${id:0:12}: $(<"$r/err")"
	done
	for id in "${ids[@]}"; do
		cri rm "$id" 2>"$r/err" || flunk "$rt: RemoveContainer ${id:0:12}: $(<"$r/err")"
	done
	((${#ids[@]} == 0)) || pass "$rt: containers stopped and removed (${#ids[@]})"
	[[ -n $pod ]] || return 0
	if cri stopp "$pod" 2>"$r/err" && cri rmp "$pod" 2>"$r/err"; then
		pass "$rt: pod stopped and removed"
	else
		flunk "$rt: StopPodSandbox/RemovePodSandbox: $(<"$r/err")"
	fi
	check "$rt: pod gone from CRI" "" "$(cri inspectp "$pod" -f id 2>/dev/null)"
}

# What must be gone once the pod of runtime $1 is removed. The hull shim tears the pod down
# after answering Shutdown, so give it a bounded moment.
leftovers() {
	local key=$1 rt=${podrt[$1]:-$1} pod=${pods[$1]:-} ns=${netns[$1]:-} procs
	local shim_re="^$BIN/containerd-shim-hull-v2 |^$BIN/hull-vmm |^$VIRTIOFSD "
	[[ $rt == runc ]] && shim_re="containerd-shim-runc-v2 .*-id ${pod:-none}"
	for ((i = 0; i < 300; i++)); do
		procs=$(pgrep -af "$shim_re")
		[[ -z $procs ]] && break
		sleep 0.1
	done
	if [[ $rt == hull ]]; then
		check "$key: no hull-vmm, virtiofsd or shim left" "" "$procs"
		check "$key: no pod state left" "" "$(ls /run/hull/pods 2>/dev/null)"
		check "$key: no mounts under /run/hull left" "" "$(grep /run/hull /proc/self/mountinfo)"
		check "$key: no pod logs or jail uid markers left" "" \
			"$(find /var/log/hull/pods /run/hull/jail-ids -mindepth 1 ! -name .lock 2>/dev/null)"
	else
		check "$key: no shim left" "" "$procs"
	fi
	check "$key: no pod cgroup left" "" "$(find "/sys/fs/cgroup/$CG/pod-$key" -mindepth 1 -type d 2>/dev/null)"
	[[ -n $pod ]] || return 0
	if [[ -n $ns ]]; then
		check "$key: the pod's netns ${ns##*/} is gone" "" "$(ls "$ns" 2>/dev/null; ip netns list | grep -F "${ns##*/}")"
	else
		flunk "$key: PodSandboxStatus gave no netns path"
	fi
}

# mini_pod KEY RT: one more pod, of runtime RT, whose only container c1 serves
# http://IP:8080/f ("from-KEY-pod"). Recorded like a scenario's pod, under KEY.
mini_pod() { # KEY RT [ANNOTATIONS_JSON]
	local key=$1 rt=$2 pod id podjson=$r/pod-$1.json ctrjson=$r/$1-c1.json
	mkdir -p "$r/logs/$key"
	printf '{"name": "cri-%s", "uid": "uid-cri-%s", "namespace": "default", "hostname": "cri-%s", "log_directory": "%s", "cgroup_parent": "/%s/pod-%s", "annotations": %s}\n' \
		"$key" "$key" "$key" "$r/logs/$key" "$CG" "$key" "${3:-"{}"}" >"$podjson"
	printf '{"name": "c1", "image": "%s", "command": ["sh", "-c", "mkdir -p /tmp/www && echo from-%s-pod >/tmp/www/f && exec httpd -f -p 8080 -h /tmp/www"], "log_path": "c1.log"}\n' \
		"$IMG" "$key" >"$ctrjson"
	if ! pod=$(cri runp --runtime "$rt" "$podjson" 2>"$r/err"); then
		flunk "$key: RunPodSandbox ($rt): $(<"$r/err")"
		return 1
	fi
	pods[$key]=$pod podrt[$key]=$rt
	netns[$key]=$(cri inspectp "$pod" -f netns 2>/dev/null)
	podip[$key]=$(cri inspectp "$pod" -f ip 2>&1)
	podip6[$key]=$(cri inspectp "$pod" -f ips 2>&1 | tr ' ' '\n' | grep -m1 ':')
	if ! id=$(cri create "$pod" "$ctrjson" "$podjson" 2>"$r/err"); then
		flunk "$key: CreateContainer c1: $(<"$r/err")"
		return 1
	fi
	ctrs[$key]=$id c1[$key]=$id
	if ! cri start "$id" 2>"$r/err"; then
		flunk "$key: StartContainer c1: $(<"$r/err")"
		return 1
	fi
	info "$key: one more $rt pod (${pod:0:12}), IP ${podip[$key]}"
}

# pod_limits KEY: the hull pod KEY set annotation io.hull.limits.net_tx_bytes (500 kB/s out of
# the pod, a 50 kB bucket): hull-vmm's API on the pod's socket shows the limit on its NIC, 4 MiB
# sent out of the pod arrive whole while the NIC counts throttling, and the API lifts the limit
# at runtime. The rates are INFO (lab timings are emulated).
pod_limits() {
	local key=$1 sock=/run/hull/pods/${pods[$1]}/jail/api.sock ip=${podip[$1]} n=$((4 << 20))
	local api vm rate got t ms listing
	api() { timeout 10 "$BIN/hullctl" api --sock "$sock" "$@" 2>&1; }
	# The operator's view: hullctl finds the pod by its Kubernetes name.
	listing=$(timeout 20 "$BIN/hullctl" pods 2>&1)
	info "hullctl pods:"$'\n'"$listing"
	check "$key: hullctl pods lists it by sandbox id and Kubernetes name, running" 1 \
		"$(grep -cE "^${pods[$key]:0:12} +default/cri-$key +running +[0-9]+ " <<<"$listing")"
	vm=$(timeout 20 "$BIN/hullctl" inspect "default/cri-$key" 2>&1)
	check "$key: hullctl inspect names its hull-vmm's host pid" yes \
		"$(pgrep -x hull-vmm | grep -qx "$(grep -o '"vmm_pid":[0-9]*' <<<"$vm" | grep -o '[0-9]*$')" && echo yes || echo "no: $vm")"
	# The guest's logs, asked of its agent (the pod booted without a console).
	local klog alog
	klog=$(timeout 20 "$BIN/hullctl" console "default/cri-$key" 2>&1)
	check "$key: hullctl console prints the guest kernel's log from its first record" 1 \
		"$(head -n 1 <<<"$klog" | grep -cE '^\[ +0\.[0-9]{6}\] Linux version ')"
	alog=$(timeout 20 "$BIN/hullctl" console --agent "default/cri-$key" 2>&1)
	check "$key: hullctl console --agent prints hull-agent's log" 1 \
		"$(grep -m1 -c ' INFO hull_agent.*: ready: serving ttrpc' <<<"$alog")"
	# hullctl prints keys in name order: the tx bucket's fields are burst, one_time_burst, rate.
	rate=$(grep -o '"tx":{"bytes":{[^}]*}' <<<"$vm" | grep -o '"rate":[0-9]*' | grep -o '[0-9]*$')
	check "$key: its annotation's limit is on its NIC in hull-vmm (hullctl inspect)" 500000 "$rate"
	in_ctr hull "${c1[$key]}" sh -c "{ nc -ll -p 9100 -e head -c $n /dev/zero </dev/null >/dev/null 2>&1 & }"
	sleep 1
	for limited in yes no; do
		t=$(date +%s%N)
		got=$(timeout 120 busybox nc "$ip" 9100 </dev/null | wc -c)
		ms=$(ms_since "$t")
		check "$key: 4 MiB out of the pod arrive whole (limit: $limited)" "$n" "$got"
		info "$key: 4 MiB out of the pod in $ms ms ($((n / (ms > 0 ? ms : 1))) kB/s), limit: $limited"
		if [[ $limited == yes ]]; then
			local throttled
			throttled=$(api GET /metrics | grep -o '"tx_throttled":[0-9]*' | grep -o '[0-9]*$')
			check "$key: the NIC throttled the transfer (tx_throttled > 0)" yes "$( ((${throttled:-0} > 0)) && echo yes || echo "no: ${throttled:-none}")"
			check "$key: PUT /net/0/rate_limits lifts the limit at runtime" "" "$(api PUT /net/0/rate_limits '{}')"
			check "$key: no limit left (GET /vm)" 1 "$(api GET /vm | grep -c '"tx":{"bytes":null')"
		fi
	done
}

# grow_pod KEY: the hull pod KEY, booted at the default size (1 vCPU, 128 + 64 MiB here), gets
# a container with 512 MiB and 2 CPUs. Its VM grows first (hull-vmm's GET /hotplug: one more
# vCPU, 384 MiB plugged) and the container really uses it: 400 MiB allocated and touched, two
# busy loops on ~2 CPUs. UpdateContainerResources to 768 MiB (the runtime's step of an
# in-place resize) grows it again. The times are INFO (emulated lab).
grow_pod() {
	local key=$1 pod=${pods[$1]} sock=/run/hull/pods/${pods[$1]}/jail/api.sock id out t0 permille
	hotplug() { timeout 10 "$BIN/hullctl" api --sock "$sock" GET /hotplug 2>&1; }
	ctrjson grow "{\"memory_limit_bytes\": $((512 << 20)), \"cpu_period\": 100000, \"cpu_quota\": 200000}" sleep 1000
	info "$key: before: $(hotplug)"
	t0=$(date +%s%N)
	if ! id=$(cri create "$pod" "$r/grow.json" "$r/pod-$key.json" 2>"$r/err") || ! cri start "$id" 2>>"$r/err"; then
		flunk "$key: a container of 512 MiB and 2 CPUs: $(<"$r/err")"
		return 1
	fi
	ctrs[$key]+=" $id"
	info "$key: the 512 MiB / 2 CPU container created and started in $(ms_since "$t0") ms (the VM grew first)"
	out=$(hotplug)
	check "$key: its VM grew to 2 vCPUs and 384 MiB (GET /hotplug: vcpus, plugged_bytes)" "2 $((384 << 20))" \
		"$(jnum "$out" vcpus) $(jnum "$out" plugged_bytes)"
	check "$key: the guest has both CPUs online" 0-1 "$(in_ctr hull "$id" cat /sys/devices/system/cpu/online 2>&1)"
	out=$(in_ctr hull "$id" sh -c 'dd if=/dev/zero of=/dev/null bs=400M count=1 2>&1 && echo allocated' 2>&1)
	check "$key: the container allocates and touches 400 MiB" 1 "$(grep -c '^allocated$' <<<"$out")"
	# CPU time of the container's cgroup over 3 s of two busy loops, in thousandths of a CPU.
	permille=$(in_ctr hull "$id" sh -c '
		use() { sed -n "s/^usage_usec //p" /sys/fs/cgroup/cpu.stat; }
		up() { cut -d" " -f1 /proc/uptime | tr -d .; }
		u0=$(use) t0=$(up)
		for i in 1 2; do timeout 3 sh -c "while :; do :; done" & done
		wait
		u1=$(use) t1=$(up)
		echo $(((u1 - u0) / ((t1 - t0) * 10)))' 2>&1)
	info "$key: two busy loops used $permille/1000 CPUs"
	check "$key: two busy loops use more than one CPU (> 1.2)" yes \
		"$( ((${permille:-0} > 1200)) 2>/dev/null && echo yes || echo "no: $permille")"
	echo "{\"memory_limit_bytes\": $((768 << 20)), \"cpu_period\": 100000, \"cpu_quota\": 200000}" >"$r/grow-update.json"
	t0=$(date +%s%N)
	if cri update "$id" "$r/grow-update.json" 2>"$r/err"; then
		info "$key: UpdateContainerResources to 768 MiB took $(ms_since "$t0") ms"
		check "$key: after UpdateContainerResources to 768 MiB the VM holds 640 MiB more" "$((640 << 20))" \
			"$(jnum "$(hotplug)" plugged_bytes)"
		check "$key: and the container's memory.max is 768 MiB" "$((768 << 20))" \
			"$(in_ctr hull "$id" cat /sys/fs/cgroup/memory.max 2>&1)"
	else
		flunk "$key: UpdateContainerResources to 768 MiB: $(<"$r/err")"
	fi
	# A disk attached to the running pod (`hullctl disk attach`: the image's descriptor goes
	# to hull-vmm, the guest's agent binds the slot) is mountable in the guest (through the
	# debug shell this pod's node allows), refuses to detach while mounted, then detaches.
	local img=$r/grow-disk.img att dev slot
	mkdir -p "$r/grow-disk"
	echo "hello-from-a-hot-disk" >"$r/grow-disk/hello"
	truncate -s 32M "$img"
	mkfs.ext4 -q -F -d "$r/grow-disk" "$img" 2>"$r/err" || flunk "$key: mkfs.ext4: $(<"$r/err")"
	t0=$(date +%s%N)
	att=$(timeout 30 "$BIN/hullctl" disk attach "default/cri-$key" "$img" 2>&1)
	info "$key: hullctl disk attach: '$att' in $(ms_since "$t0") ms"
	read -r slot dev <<<"$att"
	check "$key: hullctl disk attach puts the disk in slot 0 as /dev/vdX" yes \
		"$([[ $slot == 0 && $dev == /dev/vd[a-z] ]] && echo yes || echo "no: $att")"
	out=$(timeout 60 "$BIN/hullctl" debug -T --tool /bin/busybox "default/cri-$key" -- \
		sh -c "mkdir -p /mnt/hot && mount -t ext4 $dev /mnt/hot && cat /mnt/hot/hello" 2>&1)
	check "$key: the attached disk mounts in the guest and holds its file" hello-from-a-hot-disk "$out"
	check "$key: hullctl disk detach is refused while the disk is mounted" 1 \
		"$(timeout 30 "$BIN/hullctl" disk detach "default/cri-$key" 0 2>&1 | grep -c 'mounted')"
	timeout 60 "$BIN/hullctl" debug -T --tool /bin/busybox "default/cri-$key" -- umount /mnt/hot >/dev/null 2>&1
	check "$key: hullctl disk detach after the unmount" "" \
		"$(timeout 30 "$BIN/hullctl" disk detach "default/cri-$key" 0 2>&1)"
	check "$key: the slot is free again (GET /hotplug)" 0 "$(hotplug | grep -c '"attached":true')"
}

# node_metrics KEY: the node's Prometheus endpoint (`hullctl monitor`) while the hull pods run:
# Debian's promtool accepts a scrape, which holds pod KEY's VMM counters under its Kubernetes
# name, and a real Prometheus scraping the endpoint finds the pod up.
node_metrics() {
	local key=$1 prom mon srv scrape i up=
	prom=$(HOME=${HOME:-/root} "$lab_repo/scripts/ensure-prometheus" 2>&1 | sed -n 's/^prometheus=//p')
	if [[ ! -x $prom/promtool ]]; then
		flunk "node metrics: no promtool in the cache (scripts/ensure-prometheus on the host fills it)"
		return
	fi
	"$BIN/hullctl" monitor --listen 127.0.0.1:9464 >"$r/monitor.log" 2>&1 &
	mon=$!
	for ((i = 0; i < 50; i++)); do
		busybox wget -q -O "$r/scrape.txt" http://127.0.0.1:9464/metrics 2>/dev/null && break
		sleep 0.2
	done
	scrape=$(<"$r/scrape.txt")
	cp "$r/scrape.txt" "$OUT/node-metrics.txt"
	check "node metrics: promtool check metrics accepts the endpoint's scrape" "" \
		"$("$prom/promtool" check metrics <"$r/scrape.txt" 2>&1)"
	check "node metrics: $key's hull-vmm answers, labelled with its pod" 1 \
		"$(grep -c "^hull_pod_up{sandbox_id=\"${pods[$key]}\",namespace=\"default\",pod=\"cri-$key\",uid=\"uid-cri-$key\"} 1$" <<<"$scrape")"
	check "node metrics: $key's NIC counters are there" 1 \
		"$(grep -c "^hull_vmm_net_tx_bytes_total{sandbox_id=\"${pods[$key]}\",.*index=\"0\"} [1-9]" <<<"$scrape")"
	local m sid="sandbox_id=\"${pods[$key]}\""
	# The host's view of the pod's processes and the guest's own view of itself.
	for m in hull_pod_agent_up hull_pod_shim_resident_memory_bytes hull_pod_virtiofsd_resident_memory_bytes \
		hull_pod_guest_memory_resident_bytes hull_pod_shim_cpu_seconds_total hull_guest_memory_total_bytes \
		hull_guest_memory_available_bytes hull_pod_vcpu_seconds_total; do
		check "node metrics: $key has $m > 0" 1 "$(grep -c "^$m{$sid,[^}]*} [0-9.e+-]*[1-9]" <<<"$scrape")"
	done
	check "node metrics: $key's guest reports its memory pressure (PSI)" 1 \
		"$(grep -c "^hull_guest_pressure_waiting_seconds_total{$sid,.*resource=\"memory\"} " <<<"$scrape")"
	check "node metrics: $key's agent timed its CreateContainer calls (histogram count >= 1)" 1 \
		"$(grep -c "^hull_agent_rpc_duration_seconds_count{$sid,.*method=\"Containers/CreateContainer\"} [1-9]" <<<"$scrape")"
	info "node metrics: $key: $(grep -E "^hull_pod_(shim|vmm|virtiofsd|guest_memory)_resident[a-z_]*\{$sid" <<<"$scrape" | sed 's/{[^}]*}//' | tr '\n' ' ')"
	mkdir -p "$r/prom"
	printf 'global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hull\n    static_configs:\n      - targets: ["127.0.0.1:9464"]\n' >"$r/prom/prometheus.yml"
	"$prom/prometheus" --config.file="$r/prom/prometheus.yml" --storage.tsdb.path="$r/prom/data" \
		--web.listen-address=127.0.0.1:9091 >"$r/prom/log" 2>&1 &
	srv=$!
	for ((i = 0; i < 120; i++)); do
		up=$(busybox wget -q -O - "http://127.0.0.1:9091/api/v1/query?query=hull_pod_up%7Bpod%3D%22cri-$key%22%7D" 2>/dev/null |
			grep -o '"value":\[[0-9.]*,"[01]"\]' | grep -o '"[01]"')
		[[ $up == '"1"' ]] && break
		sleep 0.5
	done
	check "node metrics: a real Prometheus scraping the endpoint finds $key up" '"1"' "$up"
	kill "$srv" "$mon" 2>/dev/null
	wait "$srv" "$mon" 2>/dev/null
	[[ $up == '"1"' ]] || tail -n 5 "$r/prom/log" | sed 's/^/INFO: prometheus: /'
}

# debug_shell KEY OFF: `hullctl debug` on pod KEY (runtime hull-debug: [vm] debug_shell = true)
# runs the lab's static busybox in the guest itself, outside every container (its PID 1 is
# hull-agent's /init, and it sees the containers' cgroups), with stdin, stdout and the status,
# or on a terminal; the session is in the guest's kernel log. Pod OFF (the default hull.toml)
# refuses it with the reason.
debug_shell() {
	local key=$1 off=$2 bb out st
	bb=$(command -v busybox)
	dbg() { timeout 60 "$BIN/hullctl" debug --tool "$bb" "$@"; }
	out=$(dbg "default/cri-$off" -- true 2>&1)
	check "$off: hullctl debug is refused where hull.toml leaves the debug shell off" 1 \
		"$(grep -c 'does not serve the debug shell' <<<"$out")"
	out=$(echo guest-stdin | dbg -T "default/cri-$key" -- sh -c \
		'cat; cat /proc/1/cmdline; echo; test -d /sys/fs/cgroup/hull && echo sees-pod-cgroups; exit 7' 2>&1)
	st=$?
	check "$key: hullctl debug runs a program in the guest, outside the containers, with stdin, stdout and its status" \
		"guest-stdin|/init|sees-pod-cgroups|7" "$(paste -sd'|' <<<"$out")|$st"
	out=$(dbg -t "default/cri-$key" -- tty </dev/null 2>&1)
	check "$key: hullctl debug -t gives it a terminal" 1 "$(grep -c '^/dev/pts/[0-9]' <<<"$out")"
	check "$key: the guest's kernel log records each debug session" yes \
		"$(timeout 20 "$BIN/hullctl" console "default/cri-$key" 2>&1 | grep -c 'debug shell: the host starts a process' | awk '{print ($1 >= 2) ? "yes" : "no: " $1}')"
}

# reach FROM TO: c1 of pod FROM gets http://IP-of-TO:8080/f over the pod network, over IPv4
# and over IPv6. busybox wget -T crashes (Debian's busybox-static), so `timeout` bounds each try.
reach() {
	local from=$1 to=$2 body addr i
	for addr in "${podip[$to]}" "[${podip6[$to]:-}]"; do
		body=''
		for ((i = 0; i < 25; i++)); do
			body=$(in_ctr "${podrt[$from]}" "${c1[$from]}" timeout 5 wget -q -O - "http://$addr:8080/f" 2>&1) &&
				[[ $body == "from-$to-pod" ]] && break
			sleep 0.2
		done
		check "the $from pod reaches a TCP server in the $to pod ($addr:8080)" "from-$to-pod" "$body"
	done
}

# port_forward KEY: CRI PortForward to c1 of pod KEY. containerd dials localhost in the pod's
# netns, where with hull nothing of the pod listens (its servers run in the guest; the shim
# mirrors the guest's localhost listeners there). 1 MiB of random bytes each way through an
# echo server on the wildcard address, a page from a server bound to 127.0.0.1 only, and a
# port nothing listens on refused. Servers start just before: with hull the mirror follows
# within a second, so the first dials are retried.
port_forward() {
	local key=$1 rt=${podrt[$1]} pod=${pods[$1]} out=$r/pf-$1.out i t0 ms body
	[[ -f $r/pf.in ]] || head -c 1048576 /dev/urandom >"$r/pf.in"
	in_ctr "$rt" "${c1[$key]}" sh -c "mkdir -p /tmp/www && echo from-$key-pod >/tmp/www/f && { nc -ll -p 9000 -e head -c 1048576 </dev/null >/dev/null 2>&1 & } && httpd -p 127.0.0.1:8082 -h /tmp/www </dev/null >/dev/null 2>&1" 2>"$r/err" ||
		flunk "$key: c1: start the port-forward servers: $(<"$r/err")"
	for ((i = 0; i < 30; i++)); do
		t0=$(date +%s%N)
		cri port-forward "$pod" 9000 <"$r/pf.in" >"$out" 2>"$r/err" && cmp -s "$r/pf.in" "$out" && break
		sleep 0.5
	done
	ms=$(ms_since "$t0")
	if cmp -s "$r/pf.in" "$out"; then
		pass "$key: PortForward carries 1 MiB both ways to an echo server in the pod (:9000, ${ms} ms)"
	else
		flunk "$key: PortForward to :9000: $(stat -c %s "$out" 2>&1) bytes back; $(<"$r/err")"
	fi
	for ((i = 0; i < 30; i++)); do
		body=$(printf 'GET /f HTTP/1.0\r\n\r\n' | cri port-forward "$pod" 8082 2>"$r/err" | tail -n 1) &&
			[[ $body == "from-$key-pod" ]] && break
		sleep 0.5
	done
	check "$key: PortForward reaches a server bound to the pod's 127.0.0.1 only (:8082)" "from-$key-pod" "$body"
	if cri port-forward "$pod" 9 </dev/null >/dev/null 2>"$r/err"; then
		flunk "$key: PortForward to :9, where nothing listens, succeeded"
	elif grep -q 'connection refused' "$r/err"; then
		pass "$key: PortForward to a port nothing listens on is refused"
	else
		flunk "$key: PortForward to :9: $(<"$r/err")"
	fi
}

# net_stats KEY (hull): the guest's interface counters in the shim's Task.Stats reply.
# containerd 1.6's clients cannot show them (its cgroup v2 Metrics type predates the network
# field), so hullctl asks the shim on the socket containerd uses. 1 MiB each way over the
# pod network must show in eth0's rx and tx bytes.
jnum() { grep -o "\"$2\":[0-9]*" <<<"$1" | head -n 1 | cut -d: -f2; }
net_stats() {
	local key=$1 pod=${pods[$1]} addr s0 s1 got
	addr=$(cat "$r/state/io.containerd.runtime.v2.task/k8s.io/$pod/address" 2>&1)
	s0=$(timeout 30 "$BIN/hullctl" task-stats --address "$addr" "$pod" 2>&1)
	info "$key: Task.Stats from the shim: $s0"
	[[ -f $r/www/big ]] || head -c 1048576 /dev/urandom >"$r/www/big"
	in_ctr hull "${c1[$key]}" sh -c 'head -c 1048576 /dev/urandom >/tmp/www/big' 2>"$r/err" ||
		flunk "$key: c1: write /tmp/www/big: $(<"$r/err")"
	got=$(timeout 60 busybox wget -q -O - "http://${podip[$key]}:8080/big" 2>&1 | wc -c)
	check "$key: the bridge host fetched 1 MiB from the pod" 1048576 "$got"
	got=$(in_ctr hull "${c1[$key]}" sh -c 'timeout 60 wget -q -O - http://10.88.0.1:8081/big | wc -c' 2>&1)
	check "$key: the pod fetched 1 MiB from the bridge host" 1048576 "$got"
	s1=$(timeout 30 "$BIN/hullctl" task-stats --address "$addr" "$pod" 2>&1)
	info "$key: Task.Stats after 1 MiB each way: $s1"
	if [[ $s1 == *'"name":"eth0"'* ]] &&
		(($(jnum "$s1" rx_bytes) - $(jnum "$s0" rx_bytes) >= 1048576)) &&
		(($(jnum "$s1" tx_bytes) - $(jnum "$s0" tx_bytes) >= 1048576)) &&
		(($(jnum "$s1" rx_packets) > $(jnum "$s0" rx_packets))); then
		pass "$key: the shim's Task.Stats counts the guest eth0's traffic both ways"
	else
		flunk "$key: Task.Stats network before '$s0', after '$s1'"
	fi
}

# CRI_RUNTIMES narrows a run by hand (e.g. "runc"); the suite runs both. The pods stay up until
# every scenario ran, so that pods of both runtimes (and two hull pods) can reach each other.
rts=${CRI_RUNTIMES:-runc hull}
for rt in $rts; do
	scenario "$rt"
done
if [[ $SUITE == full ]]; then
	for rt in $rts; do
		[[ -n ${c1[$rt]:-} ]] && port_forward "$rt"
	done
	[[ -n ${c1[hull]:-} ]] && net_stats hull
fi
# bench/net/run: throughput and latency of both pods, measured while they are up.
if [[ ${CRI_NET_BENCH:-0} == 1 && -n ${c1[hull]:-} && -n ${c1[runc]:-} ]]; then
	# shellcheck source-path=SCRIPTDIR source=../../../bench/net/measure.sh
	source "$lab_repo/bench/net/measure.sh"
	net_bench
	net_flood_bench
fi
if [[ -n ${c1[hull]:-} ]]; then
	if [[ -n ${c1[runc]:-} ]]; then
		reach hull runc
		reach runc hull
	fi
	if [[ $SUITE == full ]]; then
		# The second hull pod runs on a node that turned the debug shell on (runtime
		# hull-debug: the same hull.toml with [vm] debug_shell = true).
		if mini_pod hull2 hull-debug '{"io.hull.limits.net_tx_bytes": "500000:50000"}'; then
			podrt[hull2]=hull
			reach hull hull2
			reach hull2 hull
			pod_limits hull2
			node_metrics hull2
			debug_shell hull2 hull
			grow_pod hull2
		fi
		teardown hull2
	fi
fi
for rt in $rts; do
	teardown "$rt"
	leftovers "$rt"
	cp -r "$r/logs/$rt" "$OUT/cri-logs-$rt" 2>/dev/null
done
# The second hull pod's network namespace and cgroup (its processes: `leftovers hull`).
[[ -n ${pods[hull2]:-} ]] && leftovers hull2
# hostNetwork with hull: refused with the documented reason, and nothing is left behind. On
# every containerd line (smoke too): what the refusals read is how its CRI plugin writes a
# host namespace into the sandbox spec.
if [[ " $rts " == *" hull "* ]]; then
	printf '{"name": "cri-hostnet", "uid": "uid-cri-hostnet", "namespace": "default", "log_directory": "%s", "cgroup_parent": "/%s/pod-hostnet", "namespaces": {"network": "node"}}\n' \
		"$r/logs" "$CG" >"$r/pod-hostnet.json"
	if pod=$(cri runp --runtime hull "$r/pod-hostnet.json" 2>"$r/err"); then
		flunk "hull: a hostNetwork pod was started (${pod:0:12})"
		cri stopp "$pod" >/dev/null 2>&1
		cri rmp "$pod" >/dev/null 2>&1
	elif grep -q "hostNetwork pods cannot run with runtime hull" "$r/err"; then
		pass "hull: a hostNetwork pod is refused: $(grep -o 'hostNetwork pods cannot run with runtime hull[^;]*' "$r/err" | head -1)"
	else
		flunk "hull: hostNetwork pod refused, but not with the documented reason: $(<"$r/err")"
	fi
	leftovers hull
	# hostIPC and hostPID: containerd's CRI leaves the namespace's entry out of the sandbox
	# spec (seen in runc's pod); hull refuses such a pod with the documented reason, runc
	# runs it.
	for hostns in ipc:hostIPC pid:hostPID; do
		kind=${hostns%%:*} field=${hostns#*:}
		for rt in runc hull; do
			printf '{"name": "cri-host%s-%s", "uid": "uid-cri-host%s-%s", "namespace": "default", "log_directory": "%s", "cgroup_parent": "/%s/pod-host%s", "namespaces": {"%s": "node"}}\n' \
				"$kind" "$rt" "$kind" "$rt" "$r/logs" "$CG" "$kind" "$kind" >"$r/pod-host$kind-$rt.json"
			if pod=$(cri runp --runtime "$rt" "$r/pod-host$kind-$rt.json" 2>"$r/err"); then
				if [[ $rt == runc ]]; then
					ns=$(ctr -a "$A" -n k8s.io containers info "$pod" 2>&1 | jq -r '[.Spec.linux.namespaces[].type] | join(",")' 2>&1)
					if [[ ,$ns, == *,mount,* && ,$ns, != *,$kind,* ]]; then
						pass "runc: a $field pod runs; its sandbox spec has no $kind namespace ($ns)"
					else
						flunk "runc: a $field pod's sandbox spec has namespaces '$ns'"
					fi
				else
					flunk "hull: a $field pod was started (${pod:0:12})"
				fi
				cri stopp "$pod" >/dev/null 2>&1
				cri rmp "$pod" >/dev/null 2>&1
			elif [[ $rt == hull ]] && grep -q "$field pods cannot run with runtime hull" "$r/err"; then
				pass "hull: a $field pod is refused: $(grep -o "$field pods cannot run with runtime hull[^;]*" "$r/err" | head -1)"
			else
				flunk "$rt: RunPodSandbox of a $field pod: $(<"$r/err")"
			fi
		done
		leftovers hull
	done
fi
# failed_starts: each broken installation's pod is refused with its reason first, and leaves
# nothing behind.
if [[ $SUITE == full && " $rts " == *" hull "* ]]; then
	declare -A reason=(
		[hull-nokernel]="hull.toml \\[vm\\] kernel = $r/no-such-vmlinux: No such file or directory"
		[hull-panic]="the guest kernel panicked: Kernel panic - not syncing: VFS: Unable to mount root fs"
		[hull-slow]="the guest's agent did not answer within 1 s (hull.toml \\[vm\\] boot_timeout_secs)"
	)
	for broken in $broken_runtimes; do
		printf '{"name": "cri-%s", "uid": "uid-cri-%s", "namespace": "default", "log_directory": "%s", "cgroup_parent": "/%s/pod-%s"}\n' \
			"$broken" "$broken" "$r/logs" "$CG" "$broken" >"$r/pod-$broken.json"
		if pod=$(cri runp --runtime "$broken" "$r/pod-$broken.json" 2>"$r/err"); then
			flunk "$broken: its pod started (${pod:0:12})"
			cri stopp "$pod" >/dev/null 2>&1
			cri rmp "$pod" >/dev/null 2>&1
		elif grep -q "${reason[$broken]}" "$r/err"; then
			pass "$broken: RunPodSandbox fails with its reason: $(grep -o "${reason[$broken]}[^\\]*" "$r/err" | head -1 | cut -c1-200)"
		else
			flunk "$broken: RunPodSandbox's error does not say '${reason[$broken]}': $(head -c 600 "$r/err")"
		fi
		podrt[$broken]=hull
		leftovers "$broken"
	done
	# KVM unusable: /dev/kvm usable by root only (a node without udev's kvm rule); hull-vmm
	# runs unprivileged.
	kvm_mode=$(stat -c %a /dev/kvm)
	chmod 0600 /dev/kvm
	printf '{"name": "cri-nokvm", "uid": "uid-cri-nokvm", "namespace": "default", "log_directory": "%s", "cgroup_parent": "/%s/pod-nokvm"}\n' \
		"$r/logs" "$CG" >"$r/pod-nokvm.json"
	if pod=$(cri runp --runtime hull "$r/pod-nokvm.json" 2>"$r/err"); then
		flunk "hull: a pod started with /dev/kvm root-only (${pod:0:12})"
		cri stopp "$pod" >/dev/null 2>&1
		cri rmp "$pod" >/dev/null 2>&1
	elif grep -q '/dev/kvm (mode 0600, gid [0-9]*) is usable only by root' "$r/err"; then
		pass "hull: with KVM unusable RunPodSandbox fails with the reason: $(grep -o '/dev/kvm (mode 0600[^;]*usable only by root' "$r/err" | head -1)"
	else
		flunk "hull: RunPodSandbox with /dev/kvm root-only does not say why: $(head -c 600 "$r/err")"
	fi
	chmod "$kvm_mode" /dev/kvm
	podrt[nokvm]=hull
	leftovers nokvm
	# hull-vmm's own lines reach containerd's log through the shim, under the pod's sandbox id
	# (every hull shim line does: checked below): hull-panic's crash record.
	check "logs: hull-vmm's own lines are in containerd's log (hull-panic's guest kernel panic)" yes \
		"$(grep -c '^sandbox=[0-9a-f]\{64\} .*hull_shim::backend::log_relay: hull-vmm: end of the guest kernel.s log: Kernel panic' "$OUT/containerd.log" | awk '{print ($1 > 0) ? "yes" : "no"}')"
fi
# Pod sysctls (securityContext.sysctls): a safe one, an unsafe one, and the two net.* ones
# containerd 2.x puts into every sandbox. Set in the sandbox, they are what a container of the
# pod reads (hull: written in the guest before CRI's read-only /proc/sys; the net.* ones in the
# guest's network namespace, which is the pod's), the same with both runtimes.
SYSCTLS='{"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100", "net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}'
declare -A sysctl_seen=()
sysctl_pod() { # RT: the pod sysctl-RT, its container c1, the values c1 reads
	local rt=$1 key=sysctl-$1 pod id podjson=$r/pod-sysctl-$1.json
	mkdir -p "$r/logs/$key"
	printf '{"name": "cri-%s", "uid": "uid-cri-%s", "namespace": "default", "log_directory": "%s", "cgroup_parent": "/%s/pod-%s", "sysctls": %s}\n' \
		"$key" "$key" "$r/logs/$key" "$CG" "$key" "$SYSCTLS" >"$podjson"
	ctrjson "$key-c1" '{}' sleep 1000
	if ! pod=$(cri runp --runtime "$rt" "$podjson" 2>"$r/err"); then
		flunk "$rt: RunPodSandbox with sysctls: $(<"$r/err")"
		return 1
	fi
	pods[$key]=$pod podrt[$key]=$rt
	netns[$key]=$(cri inspectp "$pod" -f netns 2>/dev/null)
	if ! id=$(cri create "$pod" "$r/$key-c1.json" "$podjson" 2>"$r/err"); then
		flunk "$rt: CreateContainer in the sysctl pod: $(<"$r/err")"
		return 1
	fi
	ctrs[$key]=$id
	if ! cri start "$id" 2>"$r/err"; then
		flunk "$rt: StartContainer in the sysctl pod: $(<"$r/err")"
		return 1
	fi
	sysctl_seen[$rt]=$(in_ctr "$rt" "$id" cat /proc/sys/kernel/shm_rmid_forced /proc/sys/fs/mqueue/msg_max \
		/proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range 2>&1 |
		tr -s '\t\n' '  ' | sed 's/ $//')
	check "$rt: a container of the pod reads the pod's sysctls (shm_rmid_forced msg_max ip_unprivileged_port_start ping_group_range)" \
		"1 100 0 0 2147483647" "${sysctl_seen[$rt]}"
}
for rt in $rts; do
	sysctl_pod "$rt"
	teardown "sysctl-$rt"
	leftovers "sysctl-$rt"
done
if [[ -n ${sysctl_seen[runc]:-} && -n ${sysctl_seen[hull]:-} ]]; then
	check "hull: the pod's sysctls read as with runc" "${sysctl_seen[runc]}" "${sysctl_seen[hull]}"
fi
# A kubelet before 1.23 passes no sandbox resources (no sizing annotations) but puts the pod in
# a cgroup of its limits plus the RuntimeClass overhead: the VM must fit that cgroup, guest RAM
# and hull's host processes together (issue 16 item 6). A 64Mi pod with hull's 80Mi overhead is
# a 144 MiB pod cgroup: its guest gets 128 MiB (the default would be 320).
if [[ $SUITE == full && " $rts " == *" hull "* ]]; then
	small=/sys/fs/cgroup/$CG/pod-k120
	mkdir -p "$small"
	echo +memory >"/sys/fs/cgroup/$CG/cgroup.subtree_control"
	echo $((144 << 20)) >"$small/memory.max" || flunk "set $small/memory.max"
	printf '{"name": "cri-k120", "uid": "uid-cri-k120", "namespace": "default", "log_directory": "%s", "cgroup_parent": "/%s/pod-k120"}\n' \
		"$r/logs" "$CG" >"$r/pod-k120.json"
	if pod=$(cri runp --runtime hull "$r/pod-k120.json" 2>"$r/err"); then
		pods[k120]=$pod podrt[k120]=hull
		netns[k120]=$(cri inspectp "$pod" -f netns 2>/dev/null)
		vmm=$(cri inspectp "$pod" -f pid 2>&1)
		check "hull: with no sandbox resources the VM fits its 144 MiB pod cgroup (--mem-mib 128)" 128 \
			"$(tr '\0' '\n' <"/proc/$vmm/cmdline" 2>/dev/null | grep -A1 -x -- --mem-mib | tail -n 1)"
		teardown k120
	else
		flunk "hull: RunPodSandbox in a 144 MiB pod cgroup: $(<"$r/err")"
	fi
	leftovers k120
	rmdir "$small" 2>/dev/null
fi
# CRI_CYCLES (default 20) hull pods created and removed in turn: nothing of the pod network
# may pile up (issue 6): no network namespace, no veth on the bridge, no host-local address
# reservation, no iptables rule, and no hull process, state or mount.
netstate() {
	echo "netns: $(ip netns list 2>&1 | tr '\n' ' ')"
	echo "veths on the bridge: $(ip -o link show master hullcri0 2>/dev/null | awk -F': ' '{print $2}' | tr '\n' ' ')"
	echo "address reservations: $(find /var/lib/cni/networks/hull-cri-test -type f ! -name 'last_reserved_ip*' ! -name lock -printf '%f ' 2>/dev/null)"
	echo "iptables rules: $({ iptables-save; ip6tables-save; } 2>/dev/null | grep -c '^-A')"
}
# cycle K: one hull pod created, stopped and removed; prints nothing when all went well.
cycle() {
	local k=$1 pod
	printf '{"name": "cri-cycle-%d", "uid": "uid-cri-cycle-%d", "namespace": "default", "log_directory": "%s", "cgroup_parent": "/%s/pod-cycle"}\n' \
		"$k" "$k" "$r/logs" "$CG" >"$r/pod-cycle-$k.json"
	if ! pod=$(cri runp --runtime hull "$r/pod-cycle-$k.json" 2>"$r/err-cycle-$k"); then
		echo "cycle $k: RunPodSandbox: $(<"$r/err-cycle-$k")"
	elif ! { cri stopp "$pod" && cri rmp "$pod"; } 2>"$r/err-cycle-$k"; then
		echo "cycle $k: StopPodSandbox/RemovePodSandbox: $(<"$r/err-cycle-$k")"
	fi
}
if [[ $SUITE == full && " $rts " == *" hull "* ]]; then
	# One at a time: two hull VMs booting at once under the lab's QEMU 10 are where the lab
	# kernel crashed (lab/README.md), and a retried suite costs more than the serial cycles.
	ncycles=${CRI_CYCLES:-20} base=$(netstate) t0=$(date +%s%N) errs=''
	for ((k = 0; k < ncycles; k++)); do
		errs=$(cycle "$k")
		[[ -z $errs ]] || break
	done
	info "$ncycles hull pod create/remove cycles took $(ms_since "$t0") ms"
	check "hull: $ncycles pod create/remove cycles" "" "$errs"
	podrt[cycle]=hull
	leftovers cycle
	check "hull: after the cycles, the pod network left nothing behind" "$base" "$(netstate)"
fi
# containerd copies each shim's log into its own as it comes: every line a hull shim wrote
# there names its pod.
shim_lines=$(grep -c 'hull_shim::' "$OUT/containerd.log")
check "logs: each of the $shim_lines hull shim lines in containerd's log starts with its pod's sandbox=ID" "" \
	"$(grep 'hull_shim::' "$OUT/containerd.log" | grep -v '^sandbox=[0-9a-f]\{64\} ' | head -n 3)"
if [[ -n ${pods[hull2]:-} ]]; then
	check "logs: once the shim read the sandbox, its lines name the pod too (sandbox=ID pod=default/cri-hull2)" yes \
		"$(grep -c "^sandbox=${pods[hull2]} pod=default/cri-hull2 .*hull_shim::" "$OUT/containerd.log" | awk '{print ($1 > 0) ? "yes" : "no"}')"
fi
[[ $shim_lines -gt 0 ]] || flunk "logs: no hull shim line in containerd's log"
# The installer's undo: the node's configuration back byte for byte, nothing of hull's left.
check "installer: hull-node uninstall" "changed=true mode=$want_mode" "$(hull_node uninstall)"
check "installer: it requested a containerd restart" 2 "$(wc -l <"$r/restarts")"
cmp -s "$r/config.node" "$r/config.toml" &&
	pass "installer: containerd's configuration is the node's again, byte for byte" ||
	flunk "installer: containerd's configuration differs from the node's: $(diff "$r/config.node" "$r/config.toml" | head -6)"
check "installer: no drop-in, undo state, release or link left" "" \
	"$(ls -d /etc/containerd/conf.d/hull.toml /var/lib/hull/installer "$r/opt/hull" 2>/dev/null; find /usr/local/bin -lname "$r/opt/hull/*" 2>/dev/null)"
if [[ -n ${timing[hull.runp]:-} && -n ${timing[runc.runp]:-} ]]; then
	runc_ms=${timing[runc.runp]} hull_ms=${timing[hull.runp]}
	info "RunPodSandbox: runc $runc_ms ms, hull $hull_ms ms (hull/runc x$((hull_ms / (runc_ms > 0 ? runc_ms : 1))))"
	info "StartContainer c1/c2/c3/c4: runc ${timing[runc.c1]:-?}/${timing[runc.c2]:-?}/${timing[runc.c3]:-?}/${timing[runc.c4]:-?} ms, hull ${timing[hull.c1]:-?}/${timing[hull.c2]:-?}/${timing[hull.c3]:-?}/${timing[hull.c4]:-?} ms"
fi
if ((fail)); then
	info "containerd errors (last 15; full log: $OUT/containerd.log):"
	grep -E 'level=(error|fatal)' "$OUT/containerd.log" | tail -n 15 | cut -c1-600
fi
exit_if_guest_triple_faulted "$OUT/containerd.log"
exit $fail
