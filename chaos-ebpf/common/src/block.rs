//! Block I/O: what the kernel programs read from a `struct bio` or a `struct request`, and the
//! I/O measurement's maps.
//!
//! The programs read the kernel's block structures with `bpf_probe_read_kernel` at offsets the
//! loader takes from the running kernel's BTF and sets as globals ([`offsets`]), so one object
//! serves every kernel's layout.
//!
//! # Device numbers
//! The kernel's `dev_t` (`block_device.bd_dev`) is `major << 20 | minor` ([`kernel_dev`]); user
//! space's (`st_rdev`, glibc `makedev`) splits the numbers differently
//! ([`kernel_dev_from_user`] converts). Every device number in these maps is the kernel's.

/// Globals set at load time to offsets into kernel structures, read from the kernel's BTF.
///
/// A field the kernel lacks holds [`ABSENT`](offsets::ABSENT); the programs then report what it
/// leads to as unknown (cgroup id 0 without `CONFIG_BLK_CGROUP`, the disk's device number when
/// a request has no partition).
pub mod offsets {
    /// Offset value of a field this kernel does not have.
    pub const ABSENT: u32 = u32::MAX;

    /// `struct bio` -> `bi_bdev` (`struct block_device *`).
    pub const BIO_BDEV: &str = "CHAOS_OFF_BIO_BDEV";
    /// `struct block_device` -> `bd_dev` (`dev_t`, kernel encoding).
    pub const BDEV_DEV: &str = "CHAOS_OFF_BDEV_DEV";
    /// `struct bio` -> `bi_opf` (operation in the low 8 bits, flags above).
    pub const BIO_OPF: &str = "CHAOS_OFF_BIO_OPF";
    /// `struct bio` -> `bi_iter.bi_sector` (512-byte sectors).
    pub const BIO_SECTOR: &str = "CHAOS_OFF_BIO_SECTOR";
    /// `struct bio` -> `bi_iter.bi_size` (bytes).
    pub const BIO_SIZE: &str = "CHAOS_OFF_BIO_SIZE";
    /// `struct bio` -> `bi_blkg` (`struct blkcg_gq *`; [`ABSENT`] without `CONFIG_BLK_CGROUP`).
    pub const BIO_BLKG: &str = "CHAOS_OFF_BIO_BLKG";
    /// `struct blkcg_gq` -> `blkcg`.
    pub const BLKG_BLKCG: &str = "CHAOS_OFF_BLKG_BLKCG";
    /// `struct blkcg` -> `css.cgroup`.
    pub const BLKCG_CGROUP: &str = "CHAOS_OFF_BLKCG_CGROUP";
    /// `struct cgroup` -> `kn`.
    pub const CGROUP_KN: &str = "CHAOS_OFF_CGROUP_KN";
    /// `struct kernfs_node` -> `id` (the cgroup id: the inode number of its directory).
    pub const KN_ID: &str = "CHAOS_OFF_KN_ID";
    /// `struct request` -> `bio` (the first bio; null for requests without data).
    pub const RQ_BIO: &str = "CHAOS_OFF_RQ_BIO";
    /// `struct request` -> `__sector`.
    pub const RQ_SECTOR: &str = "CHAOS_OFF_RQ_SECTOR";
    /// `struct request` -> `__data_len` (bytes).
    pub const RQ_LEN: &str = "CHAOS_OFF_RQ_LEN";
    /// `struct request` -> `start_time_ns` (when the block layer made it, `ktime_get_ns`; 0
    /// when it keeps no time for it: no I/O statistics and no scheduler on the queue).
    pub const RQ_START: &str = "CHAOS_OFF_RQ_START";
    /// `struct request` -> `cmd_flags` (operation in the low 8 bits, flags above).
    pub const RQ_FLAGS: &str = "CHAOS_OFF_RQ_FLAGS";
    /// `struct request` -> `part` (`struct block_device *`, the partition; may be null).
    pub const RQ_PART: &str = "CHAOS_OFF_RQ_PART";
    /// `struct request` -> `q`.
    pub const RQ_Q: &str = "CHAOS_OFF_RQ_Q";
    /// `struct request_queue` -> `disk`.
    pub const Q_DISK: &str = "CHAOS_OFF_Q_DISK";
    /// `struct gendisk` -> `major`.
    pub const DISK_MAJOR: &str = "CHAOS_OFF_DISK_MAJOR";
    /// `struct gendisk` -> `first_minor`.
    pub const DISK_MINOR: &str = "CHAOS_OFF_DISK_MINOR";
}

/// Block operations (`enum req_op`, the low [`op::MASK`] bits of `bi_opf` / `cmd_flags`).
pub mod op {
    /// Read sectors.
    pub const READ: u32 = 0;
    /// Write sectors.
    pub const WRITE: u32 = 1;
    /// Flush the volatile write cache.
    pub const FLUSH: u32 = 2;
    /// Discard sectors.
    pub const DISCARD: u32 = 3;
    /// Bits of `bi_opf` / `cmd_flags` holding the operation.
    pub const MASK: u32 = 0xff;
    /// Operations the measurement counts apart; every other one (secure erase, write zeroes,
    /// zone and driver operations) is counted as [`OTHER`].
    pub const COUNTED: u32 = 4;
    /// The measurement's row for operations other than the four above.
    pub const OTHER: u32 = COUNTED;
}

/// Minor-number bits of the kernel's `dev_t` (`MINORBITS`).
pub const KERNEL_MINOR_BITS: u32 = 20;

/// The kernel's `dev_t` for `major:minor` (`MKDEV`).
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << KERNEL_MINOR_BITS) | (minor & ((1 << KERNEL_MINOR_BITS) - 1))
}

/// `(major, minor)` of a kernel `dev_t`.
pub const fn kernel_dev_parts(dev: u32) -> (u32, u32) {
    (
        dev >> KERNEL_MINOR_BITS,
        dev & ((1 << KERNEL_MINOR_BITS) - 1),
    )
}

/// The kernel's `dev_t` for a user-space one (`st_rdev`, in glibc's encoding: the minor in bits
/// 0-7 and 20-31, the major in bits 8-19 and 44-63, as `gnu_dev_major` / `gnu_dev_minor` read
/// them).
pub const fn kernel_dev_from_user(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    kernel_dev(major as u32, minor as u32)
}

// Every table below is an array map used as an open-addressing hash table: a lookup is a few
// inlined loads (an array map's lookup costs no helper call), with no lock and no allocation,
// unlike a hash map's entries. The programs run on every request of a watched device, so this
// is most of what they cost.

/// Name of the array map of [`WatchEntry`] slots: the devices the measurement counts, each in
/// one of the [`WATCH_PROBES`] slots from [`watch_slot`] of its number (written by the
/// controller only).
pub const IO_WATCH_MAP: &str = "CHAOS_IO_WATCH";
/// Name of the one-entry array map holding the number of watched devices: with none, each
/// request costs one array read.
pub const IO_WATCHING_MAP: &str = "CHAOS_IO_WATCHING";
/// Name of the array map of [`InFlight`] slots: the requests issued to a watched device and not
/// yet completed, each in a slot near [`inflight_slot`] of its address, claimed with
/// compare-and-swap.
pub const IO_INFLIGHT_MAP: &str = "CHAOS_IO_INFLIGHT";
/// Name of the array map of [`IoRow`] slots, each near [`row_slot`] of its key, claimed with
/// compare-and-swap and updated with atomic adds.
pub const IO_STATS_MAP: &str = "CHAOS_IO_STATS";

/// Slots of [`IO_WATCH_MAP`].
pub const WATCH_SLOTS: u32 = 256;
/// Slots a device may take, from [`watch_slot`] on.
pub const WATCH_PROBES: u32 = 4;

/// The first slot of [`IO_WATCH_MAP`] for kernel `dev_t` `dev`.
pub const fn watch_slot(dev: u32) -> u32 {
    dev.wrapping_mul(0x9E37_79B9) >> (32 - 8)
}

/// Slots of [`IO_INFLIGHT_MAP`] (a power of two).
pub const INFLIGHT_SLOTS: u32 = 1 << INFLIGHT_BITS;
/// log2 of [`INFLIGHT_SLOTS`].
pub const INFLIGHT_BITS: u32 = 14;
/// Slots a request may take, from [`inflight_slot`] on. With a few hundred requests in flight
/// all of them are taken about once in 10^10 requests; such a request is counted in
/// [`WatchEntry::untracked`].
pub const INFLIGHT_PROBES: u32 = 8;
/// A slot whose request was issued this long ago is taken over: its completion was missed (the
/// programs were detached, or the device stopped being watched, in between).
pub const INFLIGHT_STALE_NS: u64 = 600_000_000_000;

/// The first slot of [`IO_INFLIGHT_MAP`] for the request at address `rq` (Fibonacci hashing:
/// requests are close together in memory, a fixed stride apart).
pub const fn inflight_slot(rq: u64) -> u32 {
    ((rq >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - INFLIGHT_BITS)) as u32
}

/// Slots of [`IO_STATS_MAP`] (a power of two): (device, cgroup, operation) rows.
pub const ROW_SLOTS: u32 = 1 << ROW_BITS;
/// log2 of [`ROW_SLOTS`].
pub const ROW_BITS: u32 = 11;
/// Slots a row may take, from [`row_slot`] on. A request whose row finds none free is counted
/// in [`WatchEntry::untracked`].
pub const ROW_PROBES: u32 = 16;

/// The first slot of [`IO_STATS_MAP`] for `key`.
pub const fn row_slot(key: &IoKey) -> u32 {
    let h =
        (key.cgroup ^ ((key.dev as u64) << 32) ^ key.op as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - ROW_BITS)) as u32
}

/// [`IoRow::state`] values.
pub mod row_state {
    /// Free: its counters are zero, and a program may claim it.
    pub const FREE: u64 = 0;
    /// A program is writing its key.
    pub const CLAIMED: u64 = 1;
    /// Its key is set; programs add to its counters.
    pub const READY: u64 = 2;
}

/// The raw tracepoint program on `block_rq_issue` (a request goes to the driver).
pub const PROG_IO_ISSUE: &str = "chaos_io_issue";
/// The same on the BTF-typed tracepoint (`tp_btf`, Linux 5.5+): plain loads instead of helper
/// calls; used where the kernel accepts it.
pub const PROG_IO_ISSUE_BTF: &str = "chaos_io_issue_btf";
/// The raw tracepoint program on `block_rq_complete` (the driver finished it).
pub const PROG_IO_COMPLETE: &str = "chaos_io_complete";
/// The same on the BTF-typed tracepoint; used where the kernel accepts it.
pub const PROG_IO_COMPLETE_BTF: &str = "chaos_io_complete_btf";

/// A watched device's slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchEntry {
    /// Kernel `dev_t` of the device; 0 for a free slot (no block device is 0:0).
    pub dev: u32,
    /// How many watches ask for it (the controller frees the slot at zero).
    pub watchers: u32,
    /// When its counts began (`CLOCK_BOOTTIME` ns; for the controller, the kernel ignores it).
    pub since_ns: u64,
    /// Requests of the device not counted in any row: no free in-flight slot near theirs, or
    /// no free row slot for their key (added to by the programs).
    pub untracked: u64,
}

/// A request in flight on a watched device whose queue keeps no start times, from issue to
/// completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// The request's address; 0 for a free slot.
    pub rq: u64,
    /// When it was issued (`bpf_ktime_get_ns`, monotonic ns).
    pub start_ns: u64,
    /// The row it completes into.
    pub key: IoKey,
    /// Its device's slot in [`IO_WATCH_MAP`].
    pub watch: u32,
    /// Reserved, zero.
    pub pad: u32,
}

/// A measurement row: one device, one cgroup, one operation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoKey {
    /// Kernel `dev_t` of the request's partition (or disk).
    pub dev: u32,
    /// One of [`op`]'s counted operations, or [`op::OTHER`].
    pub op: u32,
    /// Id of the cgroup of the request's first bio (`bio.bi_blkg`: the cgroup of the blkio / io
    /// controller that submitted it, or dirtied the pages for writeback); 0 when unknown.
    pub cgroup: u64,
}

/// Buckets of the latency histogram ([`latency_bucket`]).
pub const LAT_BUCKETS: usize = 64;
/// The histogram's unit: latencies are counted in steps of `1 << LAT_SHIFT` ns (256 ns).
pub const LAT_SHIFT: u32 = 8;

/// The histogram bucket of a latency: two per power of two of `ns >> LAT_SHIFT` (bucket `2b`
/// from `2^b` units, `2b + 1` from `1.5 * 2^b`), buckets 0 and 1 below 2 units; everything
/// from 2^32 units (about 18 minutes) on in the last bucket. Written with shifts only (BPF has
/// no count-leading-zeros) and shared by both sides.
pub fn latency_bucket(ns: u64) -> usize {
    let v = ns >> LAT_SHIFT;
    if v < 2 {
        return v as usize;
    }
    if v >> 32 != 0 {
        return LAT_BUCKETS - 1;
    }
    let b = highest_bit(v);
    let half = (v >> (b - 1)) & 1;
    (2 * b + half as u32) as usize
}

/// The smallest latency (ns) that falls in `bucket`.
pub fn bucket_floor_ns(bucket: usize) -> u64 {
    let units = if bucket < 2 {
        bucket as u64
    } else {
        let b = (bucket / 2) as u32;
        (1u64 << b) + (bucket as u64 % 2) * (1u64 << (b - 1))
    };
    units << LAT_SHIFT
}

/// Index of the highest set bit of `x` (non-zero), by halving.
pub fn highest_bit(x: u64) -> u32 {
    let mut x = x;
    let mut n = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if x >> shift != 0 {
            n += shift;
            x >>= shift;
        }
    }
    n
}

/// One measurement row's counters, shared by all CPUs (atomic adds).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoCounters {
    /// Requests completed.
    pub ops: u64,
    /// Bytes they carried (each part of a request that completes in parts counts when it
    /// completes).
    pub bytes: u64,
    /// Requests completed with an error status.
    pub errors: u64,
    /// Sum of their latencies, ns: from the block layer's start time of each
    /// ([`offsets::RQ_START`]), or from its issue where the queue keeps none, to its completion.
    pub lat_sum_ns: u64,
    /// The longest latency, ns.
    pub lat_max_ns: u64,
    /// Latency histogram ([`latency_bucket`]).
    pub hist: [u64; LAT_BUCKETS],
}

impl Default for IoCounters {
    fn default() -> Self {
        IoCounters {
            ops: 0,
            bytes: 0,
            errors: 0,
            lat_sum_ns: 0,
            lat_max_ns: 0,
            hist: [0; LAT_BUCKETS],
        }
    }
}

/// A slot of [`IO_STATS_MAP`]: a row's key and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoRow {
    /// One of [`row_state`]'s values.
    pub state: u64,
    /// Whose counts these are.
    pub key: IoKey,
    /// The counts (several slots may hold one key: their counts add up).
    pub counters: IoCounters,
}

/// Name of the array map of [`BioRule`]s (`io fail` in the block layer), by slot.
pub const BIO_RULES_MAP: &str = "CHAOS_BIO_RULES";
/// Name of the per-CPU array map of [`BioCounters`], by rule slot.
pub const BIO_COUNTERS_MAP: &str = "CHAOS_BIO_COUNT";
/// Name of the one-entry array map holding the bit mask of live rule slots.
pub const BIO_LIVE_MAP: &str = "CHAOS_BIO_LIVE";
/// The kprobe on `should_fail_bio` that fails the bios a rule selects.
pub const PROG_BIO_FAIL: &str = "chaos_bio_fail";
/// Rule slots for `io fail` in the block layer.
pub const MAX_BIO_RULES: u32 = 16;
/// Ancestors of a bio's cgroup the program compares with a rule's cgroup (the bio's own first).
pub const MAX_BIO_CGROUP_DEPTH: u32 = 16;

/// Globals the `io fail` program needs besides [`offsets`]' bio fields.
pub mod fail_globals {
    /// `struct block_device` -> `bd_disk` (`struct gendisk *`).
    pub const BDEV_DISK: &str = "CHAOS_OFF_BDEV_DISK";
    /// `struct kernfs_node` -> its parent (`parent`, `__parent` from 6.15).
    pub const KN_PARENT: &str = "CHAOS_OFF_KN_PARENT";
    /// The `REQ_PREFLUSH` bit of `bi_opf` (from `enum req_flag_bits`; a flush is a write with
    /// it, empty for fsync).
    pub const PREFLUSH_FLAG: &str = "CHAOS_BIO_PREFLUSH";
    /// The `REQ_FUA` bit of `bi_opf`.
    pub const FUA_FLAG: &str = "CHAOS_BIO_FUA";
}

/// [`BioRule::flags`] bits.
pub mod bio_flags {
    /// `dev` is a whole disk: bios to its partitions match too.
    pub const WHOLE_DISK: u32 = 1;
    /// Only bios overlapping `sector_lo..=sector_hi`.
    pub const SECTORS: u32 = 2;
}

/// An `io fail` rule in the block layer: the bios it selects complete with an I/O error.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BioRule {
    /// `CLOCK_BOOTTIME` ns after which the rule no longer acts (0: empty slot).
    pub deadline_ns: u64,
    /// Probability threshold on the [`crate::PROBABILITY_ONE`] scale.
    pub threshold: u64,
    /// First sector selected (with [`bio_flags::SECTORS`]).
    pub sector_lo: u64,
    /// Last sector selected (inclusive).
    pub sector_hi: u64,
    /// Only bios charged to this cgroup or one below it (0: any).
    pub cgroup_id: u64,
    /// Kernel `dev_t` of the device (partition, or whole disk with [`bio_flags::WHOLE_DISK`]).
    pub dev: u32,
    /// Operations selected: bit `1 << op` for [`op`]'s READ, WRITE, FLUSH (a write with
    /// `REQ_PREFLUSH` counts as a flush too), DISCARD and OTHER.
    pub ops: u32,
    /// Only bios submitted by this process (0: any).
    pub tgid: u32,
    /// [`bio_flags`].
    pub flags: u32,
}

/// Per-rule, per-CPU counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BioCounters {
    /// Bios to the rule's device while it was live.
    pub seen: u64,
    /// Of those, the ones it selects (operation, sectors, target).
    pub matched: u64,
    /// Of those, the ones it failed.
    pub acted: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): plain `#[repr(C)]` data without padding holes or pointers.
    unsafe impl aya::Pod for super::WatchEntry {}
    unsafe impl aya::Pod for super::InFlight {}
    unsafe impl aya::Pod for super::IoKey {}
    unsafe impl aya::Pod for super::IoCounters {}
    unsafe impl aya::Pod for super::IoRow {}
    unsafe impl aya::Pod for super::BioRule {}
    unsafe impl aya::Pod for super::BioCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers() {
        assert_eq!(kernel_dev(7, 0), 7 << 20);
        assert_eq!(kernel_dev_parts(kernel_dev(259, 3)), (259, 3));
        // /dev/loop0 is 7:0, st_rdev 0x700; /dev/nvme0n1p3 259:3, st_rdev 0x10303.
        assert_eq!(kernel_dev_from_user(0x700), kernel_dev(7, 0));
        assert_eq!(kernel_dev_from_user(0x10303), kernel_dev(259, 3));
        // Minor 256 (glibc puts minor bits 8.. at 20..).
        assert_eq!(kernel_dev_from_user(0x0010_0700), kernel_dev(7, 256));
    }

    #[test]
    fn requests_spread_over_the_inflight_slots() {
        // 1024 requests a fixed stride apart, as blk-mq allocates them: no first slot is shared
        // by more than a few, far below INFLIGHT_PROBES.
        for stride in [256u64, 320, 384, 448, 512] {
            let mut used = [0u8; INFLIGHT_SLOTS as usize];
            for i in 0..1024u64 {
                used[inflight_slot(0xffff_8881_0a40_0000 + i * stride) as usize] += 1;
            }
            let worst = used.iter().copied().max().unwrap();
            assert!(worst <= 3, "stride {stride}: {worst} requests share a slot");
        }
    }

    #[test]
    fn buckets_are_monotonic_and_floors_match() {
        let mut last = 0;
        for ns in (0..40).flat_map(|p| [(1u64 << p) - 1, 1u64 << p, 3u64 << p]) {
            let b = latency_bucket(ns);
            assert!(b < LAT_BUCKETS);
            if ns > 0 {
                assert!(b >= latency_bucket(ns - 1), "{ns}");
            }
            assert!(bucket_floor_ns(b) <= ns, "{ns} in {b}");
            if b + 1 < LAT_BUCKETS {
                assert!(bucket_floor_ns(b + 1) > ns, "{ns} in {b}");
            }
            last = last.max(b);
        }
        for b in 0..LAT_BUCKETS {
            assert_eq!(latency_bucket(bucket_floor_ns(b)), b, "bucket {b}");
        }
        assert_eq!(latency_bucket(u64::MAX), LAT_BUCKETS - 1);
        assert_eq!(highest_bit(1), 0);
        assert!(inflight_slot(u64::MAX) < INFLIGHT_SLOTS);
        assert!(watch_slot(u32::MAX) < WATCH_SLOTS);
        let key = IoKey {
            dev: u32::MAX,
            op: u32::MAX,
            cgroup: u64::MAX,
        };
        assert!(row_slot(&key) < ROW_SLOTS);
        assert_eq!(highest_bit(u64::MAX), 63);
    }
}
