#!/usr/bin/env bash
# Runs inside the lab (see shim/tests/lab_containerd.rs): a private containerd from Debian runs
# the same `ctr run` with runc and with hull (containerd-shim-hull-v2 → hull-vmm with virtiofsd
# → the hull guest) and compares what a user sees: output, exit code, rootfs writes, a read-only
# bind mount, stdin that ends (CloseIO); then the rest of the task API on a hull pod (exec ±
# tty, exec stdin, pause/resume, metrics, OOM, events, an rslave bind that sees a later host
# mount, a read-only bind whose source's submount is read-only too), hull-vmm's jail (uid,
# capabilities, no_new_privs, seccomp, namespaces, root, rlimits; virtiofsd's reduced
# capabilities; logs on disk), a Bidirectional (rshared) bind refused, faults (kill -9 of
# hull-vmm → exit 255; kill -9 of hull-vmm and of the shim during boot and after) and
# leftovers (processes, pod and jail dirs, mounts, jail uids, cgroups, logs).
# Prints one PASS/FAIL line per check; exits 1 on any FAIL.
# usage: ctr_vm.sh BINDIR VMLINUX INITRD VIRTIOFSD OUTDIR   (BINDIR holds the shim and hull-vmm)
set -u
BIN=$1 VMLINUX=$2 INITRD=$3 VIRTIOFSD=$4 OUT=$5
# shellcheck source-path=SCRIPTDIR source=../../../lab/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../../../lab/lib.sh" || exit 1
fresh_dir "$OUT"
# vm_diag: why hull VMs ended, from the shims' lines in containerd's log (CI shows only this
# script's output, not $OUT).
vm_diag() {
	grep -E 'hull-vmm ended unexpectedly|hull-vmm log|TripleFault|VM ended|boot.*tim' "$OUT/containerd.log" |
		tail -n 6 | cut -c1-600 | sed 's/^/  diag: /'
}

r=/tmp/hull-ctr-lab
rm -rf "$r"
mkdir -p "$r"
# hull-vmm runs unprivileged and reaches /dev/kvm through its group, as udev's rule makes it
# on a node (scripts/install does the same); the lab has no udev.
getent group kvm >/dev/null || groupadd --system kvm
chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
A=$r/containerd.sock
write_hull_toml "$r/hull.toml" "$BIN" "$VMLINUX" "$INITRD" "$VIRTIOFSD"
containerd_config "$r/config.toml" "$r" "$A" 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'
start_containerd "$BIN" "$r/config.toml" "$OUT/containerd.log"
trap 'stop_containerd "$r"' EXIT
poll 300 ctr -a "$A" version
IMG=docker.io/library/hull-busybox:latest
import_image "$A" t "$r/busybox.tar"

# What a user sees, in one container per runtime (each hull run boots a VM, about a minute
# under nested KVM in the lab): stdout+stderr, a write to the rootfs (virtio-fs for hull), a
# read-only bind mount, the exit code; `uname -r` goes last. stdin is /dev/null here (the lab
# gives commands no stdin); stdin piping, signals and log URIs are covered by the host suite
# (tests/containerd_host.rs) until the lab is fast enough to repeat them per VM.
mkdir -p "$r/vol"
echo hello >"$r/vol/hello"
script='echo out; echo err >&2; echo data >/tmp/f && cat /tmp/f; cat /vol/hello
echo x >/vol/new 2>/dev/null && echo WROTE || echo refused; uname -r; exit 3'
declare -A res
for rt in runc hull; do
	ro=(--runtime "io.containerd.$rt.v2")
	[[ $rt == hull ]] && ro+=(--runtime-config-path "$r/hull.toml")
	t0=$(date +%s%N)
	# stdout and stderr apart: they travel in two streams, so their interleaving is timing.
	out=$(timeout 240 ctr -a "$A" -n t run --rm "${ro[@]}" \
		--mount "type=bind,src=$r/vol,dst=/vol,options=rbind:ro" "$IMG" "$rt-all" sh -c "$script" \
		2>"$r/$rt.err" </dev/null) && rc=0 || rc=$?
	echo "INFO: $rt: ctr run took $((($(date +%s%N) - t0) / 1000000)) ms, exit $rc"
	res[$rt.kernel]=${out##*$'\n'}
	res[$rt.out]=${out%$'\n'*} res[$rt.rc]=$rc res[$rt.err]=$(cat "$r/$rt.err")
done
if [[ ${res[hull.kernel]} == *-hull ]]; then
	pass "container in a hull VM: uname -r ${res[hull.kernel]} (runc: ${res[runc.kernel]})"
else
	flunk "hull guest kernel: '${res[hull.kernel]}'"
fi
for k in out err rc; do
	check "$k matches runc" "${res[runc.$k]}" "${res[hull.$k]}"
done
echo "INFO: stdout: ${res[hull.out]//$'\n'/|}; stderr: ${res[hull.err]//$'\n'/|}"

# stdin that ends: `cat` reads a line from ctr's stdin, a pipe that then closes; ctr sends
# CloseIO and cat must exit 0. ctr arms CloseIO only once the task (or exec) exists: a stdin
# that ends earlier is never closed, with runc too, so `feed` waits for it first.
# feed CHECK...: prints the line once CHECK succeeds (within 240 s).
feed() {
	poll 2400 "$@"
	printf 'hello\n'
}
# shellcheck disable=SC2317 # called through poll
task_is() { [[ $(ctr -a "$A" -n t task ls 2>/dev/null | awk -v id="$1" '$1 == id {print $3}') == "$2" ]]; }
# shellcheck disable=SC2317 # called through poll
task_gone_or_stopped() { [[ $(ctr -a "$A" -n t task ls 2>/dev/null | awk -v id="$1" '$1 == id {print $3}') =~ ^(|STOPPED)$ ]]; }
# shellcheck disable=SC2317 # called through poll
pod_gone() { [[ ! -e /run/hull/pods/$1 && ! -e /var/log/hull/pods/$1 ]]; }
for rt in runc hull; do
	ro=(--runtime "io.containerd.$rt.v2")
	[[ $rt == hull ]] && ro+=(--runtime-config-path "$r/hull.toml")
	out=$(feed task_is "$rt-stdin" RUNNING | timeout 300 ctr -a "$A" -n t run --rm "${ro[@]}" "$IMG" "$rt-stdin" cat 2>&1) && rc=0 || rc=$?
	check "$rt: ctr run: cat gets stdin, then EOF (CloseIO): output and exit code" "hello 0" "$out $rc"
done

# The rest of the task API on one hull pod with a 48 MiB memory limit: a log file, exec with
# and without a terminal, exec stdin, pause/resume, metrics from the guest's cgroup v2, an OOM
# kill (exit 137 and /tasks/oom), SIGKILL (137), and the events containerd received. Its
# rslave bind of a shared host directory (as kubelet's HostToContainer) must show what the
# host mounts there after the container started, and its release must leave that mount be.
# Its read-only bind's source has a tmpfs under it, read-only in the container too (hull makes
# read-only binds recursive; runc's `ro` leaves submounts writable).
# jail_checks SID: hull-vmm of the running pod SID is jailed (issue 17 §1) and virtiofsd runs
# with a reduced capability set.
jail_checks() {
	local sid=$1 vmm shim_pid uid ns a b caps p fs_caps=""
	vmm=$(pgrep -f "^$BIN/hull-vmm " | head -1)
	shim_pid=$(pgrep -f "^$BIN/containerd-shim-hull-v2 .*-id $sid" | head -1)
	if [[ -z $vmm || -z $shim_pid ]]; then
		flunk "jail: no hull-vmm ('$vmm') or shim ('$shim_pid') for $sid"
		return
	fi
	st() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$vmm/status"; }
	uid=$(st Uid)
	if [[ $uid =~ ^[0-9]+$ && $uid != 0 ]]; then pass "jail: hull-vmm runs as uid $uid"; else flunk "jail: hull-vmm uid '$uid'"; fi
	check "jail: hull-vmm gid is its uid" "$uid" "$(st Gid)"
	check "jail: hull-vmm's only extra group is /dev/kvm's" "$(stat -c %g /dev/kvm)" "$(st Groups)"
	check "jail: hull-vmm CapEff" 0000000000000000 "$(st CapEff)"
	check "jail: hull-vmm CapBnd" 0000000000000000 "$(st CapBnd)"
	check "jail: hull-vmm NoNewPrivs" 1 "$(st NoNewPrivs)"
	check "jail: hull-vmm Seccomp (filter)" 2 "$(st Seccomp)"
	check "jail: hull-vmm is PID 1 of its pid namespace" 1 "$(awk '$1 == "NSpid:" {print $NF}' "/proc/$vmm/status")"
	for ns in mnt pid net ipc uts; do
		a=$(readlink "/proc/$vmm/ns/$ns") b=$(readlink "/proc/$shim_pid/ns/$ns")
		if [[ -n $a && $a != "$b" ]]; then pass "jail: hull-vmm has its own $ns namespace"; else flunk "jail: hull-vmm $ns namespace $a, the shim's $b"; fi
	done
	check "jail: hull-vmm's root is the jail directory" "$(stat -c %d:%i "/run/hull/pods/$sid/jail")" "$(stat -Lc %d:%i "/proc/$vmm/root/")"
	check "jail: its root holds only what hull-vmm needs (api.sock: its API, for hullctl)" "api.sock dev fs.sock hull-vmm initrd kernel vsock.sock" \
		"$(find "/proc/$vmm/root/" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')"
	check "jail: its mount namespace holds the jail's mounts only" 6 "$(wc -l <"/proc/$vmm/mountinfo")"
	check "jail: RLIMIT_NOFILE" "1024 1024" "$(awk '/^Max open files/ {print $4, $5}' "/proc/$vmm/limits")"
	check "jail: the uid's marker names the pod" "$sid" "$(cat "/run/hull/jail-ids/$uid" 2>/dev/null)"
	if grep -q "\"uid\": $uid" "/run/hull/pods/$sid/pod.json"; then pass "jail: pod.json records the uid"; else flunk "jail: pod.json: $(cat "/run/hull/pods/$sid/pod.json")"; fi
	# No console.log: pods boot without a UART unless vm.guest_console is on.
	if [[ -e /var/log/hull/pods/$sid/vmm.log && ! -e /var/log/hull/pods/$sid/console.log &&
		-z $(ls /run/hull/pods/"$sid"/*.log 2>/dev/null) ]]; then
		pass "logs: vmm.log under /var/log/hull/pods/$sid, no console.log (no UART), none on /run"
	else
		flunk "logs: $(ls -l "/var/log/hull/pods/$sid" "/run/hull/pods/$sid" 2>&1 | tr '\n' ' ')"
	fi
	if "$BIN/hullctl" agent-health --uds "/run/hull/pods/$sid/jail/vsock.sock" >/dev/null 2>&1; then
		pass "jail: hullctl reaches the agent through <pod>/jail/vsock.sock"
	else
		flunk "jail: hullctl agent-health through /run/hull/pods/$sid/jail/vsock.sock"
	fi
	# virtiofsd keeps CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID (0xdb) at most:
	# MKNOD and SETFCAP of its defaults are dropped (--modcaps), root's others never held.
	for p in $(pgrep -f "^$VIRTIOFSD "); do
		caps=$(awk '$1 == "CapEff:" {print $2}' "/proc/$p/status")
		fs_caps+="$caps "
		(((16#$caps & ~16#db) == 0)) || fs_caps+="(too many) "
	done
	if [[ -n $fs_caps && $fs_caps != *"too many"* && $fs_caps == *00000000000000db* ]]; then
		pass "virtiofsd capabilities reduced: CapEff $fs_caps"
	else
		flunk "virtiofsd CapEff: '$fs_caps'"
	fi
}

ctr -a "$A" -n t events >"$r/events" 2>/dev/null &
evpid=$!
hr=(--runtime io.containerd.hull.v2 --runtime-config-path "$r/hull.toml")
prop=$r/prop
mkdir -p "$prop" && mount --bind "$prop" "$prop" && mount --make-shared "$prop"
mkdir -p "$prop/late"
rov=$r/rov
mkdir -p "$rov/sub" && mount -t tmpfs -o size=1m rosub "$rov/sub"
# The init logs one line to a file (--log-uri file://) before it sleeps.
if timeout 240 ctr -a "$A" -n t run -d "${hr[@]}" --memory-limit $((48 << 20)) --log-uri "file://$r/h-task.log" \
	--mount "type=bind,src=$prop,dst=/prop,options=rbind:rslave" \
	--mount "type=bind,src=$rov,dst=/rov,options=rbind:ro" \
	"$IMG" h-task sh -c 'echo started; exec sleep 1000' \
	>/dev/null 2>"$r/task.err" </dev/null; then
	jail_checks h-task
	out=$(timeout 60 ctr -a "$A" -n t task exec --exec-id e1 h-task sh -c 'echo exec-out; exit 5' 2>&1 </dev/null) && rc=0 || rc=$?
	check "exec: output and exit code" "exec-out 5" "$out $rc"
	# `ctr task ps`: a header, sleep, and cat once it started.
	# shellcheck disable=SC2317 # called through poll
	cat_started() { (($(ctr -a "$A" -n t task ps h-task 2>/dev/null | wc -l) >= 3)); }
	out=$(feed cat_started | timeout 60 ctr -a "$A" -n t task exec --exec-id in1 h-task cat 2>&1) && rc=0 || rc=$?
	check "exec: cat gets stdin, then EOF (CloseIO): output and exit code" "hello 0" "$out $rc"
	# The guest has looked at /prop/late before the host mounts on it.
	timeout 60 ctr -a "$A" -n t task exec --exec-id p1 h-task ls -a /prop/late >/dev/null 2>&1 </dev/null
	mount -t tmpfs -o size=1m late "$prop/late" && echo from-host >"$prop/late/f"
	out=$(timeout 60 ctr -a "$A" -n t task exec --exec-id p2 h-task sh -c \
		'for i in 1 2 3 4 5 6 7 8 9 10; do cat /prop/late/f 2>/dev/null && exit; sleep 1; done; exit 1' 2>&1 </dev/null) && rc=0 || rc=$?
	check "rslave bind: a host mount made under its source after the start reaches the container" "from-host 0" "$out $rc"
	# shellcheck disable=SC2016 # $f expands in the container's shell
	out=$(timeout 60 ctr -a "$A" -n t task exec --exec-id r1 h-task sh -c \
		'for f in /rov/f /rov/sub/f; do (echo x >"$f") 2>/dev/null && echo WROTE || echo refused; done' 2>&1 </dev/null)
	echo x >"$rov/sub/host" && out="$out host-wrote"
	check "ro bind: its source's submount is read-only in the container, writable on the host" \
		"refused refused host-wrote" "${out//$'\n'/ }"
	# ctr needs a terminal for -t: script(1) gives it one; CRs and the echoed ^@ of script's
	# /dev/null input are dropped. The sleep lets ctr's resize after start find the process.
	out=$(timeout 60 script -qec "ctr -a $A -n t task exec -t --exec-id e2 h-task sh -c 'test -t 0 && test -t 1 && test -e \"\$(tty)\" && echo tty; sleep 1; exit 4'" /dev/null </dev/null) && rc=0 || rc=$?
	out=${out//$'\r'/}
	check "exec -t: a terminal of the container's devpts, its exit code" "tty 4" "${out//^@/} $rc"
	status() { ctr -a "$A" -n t task ls 2>/dev/null | awk '$1 == "h-task" {print $3}'; }
	ctr -a "$A" -n t task pause h-task && check "pause" PAUSED "$(status)"
	ctr -a "$A" -n t task resume h-task && check "resume" RUNNING "$(status)"
	m=$(ctr -a "$A" -n t task metrics h-task 2>&1)
	metric() { awk -v k="$1" '$1 == k {print $2}' <<<"$m"; }
	if [[ $(metric memory.usage) -gt 0 && $(metric memory.usage_limit) == $((48 << 20)) && $(metric pids.current) -ge 1 ]]; then
		pass "metrics: memory.usage $(metric memory.usage), limit $(metric memory.usage_limit), pids $(metric pids.current)"
	else
		flunk "metrics: $m"
	fi
	# 64 MiB buffer in a 48 MiB cgroup: the guest's OOM killer ends dd.
	timeout 120 ctr -a "$A" -n t task exec --exec-id oom h-task dd if=/dev/zero of=/dev/null bs=64M count=1 \
		>/dev/null 2>&1 </dev/null && rc=0 || rc=$?
	check "OOM kill: exit status" 137 "$rc"
	check "log file (--log-uri file://)" started "$(cat "$r/h-task.log" 2>/dev/null)"
	ctr -a "$A" -n t task kill -s SIGKILL h-task
	for ((i = 0; i < 300; i++)); do [[ $(status) == STOPPED ]] && break; sleep 0.1; done
	ctr -a "$A" -n t task rm h-task >/dev/null && ctr -a "$A" -n t containers rm h-task
	sleep 1
	if mountpoint -q "$prop/late"; then
		pass "the pod's release left the host's mount under the rslave bind's source"
	else
		flunk "the pod's release unmounted the host's $prop/late"
	fi
	kill "$evpid"
	if grep -q '/tasks/exit .*"id":"h-task".*"exit_status":137' "$r/events"; then
		pass "kill -s SIGKILL: exit status 137"
	else
		flunk "no /tasks/exit of h-task with status 137: $(grep h-task "$r/events" | grep /tasks/exit)"
	fi
	for t in create start exec-added exec-started paused resumed oom exit delete; do
		if grep -q "/tasks/$t .*\"container_id\":\"h-task\"" "$r/events"; then pass "event /tasks/$t"; else flunk "no /tasks/$t event for h-task"; fi
	done
else
	flunk "run -d h-task: $(cat "$r/task.err")"
	kill "$evpid"
fi

umount -R "$prop" 2>/dev/null
umount "$rov/sub" 2>/dev/null

# Bidirectional propagation (rshared) cannot reach the host from a VM: refused, naming the
# mount, before a VM boots.
timeout 240 ctr -a "$A" -n t run --rm "${hr[@]}" --mount "type=bind,src=$r/vol,dst=/vol,options=rbind:rshared" \
	"$IMG" h-shared true >"$r/shared.out" 2>&1 </dev/null && rc=0 || rc=$?
if ((rc != 0)) && grep -qF "the bind mount of \"$r/vol\" at \"/vol\" asks for mount propagation rshared" "$r/shared.out"; then
	pass "rshared bind refused: $(grep -o 'asks for mount propagation rshared[^:]*' "$r/shared.out" | head -1)"
else
	flunk "rshared bind (exit $rc): $(tail -c 600 "$r/shared.out")"
fi

# Fault: hull-vmm killed under a running task → exit status 255, and nothing left behind.
# `ctr run` (this containerd has no `ctr task wait`) exits with the task's exit status.
timeout 300 ctr -a "$A" -n t run --rm --runtime io.containerd.hull.v2 \
	--runtime-config-path "$r/hull.toml" "$IMG" h-kill sleep 300 >"$r/h-kill.out" 2>&1 </dev/null &
kpid=$!
for ((i = 0; i < 900; i++)); do
	[[ $(ctr -a "$A" -n t task ls 2>/dev/null | awk '$1 == "h-kill" {print $3}') == RUNNING ]] && break
	kill -0 "$kpid" 2>/dev/null || break
	sleep 0.2
done
vmm=$(pgrep -f "^$BIN/hull-vmm " | head -1)
# Host memory of an idle pod, guest RAM excluded (the memfd mapping is the guest's, and it is
# sized by the pod): PSS in KiB of the shim, hull-vmm and virtiofsd (both of its processes).
pss() { awk '/^Pss:/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null; }
guest_pss() { awk '/^[0-9a-f]+-[0-9a-f]+ / {g = ($0 ~ /hull-guest-ram/)} g && /^Pss:/ {s += $2} END {print s + 0}' "/proc/$1/smaps" 2>/dev/null; }
if [[ -n $vmm ]]; then
	shim_pid=$(pgrep -f "^$BIN/containerd-shim-hull-v2 .*-id h-kill" | head -1)
	fsd=$(pgrep -f "^$VIRTIOFSD " | tr '\n' ' ')
	fs_pss=0
	for p in $fsd; do fs_pss=$((fs_pss + $(pss "$p"))); done
	echo "INFO: idle pod host PSS (KiB, debug build): shim $(pss "$shim_pid"), hull-vmm $(($(pss "$vmm") - $(guest_pss "$vmm"))) (+ guest RAM $(guest_pss "$vmm") touched), virtiofsd $fs_pss"
	kill -9 "$vmm"
	wait "$kpid" && w=0 || w=$?
	check "kill -9 hull-vmm → ctr run exits with the task's status 255" 255 "$w"
else
	kill "$kpid" 2>/dev/null
	wait "$kpid" && w=0 || w=$?
	flunk "no hull-vmm process for h-kill (ctr run exit $w: $(tail -n 3 "$r/h-kill.out" | cut -c1-400))"
fi

# Faults during boot and after it (issue 17 §1): kill -9 of hull-vmm or of the shim, then
# containerd removes the task; nothing may be left (checked below with the rest).
# pid_of SID PROG: the pid of the pod's shim, or of its hull-vmm (the only pod running).
pid_of() {
	case $2 in
	shim) pgrep -f "^$BIN/containerd-shim-hull-v2 .*-id $1" | head -1 ;;
	vmm) pgrep -f "^$BIN/hull-vmm " | head -1 ;;
	esac
}
# shellcheck disable=SC2317 # called through poll
vmm_up() { [[ -n $(pid_of "$1" vmm) ]]; }
for fault in vmm:boot shim:boot shim:running; do
	victim=${fault%%:*} when=${fault##*:} id=h-f-$victim-$when
	timeout 300 ctr -a "$A" -n t run -d "${hr[@]}" "$IMG" "$id" sleep 300 >"$r/$id.out" 2>&1 </dev/null &
	cpid=$!
	if [[ $when == boot ]]; then
		# hull-vmm exists, the agent does not answer yet (a boot takes about a minute here).
		poll 1200 vmm_up "$id" || flunk "$id: no hull-vmm appeared"
	else
		wait "$cpid"
		poll 100 task_is "$id" RUNNING || flunk "$id: not RUNNING"
	fi
	p=$(pid_of "$id" "$victim")
	if [[ -n $p ]] && kill -9 "$p"; then pass "$id: killed $victim ($p) while ${when/boot/booting}"; else flunk "$id: no $victim to kill"; fi
	wait "$cpid" 2>/dev/null
	# containerd notices the dead shim (or VM) and runs `shim delete`; then the task goes.
	timeout 60 ctr -a "$A" -n t task kill -s SIGKILL "$id" >/dev/null 2>&1
	poll 300 task_gone_or_stopped "$id"
	timeout 60 ctr -a "$A" -n t task rm -f "$id" >/dev/null 2>&1
	timeout 60 ctr -a "$A" -n t containers rm "$id" >/dev/null 2>&1
	poll 300 pod_gone "$id" || flunk "$id: pod state still there: $(ls -R "/run/hull/pods/$id" 2>&1 | head -5 | tr '\n' ' ')"
done

sleep 1
# Anchored at the start of the command line: this script's own arguments name the binaries.
left=$(pgrep -af "^($BIN/hull-vmm|$VIRTIOFSD|$BIN/containerd-shim-hull-v2) ")
check "no hull-vmm, virtiofsd or shim left" "" "$left"
check "no pod state (nor jail directory) left" "" "$(ls /run/hull/pods 2>/dev/null)"
check "no jail uid left in use" "" "$(ls /run/hull/jail-ids 2>/dev/null)"
check "no pod logs left" "" "$(ls /var/log/hull/pods 2>/dev/null)"
check "no mounts of hull pods left" "" "$(grep /run/hull /proc/self/mountinfo)"
check "no pod cgroup left" "" "$(ls -d /sys/fs/cgroup/t/h-* 2>/dev/null)"
if [[ $fail != 0 ]]; then
	echo "--- why hull VMs ended (containerd log) ---"
	vm_diag
fi
exit_if_guest_triple_faulted "$OUT/containerd.log"
exit $fail
