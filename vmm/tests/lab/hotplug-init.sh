#!/bin/busybox sh
# /init of the busybox guest that hot-plug is tested and measured with (vmm/tests/lab/boot.sh,
# bench/vmm/hotplug): booted with 1 of 3 vCPUs and a virtio-mem region, it waits until the host
# has added memory (MemTotal grows), onlines cpu1 (granted by the host) timing it, tries cpu2
# (not granted: the kernel must give up on it), offlines cpu1 and powers off. Every result is
# one `hp:` line on the console; the host adds memory only after the `hp: boot` line, so the
# growth is measured from it.
B=/bin/busybox
$B mount -t devtmpfs dev /dev
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
total() { $B sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; }
cs() { $B cut -d' ' -f1 /proc/uptime | $B tr -d .; }
m0=$(total)
$B echo "hp: boot present=$($B cat /sys/devices/system/cpu/present) online=$($B cat /sys/devices/system/cpu/online) memtotal_kb=$m0"
i=0
while [ "$(total)" -le "$m0" ] && [ $i -lt 1200 ]; do $B usleep 100000; i=$((i + 1)); done
# The driver adds block after block: wait until MemTotal stands still for 200 ms.
last=0
while [ "$(total)" != "$last" ]; do last=$(total); $B usleep 200000; done
$B echo "hp: memtotal_kb=$(total) grew_kb=$(($(total) - m0))"
t0=$(cs)
if $B echo 1 >/sys/devices/system/cpu/cpu1/online; then
	$B echo "hp: cpu1 online in $(($(cs) - t0))0 ms, online=$($B cat /sys/devices/system/cpu/online)"
else
	$B echo "hp: cpu1 online failed"
fi
if [ "${HP_SKIP_UNGRANTED:-0}" = 1 ]; then :; elif $B echo 1 >/sys/devices/system/cpu/cpu2/online 2>/dev/null; then
	$B echo "hp: cpu2 came online without a grant"
else
	$B echo "hp: cpu2 refused, online=$($B cat /sys/devices/system/cpu/online)"
fi
$B echo 0 >/sys/devices/system/cpu/cpu1/online && $B echo "hp: cpu1 offline, online=$($B cat /sys/devices/system/cpu/online)"
$B poweroff -f
