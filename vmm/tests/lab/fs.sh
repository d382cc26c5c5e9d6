#!/usr/bin/env bash
# Runs inside the lab (lab/run -- bash vmm/tests/lab/fs.sh ...; see vmm/tests/lab_fs.rs):
# virtio-fs from hull-vmm (seccomp on) to a real virtiofsd. Prints one PASS/FAIL line per check
# and INFO lines with virtiofsd's memory; exits 1 on any FAIL.
#  1. A busybox initrd mounts tag "hull", reads a host file, writes one back, sees a file the
#     host adds while it runs; then virtiofsd is killed and hull-vmm must end with an error.
# The real guest with a container rootfs on virtio-fs, through containerd and the shim, is
# shim/tests/lab_containerd.rs.
# usage: fs.sh VMM VMLINUX VIRTIOFSD OUTDIR
set -u
VMM=$1 VMLINUX=$2 VFSD=$3 OUT=$4
# shellcheck source-path=SCRIPTDIR source=../../../lab/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../../../lab/lib.sh" || exit 1
fresh_dir "$OUT"

work=$(mktemp -d /tmp/hull-fs-lab.XXXXXX)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT

# start_vfsd NAME: virtiofsd serving $work/NAME-share on $work/NAME.sock; sets vfsd.
start_vfsd() {
	local name=$1
	mkdir -p "$work/$name-share"
	"$VFSD" --socket-path="$work/$name.sock" --shared-dir="$work/$name-share" --sandbox=none \
		--cache=auto --thread-pool-size=0 --log-level=warn 2>"$OUT/virtiofsd-$name.log" &
	vfsd=$!
	pids+=("$vfsd")
	poll 100 test -S "$work/$name.sock" && return 0
	flunk "$name: no virtiofsd socket after 10 s: $(tail -3 "$OUT/virtiofsd-$name.log")"
	return 1
}

# mem_of PID: RSS and PSS from smaps, without the mapped guest RAM (the memfd hull-vmm shares).
mem_of() {
	awk '/^[0-9a-f]+-[0-9a-f]+ /{g = ($0 ~ /memfd:hull-guest-ram/)}
		/^Rss:/{r += $2; if (g) gr += $2} /^Pss:/{p += $2; if (g) gp += $2}
		END{printf "non-guest RSS %d KiB, PSS %d KiB (guest RAM mapped: RSS %d KiB, PSS %d KiB)", r - gr, p - gp, gr, gp}' \
		"/proc/$1/smaps"
}

# --- 1. busybox initrd --------------------------------------------------------------------
start_vfsd bb || exit 1
echo hello-from-host >"$work/bb-share/from-host"
r=$work/bb
busybox_initrd "$r/root" "$r/bb.cpio.gz" proc mnt <<'INIT'
#!/bin/busybox sh
B=/bin/busybox
$B mount -t devtmpfs dev /dev
$B mount -t proc proc /proc
if $B mount -t virtiofs hull /mnt; then $B echo fs-mounted; else $B echo fs-mount-failed; fi
$B echo "host-file: $($B cat /mnt/from-host)"
$B echo guest-wrote-this >/mnt/from-guest && $B echo fs-wrote
$B echo "fs-ready $($B grep -c virtiofs /proc/mounts)"
i=0
while [ $i -lt 120 ]; do
	if [ -e /mnt/late ]; then
		$B echo "late: $($B cat /mnt/late)"
		$B echo seen >/mnt/late-seen
		break
	fi
	$B sleep 1
	i=$((i + 1))
done
while :; do $B sleep 10; done
INIT
con=$OUT/console-bb.log
t0=$(date +%s%N)
"$VMM" --kernel "$VMLINUX" --initrd "$r/bb.cpio.gz" --mem-mib 256 --cmdline "$guest_cmdline_quiet" \
	--console "$con" --fs "$work/bb.sock" --metrics-on-exit 2>"$OUT/vmm-bb.err" &
vmm=$!
pids+=("$vmm")
if wait_for "$con" fs-ready 180; then
	pass "busybox guest reached the share after $(ms_since "$t0") ms"
	grep -q fs-mounted "$con" && pass "guest mounts virtio-fs tag hull" || flunk "mount: $(grep -m1 fs-mount "$con")"
	grep -q "host-file: hello-from-host" "$con" && pass "guest reads a host file" ||
		flunk "host file in guest: $(grep -m1 host-file "$con" | tr -d '\r')"
	[[ $(cat "$work/bb-share/from-guest" 2>/dev/null) == guest-wrote-this ]] &&
		pass "host reads the file the guest wrote" || flunk "guest file not on the host"
	echo late-from-host >"$work/bb-share/late"
	if wait_for "$con" "late: late-from-host" 30 && wait_for "$work/bb-share/late-seen" seen 10; then
		pass "file added on the host at run time seen by the guest, and its answer by the host"
	else
		flunk "run-time exchange: $(tail -2 "$con" | tr -d '\r')"
	fi
	sleep 2
	echo "INFO: virtiofsd idle after mount (busybox guest): $(mem_of "$vfsd")"
	grep -E '^(Rss|Pss|Pss_Anon|Pss_File|Pss_Shmem|Shared_Clean|Private_Dirty):' "/proc/$vfsd/smaps_rollup" |
		tr -s ' ' | paste -sd' ' | sed 's/^/INFO: virtiofsd smaps_rollup (guest RAM included): /'
	echo "INFO: virtiofsd threads: $(ls /proc/$vfsd/task | wc -l); hull-vmm: $(mem_of "$vmm")"
	# A dead back end must end the VM (the guest's file system would hang otherwise).
	kill -KILL "$vfsd"
	wait "$vfsd" 2>/dev/null
	if wait_gone "$vmm" 20; then
		wait "$vmm"
		rc=$?
		[[ $rc == 1 ]] && grep -q "virtio-fs back end at .* closed the connection" "$OUT/vmm-bb.err" &&
			pass "virtiofsd killed -> hull-vmm exit 1: $(grep -m1 'closed the connection' "$OUT/vmm-bb.err")" ||
			flunk "after virtiofsd died: exit $rc: $(tail -2 "$OUT/vmm-bb.err")"
		m=$(grep -m1 '^{' "$OUT/vmm-bb.err")
		python3 - "$m" <<'PY' && pass "metrics: fs device activated, 2 vrings started" || flunk "fs metrics: $m"
import json, sys
d = [x for x in json.loads(sys.argv[1])["devices"] if x["type"] == 26]
assert len(d) == 1 and d[0]["activated"] and d[0]["metrics"]["vrings_started"] == 2, d
PY
	else
		flunk "hull-vmm still running 20 s after virtiofsd was killed"
	fi
else
	flunk "busybox guest never reached the share: $(tail -3 "$con" | tr -d '\r') / $(tail -2 "$OUT/vmm-bb.err")"
fi
kill -KILL "$vmm" "$vfsd" 2>/dev/null

exit $fail
