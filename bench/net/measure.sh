# bench/net/measure.sh: pod network throughput and request/response latency, hull pod vs
# runc pod, each against the lab host over the CNI bridge. Sourced by
# tests/cri/lab/cri_vm.sh when CRI_NET_BENCH=1 (bench/net/run), so the pods are the ones the CRI
# suite builds; it uses the suite's helpers (in_ctr, info, pods/podip/c1/podrt) and prints
# `BENCH: ` lines: a Markdown table. Lab timings are emulated: only the ratios mean anything.

# Bytes per transfer, and transfers per direction (the median is kept).
NB_BYTES=$((16 << 20))
NB_RUNS=3
# Sequential HTTP request/responses per latency sample.
NB_RR=30

# median of the arguments (numbers).
nb_median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# nb_time_ms CMD...: runs CMD (stdout discarded), prints its wall time in ms, or "fail".
nb_time_ms() {
	local t0
	t0=$(date +%s%N)
	if "$@" >/dev/null 2>&1; then ms_since "$t0"; else echo fail; fi
}

# nb_rate MS: MB/s of NB_BYTES in MS milliseconds ("-" for a failed one).
nb_rate() { [[ $1 =~ ^[0-9]+$ && $1 -gt 0 ]] && awk -v b="$NB_BYTES" -v ms="$1" 'BEGIN {printf "%.1f", b / 1e3 / ms}' || echo "-"; }

# nb_pod KEY: prints "down_ms up_ms rr_ms" for pod KEY (medians; "fail" for a broken one).
nb_pod() {
	local key=$1 rt=${podrt[$1]:-$1} ip=${podip[$1]} id=${c1[$1]} i t got
	local -a down=() up=() rr=()
	# Pod -> host: the pod serves NB_BYTES of zeros per connection, the host reads them.
	# The server stays (-ll): a caller with another NB_BYTES sets its own NB_PORT.
	local port=${NB_PORT:-9100}
	in_ctr "$rt" "$id" sh -c "{ nc -ll -p $port -e head -c $NB_BYTES /dev/zero </dev/null >/dev/null 2>&1 & }" ||
		{ echo "fail fail fail"; return; }
	sleep 1
	for ((i = 0; i < NB_RUNS; i++)); do
		t=$(date +%s%N)
		got=$(timeout 300 busybox nc "$ip" "$port" </dev/null | wc -c)
		((got == NB_BYTES)) && down+=("$(ms_since "$t")") || down+=(fail)
	done
	# Host -> pod: the host serves, the pod reads; the exec's own cost is measured apart and
	# taken off.
	local exec_ms
	exec_ms=$(nb_time_ms in_ctr "$rt" "$id" true)
	for ((i = 0; i < NB_RUNS; i++)); do
		t=$(date +%s%N)
		got=$(in_ctr "$rt" "$id" sh -c "timeout 300 nc 10.88.0.1 9101 </dev/null | wc -c" 2>/dev/null)
		if [[ $got == "$NB_BYTES" && $exec_ms != fail ]]; then
			up+=("$(($(ms_since "$t") - exec_ms))")
		else
			up+=(fail)
		fi
	done
	# Request/response: NB_RR sequential HTTP GETs of a small file (a TCP connection each).
	for ((i = 0; i < NB_RUNS; i++)); do
		t=$(date +%s%N)
		local j ok=1
		for ((j = 0; j < NB_RR; j++)); do
			[[ $(http_get "$ip" 8080 /f 2>/dev/null) == "from-$key-pod" ]] || ok=0
		done
		((ok)) && rr+=("$(($(ms_since "$t") / NB_RR))") || rr+=(fail)
	done
	echo "$(nb_median "${down[@]}") $(nb_median "${up[@]}") $(nb_median "${rr[@]}")"
}

# net_bench: both pods, then the table.
net_bench() {
	busybox nc -ll -p 9101 -e head -c "$NB_BYTES" /dev/zero </dev/null >/dev/null 2>&1 &
	local server=$! r_runc r_hull
	sleep 0.5
	read -ra r_runc <<<"$(nb_pod runc)"
	read -ra r_hull <<<"$(nb_pod hull)"
	kill "$server" 2>/dev/null
	local mib=$((NB_BYTES >> 20))
	# MB/s from ms, and the ratio hull/runc (throughput: >1 is hull faster; latency: >1 is hull slower).
	nb_ratio() { [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}' || echo "-"; }
	local dr dh ur uh
	dr=$(nb_rate "${r_runc[0]}") dh=$(nb_rate "${r_hull[0]}")
	ur=$(nb_rate "${r_runc[1]}") uh=$(nb_rate "${r_hull[1]}")
	echo "BENCH: ## Pod network in the lab: hull pod vs runc pod, same run (median of $NB_RUNS)"
	echo "BENCH: "
	echo "BENCH: | measure | runc | hull | hull/runc |"
	echo "BENCH: |---|---|---|---|"
	echo "BENCH: | pod → host TCP, $mib MiB (MB/s) | $dr | $dh | $(nb_ratio "$dh" "$dr") |"
	echo "BENCH: | host → pod TCP, $mib MiB (MB/s) | $ur | $uh | $(nb_ratio "$uh" "$ur") |"
	echo "BENCH: | HTTP request/response host → pod, new connection each (ms) | ${r_runc[2]} | ${r_hull[2]} | $(nb_ratio "${r_hull[2]}" "${r_runc[2]}") |"
}

# The hull pod's network while a second hull pod floods the host (pod → host TCP: the flooder
# serves zeros without end, the host pulls them in a loop): alone, next to the flooder without a
# limit, and next to it once hull-vmm's API has limited its NIC at runtime to NB_FLOOD_LIMIT
# bytes/s out of the pod (vmm/API.md, Rate limits). Per-VM limits are what keeps one pod's I/O
# from taking the node's. 4 MiB transfers, median of NB_RUNS.
NB_FLOOD_LIMIT=200000

# nb_pod_down_rr KEY: "down_ms rr_ms" for pod KEY (nb_pod's host → pod leg fails at once: its
# server is gone).
nb_pod_down_rr() {
	local -a r
	read -ra r <<<"$(nb_pod "$1")"
	echo "${r[0]} ${r[2]}"
}

# flood_tx SOCK: the flooder's NIC's tx_bytes now (hull_vmm_net_tx_bytes_total, index 0).
flood_tx() {
	timeout 10 "$BIN/hullctl" api --sock "$1" GET /metrics/prometheus 2>/dev/null |
		sed -n 's/^hull_vmm_net_tx_bytes_total{index="0"} //p'
}

# flood_phase SOCK: "down_ms rr_ms flooder_kB/s" for the hull pod while the flooder runs.
flood_phase() {
	local b0 b1 t0 r
	b0=$(flood_tx "$1") t0=$(date +%s%N)
	r=$(nb_pod_down_rr hull)
	b1=$(flood_tx "$1")
	echo "$r $(awk -v a="${b0:-0}" -v b="${b1:-0}" -v ms="$(ms_since "$t0")" 'BEGIN {printf "%.0f", (b - a) / ms}')"
}

net_flood_bench() {
	local NB_BYTES=$((4 << 20)) NB_PORT=9103
	local flood_sock puller alone with limited
	alone=$(nb_pod_down_rr hull)
	mini_pod flood hull || return
	flood_sock=/run/hull/pods/${pods[flood]}/jail/api.sock
	in_ctr hull "${c1[flood]}" sh -c "{ nc -ll -p 9102 -e cat /dev/zero </dev/null >/dev/null 2>&1 & }"
	sleep 1
	(while :; do busybox nc "${podip[flood]}" 9102 </dev/null >/dev/null 2>&1; done) &
	puller=$!
	sleep 2
	with=$(flood_phase "$flood_sock")
	timeout 10 "$BIN/hullctl" api --sock "$flood_sock" PUT /net/0/rate_limits \
		"{\"tx\": {\"bytes\": {\"rate\": $NB_FLOOD_LIMIT}}}" >/dev/null 2>&1 ||
		info "flood bench: the limit could not be set"
	sleep 2
	limited=$(flood_phase "$flood_sock")
	kill "$puller" 2>/dev/null
	wait "$puller" 2>/dev/null
	teardown flood
	local a w l
	read -ra a <<<"$alone"
	read -ra w <<<"$with"
	read -ra l <<<"$limited"
	echo "BENCH: "
	echo "BENCH: ## The hull pod next to a flooding hull pod (lab, median of $NB_RUNS)"
	echo "BENCH: "
	echo "BENCH: | | alone | flooder unlimited | flooder limited to $((NB_FLOOD_LIMIT / 1000)) kB/s |"
	echo "BENCH: |---|---|---|---|"
	echo "BENCH: | hull pod → host TCP, $((NB_BYTES >> 20)) MiB (MB/s) | $(nb_rate "${a[0]}") | $(nb_rate "${w[0]}") | $(nb_rate "${l[0]}") |"
	echo "BENCH: | hull pod HTTP request/response (ms) | ${a[1]} | ${w[1]} | ${l[1]} |"
	echo "BENCH: | flooder → host meanwhile (kB/s, its NIC's counter) | - | ${w[2]} | ${l[2]} |"
}
