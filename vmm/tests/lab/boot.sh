#!/usr/bin/env bash
# Runs inside the lab (lab/run -- bash vmm/tests/lab/boot.sh ...): boots the hull guest with
# hull-vmm several ways and prints one PASS/FAIL line per check, then a timing table.
# usage: boot.sh VMM HULLCTL VMLINUX BZIMAGE INITRD OUTDIR
set -u
VMM=$1 CTL=$2 VMLINUX=$3 BZIMAGE=$4 INITRD=$5 OUT=$6
mkdir -p "$OUT"
fail=0
pass() { echo "PASS: $*"; }
flunk() { echo "FAIL: $*"; fail=1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
CMDLINE="console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd quiet"

# boot_agent TAG KERNEL VCPUS [extra vmm args...]: boot to the agent, check health, SIGTERM.
boot_agent() {
	local tag=$1 kernel=$2 n=$3
	shift 3
	local d
	d=$(mktemp -d /tmp/hull-lab.XXXXXX)
	local t0 t1
	t0=$(now_ms)
	"$VMM" --kernel "$kernel" --initrd "$INITRD" --vcpus "$n" --mem-mib 256 --cmdline "$CMDLINE" \
		--vsock-uds "$d/v.sock" --console "$OUT/console-$tag.log" --boot-timer --metrics-on-exit \
		"$@" 2>"$OUT/vmm-$tag.err" &
	local pid=$!
	if "$CTL" agent-health --uds "$d/v.sock" --wait 180 >"$OUT/health-$tag.out" 2>&1; then
		t1=$(now_ms)
		pass "$tag: agent healthy after $((t1 - t0)) ms: $(head -1 "$OUT/health-$tag.out")"
	else
		flunk "$tag: agent-health: $(tail -2 "$OUT/health-$tag.out")"
	fi
	# Several concurrent streams through the same hybrid socket.
	local k ok=0
	for k in 1 2 3 4 5 6; do
		"$CTL" agent-health --uds "$d/v.sock" >"$OUT/health-$tag-$k.out" 2>&1 &
	done
	for k in 1 2 3 4 5 6; do wait -n && ok=$((ok + 1)); done
	[[ $ok == 6 ]] && pass "$tag: 6 concurrent health streams" || flunk "$tag: only $ok/6 concurrent streams ok"
	grep -q "starting as PID 1" "$OUT/console-$tag.log" &&
		pass "$tag: console captured: $(grep -m1 'starting as PID 1' "$OUT/console-$tag.log" | tr -d '\r')" ||
		flunk "$tag: agent banner not on the console"
	grep -q "guest agent ready" "$OUT/vmm-$tag.err" &&
		pass "$tag: boot timer: $(grep -m1 'guest agent ready' "$OUT/vmm-$tag.err")" ||
		flunk "$tag: no boot-timer write seen"
	if [[ $n -gt 1 ]]; then
		local cpus
		cpus=$(grep -m1 -o "Brought up [0-9]* node[s]*, [0-9]* CPUs" "$OUT/console-$tag.log" || true)
		[[ $cpus == *"$n CPUs"* ]] && pass "$tag: $cpus" || pass "$tag: (SMP line not printed with quiet)"
	fi
	kill -TERM "$pid"
	wait "$pid"
	local rc=$?
	[[ $rc == 0 ]] && pass "$tag: SIGTERM -> exit 0" || flunk "$tag: exit $rc after SIGTERM: $(tail -3 "$OUT/vmm-$tag.err")"
	[[ ! -e $d/v.sock ]] && pass "$tag: vsock socket removed" || flunk "$tag: $d/v.sock left behind"
	grep -m1 '^{' "$OUT/vmm-$tag.err" >"$OUT/metrics-$tag.json" || true
	rm -rf "$d"
}

boot_agent pvh-1cpu "$VMLINUX" 1
boot_agent pvh-2cpu "$VMLINUX" 2
boot_agent bzimage-1cpu "$BZIMAGE" 1

# A disk: the guest kernel must see it (vda, read-only flag honoured).
img=$(mktemp /tmp/hull-disk.XXXXXX)
truncate -s 8M "$img"
boot_agent disk-ro "$VMLINUX" 1 --disk "$img,ro"
grep -q "vda" "$OUT/console-disk-ro.log" && pass "disk-ro: guest sees vda" ||
	echo "INFO: disk-ro: no vda line on the (quiet) console"
rm -f "$img"

# Guest-initiated reboot: no initrd -> kernel panic -> panic=1 reboot via i8042 -> exit 0.
timeout 120 "$VMM" --kernel "$VMLINUX" --vcpus 1 --mem-mib 128 \
	--cmdline "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd" \
	--console "$OUT/console-panic.log" 2>"$OUT/vmm-panic.err"
rc=$?
[[ $rc == 0 ]] && grep -q "Kernel panic" "$OUT/console-panic.log" &&
	pass "guest reboot (panic=1, reboot=k) -> exit 0: $(tail -1 "$OUT/vmm-panic.err")" ||
	flunk "guest reboot: exit $rc: $(tail -2 "$OUT/vmm-panic.err")"

# Guest `reboot -f` from a busybox initrd -> exit 0.
if [[ -x /bin/busybox ]]; then
	r=$(mktemp -d /tmp/hull-rb.XXXXXX)
	mkdir -p "$r/root/bin" "$r/root/dev" "$r/root/proc"
	cp /bin/busybox "$r/root/bin/busybox"
	printf '#!/bin/busybox sh\n/bin/busybox echo guest-says-reboot\n/bin/busybox reboot -f\n' >"$r/root/init"
	chmod +x "$r/root/init"
	(cd "$r/root" && find . | cpio -o -H newc 2>/dev/null | gzip -n >"$r/rb.cpio.gz")
	for n in 1 2; do
		timeout 120 "$VMM" --kernel "$VMLINUX" --initrd "$r/rb.cpio.gz" --vcpus $n --mem-mib 128 \
			--cmdline "$CMDLINE" --console "$OUT/console-reboot-$n.log" 2>"$OUT/vmm-reboot-$n.err"
		rc=$?
		[[ $rc == 0 ]] && grep -q guest-says-reboot "$OUT/console-reboot-$n.log" &&
			pass "guest 'reboot -f' with $n vCPU(s) -> exit 0" ||
			flunk "guest reboot -f ($n vCPUs): exit $rc: $(tail -2 "$OUT/vmm-reboot-$n.err")"
	done
	rm -rf "$r"
fi

# Repeated boots leave no process or file behind.
before=$(ls /tmp | wc -l)
for i in 1 2 3; do
	d=$(mktemp -d /tmp/hull-rep.XXXXXX)
	"$VMM" --kernel "$VMLINUX" --initrd "$INITRD" --mem-mib 256 --cmdline "$CMDLINE" \
		--vsock-uds "$d/v.sock" --console off 2>/dev/null &
	pid=$!
	"$CTL" agent-health --uds "$d/v.sock" --wait 180 >/dev/null 2>&1 || flunk "repeat $i: no health"
	kill -TERM $pid
	wait $pid
	rmdir "$d" || flunk "repeat $i: files left in $d: $(ls -A "$d")"
done
after=$(ls /tmp | wc -l)
left=$(pgrep -c hull-vmm || true)
[[ $before == "$after" && $left == 0 ]] && pass "3 boots in a row: no process or file left" ||
	flunk "repeat: /tmp entries $before -> $after, hull-vmm processes left: $left"

echo "--- boot phases (µs since hull-vmm start; emulated lab, compare only as ratios) ---"
for f in "$OUT"/metrics-*.json; do
	[[ -s $f ]] || continue
	tag=${f##*/metrics-}
	tag=${tag%.json}
	python3 - "$f" "$tag" <<'PY' || true
import json, sys
m = json.load(open(sys.argv[1]))["boot"]
print(f"{sys.argv[2]:14} vm_created {m['vm_created_us']:>9} kernel_loaded {m['kernel_loaded_us']:>9} first_kvm_run {m['first_kvm_run_us']:>9} agent_ready(boot timer) {m['guest_boot_timer_us']:>10}")
PY
done
exit $fail
