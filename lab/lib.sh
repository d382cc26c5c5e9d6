# lab/lib.sh: what the lab test scripts (CRATE/tests/lab/*.sh, run inside the lab by
# hull_tests::lab_script) share. Sourced, never run; bash only. A script sources it by its own
# path, which works inside the lab too (the host's root is the lab's, at the same paths):
#   . "$(dirname -- "${BASH_SOURCE[0]}")/../../../lab/lib.sh" || exit 1
# The checks print one `PASS: ...` or `FAIL: ...` line each (and `INFO: ...` lines); a script
# ends with `exit $fail`, which lab_script's caller asserts is 0.
# shellcheck shell=bash disable=SC2034 # its variables are the sourcing scripts'

# The repository (this file is <repo>/lab/lib.sh).
lab_repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

# --- checks ---------------------------------------------------------------------------------
# 1 once any check failed: the script's exit code.
fail=0
# A command run after each FAIL line when set (e.g. a snapshot of the VMM's threads).
on_flunk=
pass() { echo "PASS: $*"; }
flunk() {
	echo "FAIL: $*"
	fail=1
	[[ -z $on_flunk ]] || "$on_flunk"
}
info() { echo "INFO: $*"; }
check() { # check NAME EXPECTED ACTUAL
	if [[ $2 == "$3" ]]; then pass "$1"; else flunk "$1: expected '$2', got '$3'"; fi
}

# --- time and waiting -----------------------------------------------------------------------
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# ms_since T0: milliseconds since T0, a `date +%s%N` reading.
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
# poll N CMD...: runs CMD (its output dropped) every 0.1 s until it succeeds, N times at most;
# 0 once it succeeded. CMD may be a function of the script.
poll() {
	local n=$1 i
	shift
	for ((i = 0; i < n; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
# wait_for FILE PATTERN SECS: 0 once FILE has a line matching PATTERN (grep).
wait_for() { poll $(($3 * 10)) grep -q "$2" "$1"; }
# wait_gone PID SECS: 0 once PID has exited.
wait_gone() { poll $(($2 * 10)) lab_gone "$1"; }
lab_gone() { ! kill -0 "$1" 2>/dev/null; }

# --- guest memory ---------------------------------------------------------------------------
# guest_ram_kib PID: KiB the guest RAM memfd of hull-vmm PID holds (st_blocks), the host
# memory behind it. A mapping's RSS or PSS undercounts it once free page reporting punched
# holes that split 2 MiB pages (the rest stays in the file, unmapped until touched).
guest_ram_kib() {
	local f
	for f in /proc/"$1"/fd/*; do
		[[ $(readlink "$f") == /memfd:hull-guest-ram* ]] || continue
		echo $(($(stat -L -c %b "$f") / 2))
		return
	done
	echo 0
}
# guest_ram_settled PID: guest_ram_kib PID once it has held still for 4 s, at most 60 s. The
# guest reports freed memory 2 s after freeing it, then a batch every 2 s while some stays
# unreported, and the lab is slow.
guest_ram_settled() {
	local i prev=-1 same=0 kib=0
	for ((i = 0; i < 30 && same < 2; i++)); do
		sleep 2
		kib=$(guest_ram_kib "$1")
		if [[ $kib == "$prev" ]]; then same=$((same + 1)); else same=0; fi
		prev=$kib
	done
	echo "$kib"
}

# --- files ----------------------------------------------------------------------------------
# fresh_dir DIR: DIR, empty (stale files of an earlier run would satisfy a script's waits).
fresh_dir() {
	rm -rf "$1"
	mkdir -p "$1"
}

# --- guests ---------------------------------------------------------------------------------
# The guest kernel command line of hull-vmm boots (no i8042 probing, the console on
# ttyS0, a panic resets at once through the i8042: `reboot=k panic=1`), and its quiet form.
guest_cmdline="console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd"
guest_cmdline_quiet="$guest_cmdline quiet"

# busybox_initrd DIR CPIO [SUBDIR...] <INIT: a root in DIR with Debian's busybox-static at
# /bin/busybox, /dev, the SUBDIRs and stdin as /init, packed into the gzipped newc archive CPIO.
busybox_initrd() {
	local dir=$1 cpio=$2 d
	shift 2
	mkdir -p "$dir/bin" "$dir/dev"
	for d; do mkdir -p "$dir/$d"; done
	cp /bin/busybox "$dir/bin/busybox"
	cat >"$dir/init"
	chmod +x "$dir/init"
	(cd "$dir" && find . | cpio -o -H newc 2>/dev/null | gzip -n >"$cpio")
}

# thread_ticks PID: each of PID's threads with its state, CPU ticks and wait channel, sampled
# twice 2 s apart. vCPU threads that burn CPU mean a guest spinning (or re-faulting under the
# lab's emulated SVM); sleeping ones mean a guest waiting, e.g. for an interrupt.
thread_ticks() {
	local pid=$1 n t st f
	for n in 1 2; do
		for t in /proc/"$pid"/task/*; do
			st=$(sed 's/.*) //' "$t/stat" 2>/dev/null) || continue
			read -r -a f <<<"$st"
			echo "sample $n: $(cat "$t/comm" 2>/dev/null) state=${f[0]} cpu_ticks=$((f[11] + f[12])) wchan=$(cat "$t/wchan" 2>/dev/null)"
		done
		((n == 2)) || sleep 2
	done
}

# guest_triple_fault LOG [FROM]: prints the first hull guest triple fault (hull-vmm's
# `vCPU N: triple fault (KVM_EXIT_SHUTDOWN)`) that the shim logged in LOG, containerd's log,
# from line FROM on (default 1); prints nothing if there is none.
guest_triple_fault() {
	tail -n +"${2:-1}" "$1" | grep -o 'hull-vmm: vCPU [0-9]*: triple fault (KVM_EXIT_SHUTDOWN)' | head -n 1
}
# exit_if_guest_triple_faulted LOG: for a run that failed, exit 125 (a lab defect: rerun once)
# when LOG, containerd's log with the hull shim's lines, says a hull guest triple-faulted
# (`hull-vmm: vCPU N: triple fault`): the lab's emulated nested paging (lab/README.md) does so
# about once in a kubelet or CRI suite run on some days. A failure without it stays the
# script's, and so does a second run's.
exit_if_guest_triple_faulted() {
	((fail)) || return 0
	local hit
	hit=$(guest_triple_fault "$1")
	[[ -n $hit ]] || return 0
	echo "LAB-DEFECT: a hull guest triple-faulted during this run ($hit; lab/README.md): its FAIL lines are void, run it once more"
	exit 125
}

# vcpu_stuck_in_lab PID: whether a vCPU thread of hull-vmm PID is caught in the lab defect of
# lab/README.md (a guest stuck re-faulting under QEMU's emulated SVM): for 1 s of the lab
# kernel's KVM trace events on each vCPU thread, hundreds of exits all at one guest instruction,
# most of them nested page faults, every fault at one address (the others can only be the
# interrupts that keep arriving). A guest that spins or deadlocks on its own moves between
# instructions (a busy loop: ~750 exits/s at ~190 rips in the lab) or does not fault, and is
# not matched. Prints each vCPU's exit summary; returns 0 when one is stuck so, 1 otherwise
# (or when the trace events are missing).
vcpu_stuck_in_lab() {
	local pid=$1 tr=/sys/kernel/tracing t tid ev summary stuck=1
	[[ -e $tr/events/kvm/kvm_exit ]] || mount -t tracefs nodev "$tr" 2>/dev/null
	[[ -e $tr/events/kvm/kvm_exit/enable && -e $tr/events/kvm/kvm_page_fault/enable ]] || {
		info "no KVM trace events in the lab kernel: the vCPUs' exits are unknown"
		return 1
	}
	for t in /proc/"$pid"/task/*; do
		[[ $(cat "$t/comm" 2>/dev/null) == hull_vcpu* ]] || continue
		tid=${t##*/}
		echo 0 >"$tr/tracing_on"
		: >"$tr/trace"
		for ev in kvm_exit kvm_page_fault; do
			echo "common_pid == $tid" >"$tr/events/kvm/$ev/filter"
			echo 1 >"$tr/events/kvm/$ev/enable"
		done
		echo 1 >"$tr/tracing_on"
		sleep 1
		echo 0 >"$tr/tracing_on"
		for ev in kvm_exit kvm_page_fault; do
			echo 0 >"$tr/events/kvm/$ev/enable"
			echo 0 >"$tr/events/kvm/$ev/filter"
		done
		# "kvm_exit: vcpu N reason R rip 0x..", "kvm_page_fault: vcpu N rip 0x.. address 0x.."
		summary=$(awk '
			/ kvm_exit: / { for (i = 1; i < NF; i++) { if ($i == "reason") r = $(i + 1); if ($i == "rip") p = $(i + 1) }
				exits++; rip[p]++; if (r == "npf") npf++ }
			/ kvm_page_fault: / { for (i = 1; i < NF; i++) if ($i == "address") a[$(i + 1)]++; faults++ }
			END {
				nr = 0; for (x in rip) { nr++; at = x }
				na = 0; for (x in a) { na++; addr = x }
				printf "%d exits (%d npf) at %d rips, %d page faults at %d addresses", exits, npf, nr, faults, na
				if (nr == 1) printf "; every exit at rip %s", at
				if (na == 1) printf "; every fault at %s", addr
				stuck = exits >= 200 && nr == 1 && 2 * npf >= exits && na <= 1
				printf "%s\n", stuck ? "; STUCK" : ""
			}' "$tr/trace")
		info "vCPU thread $tid ($(cat "$t/comm")), 1 s of KVM exits: $summary"
		[[ $summary == *"; STUCK" ]] && stuck=0
	done
	: >"$tr/trace"
	return $stuck
}

# --- a private containerd -------------------------------------------------------------------
# Its root and state go on the lab's tmpfs /tmp: overlayfs cannot sit on the overlay root.

# write_hull_toml FILE BINDIR VMLINUX INITRD VIRTIOFSD: the shim's hull.toml for a test run
# (hull-vmm from BINDIR, 128 MiB guests, debug logs).
write_hull_toml() {
	cat >"$1" <<TOML
[vm]
vmm = "$2/hull-vmm"
kernel = "$3"
initrd = "$4"
default_memory_mib = 128
boot_timeout_secs = 120
[virtiofs]
virtiofsd = "$5"
[log]
level = "debug"
TOML
}

# containerd_config FILE DIR SOCK [LINE...]: a containerd config (version $config_version, default
# 2) with its root and state under DIR, serving on SOCK; each LINE is one more top-level key. A
# script appends its tables (`cat >>FILE`).
containerd_config() {
	local file=$1 dir=$2 sock=$3
	shift 3
	{
		echo "version = ${config_version:-2}"
		echo "root = \"$dir/root\""
		echo "state = \"$dir/state\""
		printf '%s\n' "$@"
		echo "[grpc]"
		echo "  address = \"$sock\""
	} >"$file"
}

# off_cpu0_cpus: the lab's CPUs but CPU 0 ("1-N"); nothing on a 1-CPU lab. Every crash of the
# lab's kernel kept in its logs (11 of 11 on 2026-12-06, lab/README.md) hit a hull vCPU thread
# running on CPU 0, so pods are kept off it where the lab crashed most.
off_cpu0_cpus() {
	local n
	n=$(nproc)
	((n > 1)) && echo "1-$((n - 1))"
}

# cgroup_off_cpu0 NAME: creates the cgroup /sys/fs/cgroup/NAME with the cpuset off_cpu0_cpus, so
# that every task placed in or under it runs off CPU 0. A cgroup move resets a task's affinity
# to its cpuset: a taskset of containerd alone does not outlive the shim's move of hull-vmm into
# the pod's cgroup.
cgroup_off_cpu0() {
	local cg=/sys/fs/cgroup/$1 cpus
	cpus=$(off_cpu0_cpus)
	[[ -n $cpus ]] || return 0
	echo +cpuset >/sys/fs/cgroup/cgroup.subtree_control &&
		mkdir -p "$cg" && echo "$cpus" >"$cg/cpuset.cpus"
}

# start_containerd BINDIR CONFIG LOG: containerd in the background, with BINDIR (the shim,
# hull-vmm) first on its PATH; sets ctrd to its PID. The shim runs hull-vmm jailed under an
# unprivileged uid that reaches /dev/kvm through its group: the lab's /dev/kvm gets udev's
# usual root:kvm 0660 first (the shim refuses a /dev/kvm only root can use).
# With LAB_PODS_OFF_CPU0=1 containerd, and so every shim, hull-vmm and container it starts, runs
# off the lab's CPU 0 (off_cpu0_cpus above) until moved into a cgroup.
start_containerd() {
	local -a pin=()
	getent group kvm >/dev/null || groupadd --system kvm
	chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
	[[ ${LAB_PODS_OFF_CPU0:-0} == 1 && -n $(off_cpu0_cpus) ]] && pin=(taskset -c "$(off_cpu0_cpus)")
	PATH=$1:$PATH "${pin[@]}" containerd --config "$2" >"$3" 2>&1 &
	ctrd=$!
}

# stop_containerd DIR: stops the containerd of start_containerd, unmounts whatever a failed run
# left mounted under DIR (rootfs, sandbox shm; deepest first) and removes DIR.
stop_containerd() {
	local m
	[[ -n ${ctrd:-} ]] && kill "$ctrd" 2>/dev/null && wait "$ctrd" 2>/dev/null
	awk -v p="$1/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	rm -rf "$1"
}

# import_image SOCK NS TAR [NAME [CMD...]]: scripts/mk-busybox-image's image (busybox, default
# name docker.io/library/hull-busybox:latest) into containerd's namespace NS; on failure a
# FAIL line and exit 1 (nothing else can run without it).
import_image() {
	local sock=$1 ns=$2 tar=$3
	shift 3
	"$lab_repo/scripts/mk-busybox-image" "$tar" "$@"
	ctr -a "$sock" -n "$ns" images import "$tar" >/dev/null || {
		flunk "image import ${tar##*/}"
		exit 1
	}
}
