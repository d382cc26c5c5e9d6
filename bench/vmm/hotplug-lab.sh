#!/usr/bin/env bash
# Runs inside the lab for bench/vmm/hotplug.
# usage: hotplug-lab.sh BINDIR VMLINUX INITRD OUT BOOTS ROUNDS [BASELINE_KERNEL]
set -u
BIN=$1 VMLINUX=$2 INITRD=$3 OUT=$4 BOOTS=$5 ROUNDS=$6 BASE=${7:-}
. "$(dirname -- "${BASH_SOURCE[0]}")/../../lab/lib.sh" || exit 1
thp=/sys/kernel/mm/transparent_hugepage
[[ -w $thp/shmem_enabled ]] && echo advise >"$thp/shmem_enabled"
p50() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }

# boot KIND KERNEL ARGS...: one boot to agent-ready; appends "ms rss_kib guest_kib" to $OUT/KIND.
boot() {
	local kind=$1 kernel=$2 d t0 pid ms
	shift 2
	d=$(mktemp -d /tmp/hp-bench.XXXXXX)
	t0=$(date +%s%N)
	"$BIN/hull-vmm" --kernel "$kernel" --initrd "$INITRD" --mem-mib 256 --cmdline "$guest_cmdline_quiet" \
		--vsock-uds "$d/v.sock" --console off "$@" 2>"$OUT/vmm-$kind.err" &
	pid=$!
	if "$BIN/hullctl" agent-health --uds "$d/v.sock" --wait 120 >/dev/null 2>&1; then
		ms=$(ms_since "$t0")
		sleep 2
		awk -v ms="$ms" '/memfd:hull-guest-ram/{g=1;next} /^[0-9a-f]+-[0-9a-f]+ /{g=0} /^Rss:/{t+=$2; if(g) gr+=$2}
			END{print ms, t-gr, gr}' "/proc/$pid/smaps" >>"$OUT/$kind"
	else
		echo "bench: $kind boot failed: $(tail -2 "$OUT/vmm-$kind.err")" >&2
	fi
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	rm -rf "$d"
}
rm -f "$OUT"/plain "$OUT"/vcpus4 "$OUT"/vcpus32 "$OUT"/mem16g "$OUT"/baseline
for ((i = 0; i < BOOTS; i++)); do
	boot plain "$VMLINUX"
	boot vcpus4 "$VMLINUX" --max-vcpus 4
	boot vcpus32 "$VMLINUX" --max-vcpus 32
	boot mem16g "$VMLINUX" --hotplug-mib 16384
	[[ -n $BASE ]] && boot baseline "$BASE"
done
col() { cut -d' ' -f"$2" "$OUT/$1" 2>/dev/null | p50; }
row() { echo "| $2 | $(col "$1" 1) ms | $(col "$1" 2) KiB | $(col "$1" 3) KiB |"; }
echo "### Cost of the reserve and the kernel (1 vCPU, 256 MiB guest; $BOOTS boots each, alternating; p50)"
echo
echo "| guest | exec → agent ready | hull-vmm non-guest RSS | guest RAM backed |"
echo "|---|---|---|---|"
row plain "this kernel, no reserve"
row vcpus4 "this kernel, 4 vCPUs declared (--max-vcpus 4)"
row vcpus32 "this kernel, 32 vCPUs declared (--max-vcpus 32)"
row mem16g "this kernel, a 16 GiB virtio-mem region (--hotplug-mib 16384)"
[[ -n $BASE ]] && row baseline "baseline kernel ($(basename "$(dirname "$BASE")")), no reserve"
echo

# Growth: a busybox guest with 1 of 2 vCPUs and a 1 GiB region (never tries an ungranted CPU).
r=$(mktemp -d /tmp/hp-grow.XXXXXX)
busybox_initrd "$r/hp" "$r/hp.cpio.gz" proc sys <"$(dirname -- "${BASH_SOURCE[0]}")/../../vmm/tests/lab/hotplug-init.sh"
: >"$OUT/grow"
for ((i = 0; i < ROUNDS; i++)); do
	"$BIN/hull-vmm" --kernel "$VMLINUX" --initrd "$r/hp.cpio.gz" --vcpus 1 --max-vcpus 2 --mem-mib 256 \
		--hotplug-mib 1024 --cmdline "$guest_cmdline HP_SKIP_UNGRANTED=1" --console "$OUT/console-grow.log" \
		--api-sock "$r/api.sock" --boot 2>"$OUT/vmm-grow.err" &
	pid=$!
	poll 300 test -S "$r/api.sock"
	# Once the guest's init has taken its baseline.
	poll 1200 grep -q "hp: boot" "$OUT/console-grow.log"
	"$BIN/hullctl" api --sock "$r/api.sock" PUT /hotplug/vcpus '{"count":2}' >/dev/null
	t0=$(date +%s%N)
	"$BIN/hullctl" api --sock "$r/api.sock" PUT /hotplug/memory '{"size_mib":1024}' >/dev/null
	poll 1200 sh -c "'$BIN/hullctl' api --sock '$r/api.sock' GET /hotplug | grep -q '\"plugged_bytes\":1073741824'"
	mem_ms=$(ms_since "$t0")
	timeout 300 tail --pid="$pid" -f /dev/null
	wait "$pid" 2>/dev/null
	cpu_ms=$(sed -n 's/.*cpu1 online in \([0-9]*\) ms.*/\1/p' "$OUT/console-grow.log" | head -1)
	grew=$(grep -o 'grew_kb=[0-9]*' "$OUT/console-grow.log" | cut -d= -f2)
	echo "${mem_ms:-?} ${cpu_ms:-?} ${grew:-?}" >>"$OUT/grow"
	rm -f "$r/api.sock"
done
rm -rf "$r"
echo "### Growing a running guest ($ROUNDS rounds, a fresh VM each; p50)"
echo
echo "| step | p50 | rounds (ms) |"
echo "|---|---|---|"
echo "| +1 GiB: PUT /hotplug/memory → 1 GiB plugged (host) | $(cut -d' ' -f1 "$OUT/grow" | p50) ms | $(cut -d' ' -f1 "$OUT/grow" | tr '\n' ' ') |"
echo "| +1 vCPU: guest onlines the granted vCPU (10 ms ticks) | $(cut -d' ' -f2 "$OUT/grow" | p50) ms | $(cut -d' ' -f2 "$OUT/grow" | tr '\n' ' ') |"
echo "| MemTotal grew by (KiB) | $(cut -d' ' -f3 "$OUT/grow" | p50) | |"
