#!/bin/sh
# /init of the VM test initramfs (busybox sh). Written by xtask (xtask/src/vm/init.sh).
# Prepares the file systems the tests expect, loads modules, runs every test binary with one
# thread and --nocapture (so CHAOS-SKIP markers reach the console), then powers off.
# Lines starting with CHAOS-VM- are read by xtask; keep them in sync with xtask/src/vm/mod.rs.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root RUST_BACKTRACE=1 CHAOS_BIN=/bin/chaos
. /etc/chaos-vm.env
export CHAOS_IN_VM

echo "CHAOS-VM-INIT kernel $(uname -r) as $CHAOS_IN_VM"

try() {
    "$@" 2>/dev/null || echo "chaos-init: failed: $*"
}

mkdir -p /proc /sys /dev /run /tmp /root /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || try mount -t tmpfs dev /dev
mkdir -p /dev/pts /dev/shm
try mount -t devpts devpts /dev/pts
try mount -t tmpfs tmpfs /dev/shm
try mount -t tmpfs tmpfs /run
# /tmp (and /var/tmp, a link to it) holds the tests' loop images: as much of the RAM as tmpfs
# may take, not its default half.
try mount -t tmpfs -o size=90% tmpfs /tmp
chmod 1777 /tmp
try mount -t bpf bpffs /sys/fs/bpf
try mount -t debugfs debugfs /sys/kernel/debug
try mount -t tracefs tracefs /sys/kernel/tracing
try mount -t securityfs securityfs /sys/kernel/security
try mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The io and memory controllers on cgroup v2, as systemd hosts have them: io.max throttling, and
# writeback charged to the cgroup that dirtied the pages (cgroup writeback needs both). cgroup v1
# blkio is tested on hosts that still mount it; mounting it here would take io away from v2.
for c in io memory; do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || echo "chaos-init: no $c controller on cgroup v2"
done
ln -sf /proc/self/fd /dev/fd 2>/dev/null
ln -sf /proc/mounts /etc/mtab 2>/dev/null

# Modules, dependencies first (the list is written by xtask from modules.dep).
if [ -f /etc/chaos-modules ]; then
    while read -r ko; do
        [ -n "$ko" ] || continue
        insmod "$ko" </dev/null 2>/tmp/insmod.err || echo "chaos-init: insmod $ko failed: $(cat /tmp/insmod.err)"
    done < /etc/chaos-modules
fi

try ip link set lo up
hostname chaos-vm 2>/dev/null
echo "CHAOS-VM-LSM $(cat /sys/kernel/security/lsm 2>/dev/null)"

cd /tmp
while read -r name; do
    [ -n "$name" ] || continue
    echo "CHAOS-VM-RUN $name"
    # stdin from /dev/null: a test (or a tool it runs) must not eat the rest of this list.
    "/tests/$name" --test-threads=1 --nocapture </dev/null
    echo "CHAOS-VM-EXIT $name $?"
    cd /tmp
done < /etc/chaos-tests

sync
echo "CHAOS-VM-END"
poweroff -f
