#!/bin/sh
# Runs inside the lab: boots the hull guest (kernel + initrd) with QEMU's microvm on the lab's
# KVM, waits for the agent's health reply over vhost-vsock, and prints the agent's first
# console line. Proves the guest image before hull-vmm can boot it.
# Usage: guest-smoke.sh KERNEL INITRD PROBE
set -eu
kernel=$1 initrd=$2 probe=$3
cid=3
console=$(mktemp /tmp/hull-smoke-console.XXXXXX)
qemu-system-x86_64 -accel kvm -cpu host -M microvm,acpi=off -m 256 -smp 1 \
    -display none -monitor none -no-reboot \
    -serial "file:$console" \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 reboot=k quiet" \
    -device "vhost-vsock-device,guest-cid=$cid" &
qemu=$!
cleanup() {
    kill "$qemu" 2>/dev/null || true
    wait "$qemu" 2>/dev/null || true
    rm -f "$console"
}
trap cleanup EXIT
if ! "$probe" --cid "$cid" --timeout-secs 180; then
    echo "guest console:" >&2
    cat "$console" >&2
    exit 1
fi
first=$(grep -m1 '^hull-agent' "$console" || true)
echo "console-first-agent-line: $first"
