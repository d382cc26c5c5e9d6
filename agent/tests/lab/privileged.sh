#!/usr/bin/env bash
# Runs inside the lab (see agent/tests/lab_privileged.rs): what privileged containers and
# setuid binaries get in a hull guest, next to runc, through a private containerd (`ctr run`
# → containerd-shim-hull-v2 → hull-vmm + virtiofsd → the hull guest).
#  - network: bridges (busybox brctl and `ip link`), veth, VLAN, macvlan, ipvlan, tun/tap,
#    iptables-nft (nat REDIRECT, owner, conntrack), iptables-legacy, nft (table, nat chain,
#    ct rule), in a privileged container and in one with only NET_ADMIN added; in the
#    privileged one also an overlayfs mount.
#  - setuid: as uid 1000, a setuid-root binary runs with euid 0, a setgid-42 one with egid 42
#    and one with the file capability cap_net_raw+ep with CapEff 0x2000, with no_new_privs
#    off (`--allow-new-privs`, allowPrivilegeEscalation: true); with no_new_privs on (ctr's
#    default) none of them gains anything. Each is run by the container's own shell (the image
#    `user1000`) on runc and hull alike, and exec'd (`ctr task exec --user`) on hull: runc's
#    exec cannot be compared in the lab (lab/README.md).
# Prints one PASS/FAIL line per check (INFO lines carry runc's results); exits 1 on any FAIL.
# usage: privileged.sh BINDIR VMLINUX INITRD VIRTIOFSD OUTDIR   (BINDIR: the shim, hull-vmm)
set -u
BIN=$1 VMLINUX=$2 INITRD=$3 VIRTIOFSD=$4 OUT=$5
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=../../../lab/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../../../lab/lib.sh" || exit 1
fresh_dir "$OUT"

r=/tmp/hull-priv-lab
rm -rf "$r"
mkdir -p "$r"
A=$r/containerd.sock
write_hull_toml "$r/hull.toml" "$BIN" "$VMLINUX" "$INITRD" "$VIRTIOFSD"
containerd_config "$r/config.toml" "$r" "$A" 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'
start_containerd "$BIN" "$r/config.toml" "$OUT/containerd.log"
trap 'stop_containerd "$r"' EXIT
poll 300 ctr -a "$A" version || {
	flunk "containerd did not start: $(tail -n 5 "$OUT/containerd.log")"
	exit 1
}
IMG=docker.io/library/hull-priv-test:latest
IMG_USER=docker.io/library/hull-priv-test:user1000 # the same, run as 1000:1000
cc -static -O2 -o "$r/creds" "$here/privhelper.c" || {
	flunk "build the credentials helper"
	exit 1
}
if ! "$here/mk-priv-image.sh" "$r/image.tar" "$IMG" "$r/creds" "$IMG_USER" ||
	! ctr -a "$A" -n t images import "$r/image.tar" >/dev/null; then
	flunk "build and import the test image"
	exit 1
fi

# runtime_opts RT: ctr run's options for runtime RT (runc or hull).
runtime_opts() {
	opts=(--runtime "io.containerd.$1.v2")
	[[ $1 == hull ]] && opts+=(--runtime-config-path "$r/hull.toml")
}

# The network checks, one `name=ok` or `name=error: ...` line each, with iproute2's ip (busybox's
# knows no veth peers or ipvlan). $1 = full also runs the checks that need more than NET_ADMIN
# (tun/tap needs /dev/net/tun, overlayfs CAP_SYS_ADMIN).
# shellcheck disable=SC2016 # expanded by the container's shell
net_script='
PATH=/usr/sbin:/bin
ip=/usr/sbin/ip
c() { n=$1; shift; if "$@" >/dev/null 2>/tmp/err; then echo "$n=ok"; else echo "$n=error: $(head -c 160 /tmp/err | tr "\n" " ")"; fi; }
c brctl-addbr brctl addbr foobar
c bridge $ip link add hbr0 type bridge
c veth $ip link add hv0 type veth peer name hv1
c vlan $ip link add link hv0 name hv0.10 type vlan id 10
c macvlan $ip link add link hv0 name hmv0 type macvlan mode bridge
c ipvlan $ip link add link hv1 name hiv0 type ipvlan mode l2
c bridge-port sh -c "$ip link add hv2 type veth peer name hv3 && $ip link set hv2 master hbr0"
c iptables-nft-redirect iptables-nft -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001
c iptables-nft-owner iptables-nft -t nat -A OUTPUT -m owner --uid-owner 1337 -j RETURN
c iptables-nft-conntrack iptables-nft -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
c iptables-nft-masquerade iptables-nft -t nat -A POSTROUTING -o hv0 -j MASQUERADE
c iptables-nft-mangle-mark iptables-nft -t mangle -A PREROUTING -p tcp -j MARK --set-mark 0x539
c iptables-legacy-redirect iptables-legacy -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 15006
c nft-table nft add table inet hulltest
c nft-nat-chain nft "add chain inet hulltest out { type nat hook output priority -100; }"
c nft-ct-rule nft add rule inet hulltest out ct state established accept
if [ "$1" = full ]; then
	c tuntap $ip tuntap add dev htap0 mode tap
	c overlayfs sh -c "mkdir -p /mnt && mount -t tmpfs t /mnt && mkdir /mnt/l /mnt/u /mnt/w /mnt/m && mount -t overlay o -o lowerdir=/mnt/l,upperdir=/mnt/u,workdir=/mnt/w /mnt/m"
fi
'
declare -A res
# net RT KIND CTR-OPTS...: runs the network checks in one container of runtime RT.
net() {
	local rt=$1 kind=$2 t0 out rc
	shift 2
	runtime_opts "$rt"
	t0=$(date +%s%N)
	out=$(timeout 300 ctr -a "$A" -n t run --rm "${opts[@]}" "$@" "$IMG" "$rt-net-$kind" \
		sh -c "$net_script" sh "$kind" 2>"$OUT/$rt-net-$kind.err" </dev/null) && rc=0 || rc=$?
	info "$rt $kind: ctr run exit $rc in $(ms_since "$t0") ms"
	res[$rt.$kind]=$out
	echo "$out" >"$OUT/$rt-net-$kind.out"
}
for rt in runc hull; do
	net "$rt" full --privileged
	net "$rt" netadmin --cap-add CAP_NET_ADMIN
done
# Privileged: everything works under hull; runc's result alongside.
while IFS="=" read -r name val; do
	[[ -n $name ]] || continue
	runc_val=$(sed -n "s/^$name=//p" <<<"${res[runc.full]}")
	check "privileged: $name (runc: $runc_val)" ok "$val"
done <<<"${res[hull.full]}"
[[ -n ${res[hull.full]} ]] || flunk "privileged hull container printed nothing: $(cat "$OUT/hull-net-full.err")"
# NET_ADMIN only: the same results as runc, check by check.
check "NET_ADMIN only: every check as on runc" "${res[runc.netadmin]}" "${res[hull.netadmin]}"
info "NET_ADMIN only, hull: ${res[hull.netadmin]//$'\n'/; }"

# Setuid, setgid and file capabilities as uid 1000, with no_new_privs off and on.
# shellcheck disable=SC2317 # called through poll
task_stopped() { [[ $(ctr -a "$A" -n t task ls 2>/dev/null | awk -v id="$1" '$1 == id {print $3}') == STOPPED ]]; }
# creds RT NAME NNP-OPTS...: starts a container of runtime RT, execs the helpers in it as
# 1000:1000, sets res[RT.NAME.BIN] to each one's output on one line.
creds() {
	local rt=$1 name=$2 id b out
	shift 2
	runtime_opts "$rt"
	id=$rt-creds-$name
	if ! timeout 300 ctr -a "$A" -n t run -d "${opts[@]}" "$@" "$IMG" "$id" sleep 1000 \
		>/dev/null 2>"$OUT/$id.err" </dev/null; then
		flunk "$rt $name: ctr run: $(tail -c 400 "$OUT/$id.err")"
		return
	fi
	for b in creds creds-suid creds-sgid creds-cap; do
		out=$(timeout 60 ctr -a "$A" -n t task exec --user 1000:1000 --exec-id "$b" "$id" "/bin/$b" 2>&1 </dev/null)
		res[$rt.$name.$b]=${out//$'\n'/ }
	done
	out=$(timeout 60 ctr -a "$A" -n t task exec --exec-id getcap "$id" getcap /bin/creds-cap 2>&1 </dev/null)
	res[$rt.$name.getcap]=$out
	ctr -a "$A" -n t task kill -s SIGKILL "$id" >/dev/null 2>&1
	poll 300 task_stopped "$id"
	ctr -a "$A" -n t task rm "$id" >/dev/null 2>&1
	ctr -a "$A" -n t containers rm "$id" >/dev/null 2>&1
}
# creds_run RT NAME NNP-OPTS...: the same helpers run by the container's own process as
# 1000:1000 (a shell that execs each; the image's User), setting res[RT.run-NAME.BIN]. runc's exec cannot be
# compared in the lab: the lab's root is the initramfs, so runc's containers are chrooted, not
# pivoted, and `runc exec` lands in the lab's root, not the container's (lab/README.md).
creds_run() {
	local rt=$1 name=$2 id b out
	shift 2
	runtime_opts "$rt"
	id=$rt-credsrun-$name
	# shellcheck disable=SC2016 # expanded by the container's shell
	out=$(timeout 300 ctr -a "$A" -n t run --rm "${opts[@]}" "$@" "$IMG_USER" "$id" \
		sh -c 'for b in creds creds-suid creds-sgid creds-cap; do echo "$b=$(/bin/$b 2>&1 | tr "\n" " ")"; done
			echo "getcap=$(getcap /bin/creds-cap 2>&1)"' 2>"$OUT/$id.err" </dev/null) ||
		flunk "$rt $name: ctr run: $(tail -c 400 "$OUT/$id.err")"
	for b in creds creds-suid creds-sgid creds-cap getcap; do
		res[$rt.run-$name.$b]=$(sed -n "s/^$b=//p" <<<"$out" | sed 's/ $//')
	done
}
creds hull allow --allow-new-privs
creds hull nnp
for rt in runc hull; do
	creds_run "$rt" allow --allow-new-privs
	creds_run "$rt" nnp
done
plain="Effective uid: 1000 Effective gid: 1000 CapEff:	0000000000000000"
# expect NAME BIN EXPECTED [EXPECTED-RUN]: hull's output must be EXPECTED for an exec'd process
# (NAME), and EXPECTED-RUN (default EXPECTED) for the container's own (run-NAME), and so must
# runc's (run-NAME): the expectations are the kernel's rules, which runc shows.
expect() {
	check "hull exec: $1 $2" "$3" "${res[hull.$1.$2]-}"
	check "hull run: $1 $2" "${4-$3}" "${res[hull.run-$1.$2]-}"
	check "runc run: $1 $2" "${4-$3}" "${res[runc.run-$1.$2]-}"
}
# The kernel's rules, which runc's containers follow: a setuid-root exec makes euid 0 and,
# by the root fixup, the effective set the bounding set (containerd's default 14
# capabilities, 0xa80425fb); a file capability is granted when it is in the bounding set.
# no_new_privs stops the setuid and setgid gains, but not a file capability that the
# process already holds in its permitted set (an OCI process keeps its spec's permitted
# set up to this exec; NET_RAW is one of the defaults): the new set must only be a subset.
expect allow creds "$plain"
expect allow creds-suid "Effective uid: 0 Effective gid: 1000 CapEff:	00000000a80425fb"
expect allow creds-sgid "Effective uid: 1000 Effective gid: 42 CapEff:	0000000000000000"
expect allow creds-cap "Effective uid: 1000 Effective gid: 1000 CapEff:	0000000000002000"
expect allow getcap "/bin/creds-cap cap_net_raw=ep"
for b in creds creds-suid creds-sgid; do
	expect nnp "$b" "$plain"
done
# In the run path a shell, exec'd as uid 1000 without file capabilities, has already lost the
# spec's permitted set, so there is nothing left for no_new_privs to keep (measured the same on
# runc and hull).
expect nnp creds-cap "Effective uid: 1000 Effective gid: 1000 CapEff:	0000000000002000" "$plain"
exit $fail
