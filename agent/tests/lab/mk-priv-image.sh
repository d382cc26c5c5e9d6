#!/usr/bin/env bash
# mk-priv-image.sh OUT.tar NAME HELPER: an OCI image archive for `ctr images import` (no
# registry, one uncompressed layer) holding what agent/tests/lab/privileged.sh runs in it:
# Debian's busybox-static, the host's iproute2 `ip`, iptables (nft and legacy, with their
# xtables extensions), `nft` and `getcap` with every shared library they load, and HELPER
# (privhelper.c, static) four times: plain, setuid root, setgid 42, and with the file
# capability cap_net_raw+ep. The layer keeps modes, owners and security.capability xattrs.
# With USER-NAME, the archive also holds the image USER-NAME: the same layer, run as 1000:1000
# (its config's User, which `ctr run` applies: ctr 1.6 has no --user).
# usage: mk-priv-image.sh OUT.tar NAME HELPER [USER-NAME]
set -euo pipefail
out=$1 name=$2 helper=$3 user_name=${4:-}
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
r=$w/root
mkdir -p "$r"/{bin,etc,proc,sys,dev,run,usr/sbin} "$w/oci/blobs/sha256"
mkdir -m 1777 "$r/tmp"
cp /bin/busybox "$r/bin/busybox"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -s busybox "$r/bin/$a"; done
bins=(/usr/sbin/ip /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft /usr/sbin/getcap)
ext=/usr/lib/x86_64-linux-gnu/xtables
for b in "${bins[@]}"; do cp "$b" "$r/usr/sbin/"; done
ln -s xtables-nft-multi "$r/usr/sbin/iptables-nft"
ln -s xtables-legacy-multi "$r/usr/sbin/iptables-legacy"
mkdir -p "$r$ext" && cp -a "$ext/." "$r$ext/"
# Every library the binaries and the dlopen()ed xtables extensions need, at the host's paths
# (the dynamic loader's default multiarch directories find them without ld.so.cache).
for f in "${bins[@]}" "$ext"/*.so; do
	ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | sort -u | while read -r lib; do
	mkdir -p "$r${lib%/*}" && cp -L "$lib" "$r$lib"
done
install -m 0755 "$helper" "$r/bin/creds"
install -m 4755 "$helper" "$r/bin/creds-suid"
install -m 2755 -g 42 "$helper" "$r/bin/creds-sgid"
install -m 0755 "$helper" "$r/bin/creds-cap"
setcap cap_net_raw+ep "$r/bin/creds-cap"
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n' >"$r/etc/passwd"
printf 'root:x:0:\nsgid:x:42:\nuser:x:1000:\n' >"$r/etc/group"
tar -C "$r" --sort=name --mtime=@0 --numeric-owner --xattrs --xattrs-include=security.capability \
	-cf "$w/layer.tar" .
blob() {
	local d
	d=$(sha256sum "$1" | cut -d' ' -f1)
	mv "$1" "$w/oci/blobs/sha256/$d"
	echo "$d"
}
size() { stat -c %s "$w/oci/blobs/sha256/$1"; }
L=$(blob "$w/layer.tar")
# manifest NAME USER: a manifest for the layer whose config runs as USER (empty: the default,
# root), printed as an entry of the index.
manifest() {
	local c m user=""
	[[ -z $2 ]] || user=$(printf ',"User":"%s"' "$2")
	printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/sbin:/bin"],"Cmd":["/bin/sh"]%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$user" "$L" >"$w/c.json"
	c=$(blob "$w/c.json")
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$c" "$(size "$c")" "$L" "$(size "$L")" >"$w/m.json"
	m=$(blob "$w/m.json")
	printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s"}}' \
		"$m" "$(size "$m")" "$1"
}
manifests=$(manifest "$name" "")
[[ -z $user_name ]] || manifests+=,$(manifest "$user_name" 1000:1000)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "$manifests" >"$w/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci/oci-layout"
tar -C "$w/oci" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out" oci-layout index.json blobs
