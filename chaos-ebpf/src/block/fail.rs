//! `io fail` in the block layer: a kprobe on `should_fail_bio` (marked for function error
//! injection) that makes it return -EIO for the bios a rule selects, so `submit_bio_noacct`
//! completes them with `BLK_STS_IOERR` before they reach the driver.
//!
//! A rule selects by device (a partition, or a whole disk and its partitions), operation,
//! sector range, the bio's own cgroup or one of its ancestors (writeback is charged to the
//! cgroup that dirtied the pages, not to the kworker submitting it), the submitting process,
//! and probability; it acts until its `CLOCK_BOOTTIME` deadline.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_override_return},
    macros::{kprobe, map},
    maps::{Array, PerCpuArray},
    programs::ProbeContext,
};
use chaos_common::{
    PROBABILITY_ONE,
    block::{BioCounters, BioRule, MAX_BIO_CGROUP_DEPTH, MAX_BIO_RULES, bio_flags, kernel_dev, op},
};

use super::bio::{
    CHAOS_OFF_BIO_BDEV, CHAOS_OFF_BIO_BLKG, CHAOS_OFF_BIO_OPF, CHAOS_OFF_BIO_SECTOR,
    CHAOS_OFF_BIO_SIZE, CHAOS_OFF_BLKCG_CGROUP, CHAOS_OFF_BLKG_BLKCG, CHAOS_OFF_CGROUP_KN,
    CHAOS_OFF_DISK_MAJOR, CHAOS_OFF_DISK_MINOR, CHAOS_OFF_KN_ID, bdev_dev, off, read, read_ptr,
};

/// Rule slots. Pinned so every `chaos` process shares them.
#[map(name = "CHAOS_BIO_RULES")]
static CHAOS_BIO_RULES: Array<BioRule> = Array::pinned(MAX_BIO_RULES, 0);

/// Per-rule, per-CPU counters.
#[map(name = "CHAOS_BIO_COUNT")]
static CHAOS_BIO_COUNT: PerCpuArray<BioCounters> = PerCpuArray::pinned(MAX_BIO_RULES, 0);

/// Bit mask of the live rule slots (entry 0).
#[map(name = "CHAOS_BIO_LIVE")]
static CHAOS_BIO_LIVE: Array<u64> = Array::pinned(1, 0);

/// `block_device.bd_disk` (see `chaos_common::block::fail_globals`).
#[unsafe(no_mangle)]
static CHAOS_OFF_BDEV_DISK: u32 = 0;
/// `kernfs_node`'s parent.
#[unsafe(no_mangle)]
static CHAOS_OFF_KN_PARENT: u32 = 0;
/// `REQ_PREFLUSH` in `bi_opf`.
#[unsafe(no_mangle)]
static CHAOS_BIO_PREFLUSH: u32 = 0;
/// `REQ_FUA` in `bi_opf`.
#[unsafe(no_mangle)]
static CHAOS_BIO_FUA: u32 = 0;

const EIO: i64 = 5;

/// Fails the selected bios: `should_fail_bio(struct bio *bio)` returns -EIO for them.
#[kprobe]
pub fn chaos_bio_fail(ctx: ProbeContext) -> u32 {
    let live = CHAOS_BIO_LIVE.get(0).copied().unwrap_or(0);
    if live == 0 {
        return 0;
    }
    let bio: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    if bio.is_null() {
        return 0;
    }
    let opf: u32 = read(bio, off(&CHAOS_OFF_BIO_OPF));
    let code = opf & op::MASK;
    let mut ops = 1u32 << if code < op::COUNTED { code } else { op::OTHER };
    // fsync's cache flush is a write carrying REQ_PREFLUSH (often empty); FUA writes too.
    if opf & (off(&CHAOS_BIO_PREFLUSH) | off(&CHAOS_BIO_FUA)) != 0 {
        ops |= 1 << op::FLUSH;
    }
    let bdev = read_ptr(bio, off(&CHAOS_OFF_BIO_BDEV));
    let dev = bdev_dev(bdev);
    let disk = read_ptr(bdev, off(&CHAOS_OFF_BDEV_DISK));
    let disk_dev = kernel_dev(
        read(disk, off(&CHAOS_OFF_DISK_MAJOR)),
        read(disk, off(&CHAOS_OFF_DISK_MINOR)),
    );
    let sector: u64 = read(bio, off(&CHAOS_OFF_BIO_SECTOR));
    let bytes: u32 = read(bio, off(&CHAOS_OFF_BIO_SIZE));
    // Sectors [sector, end): an empty bio (a flush) covers its first sector.
    let end = sector + u64::from(bytes.div_ceil(512)).max(1);
    // Rules name processes as the controller's pid namespace does; a task outside it is 0,
    // which no rule by process matches.
    let tgid = crate::syscall::current_tgid().unwrap_or(0);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut slot = 0;
    while slot < MAX_BIO_RULES {
        let index = slot;
        slot += 1;
        if live & (1 << index) == 0 {
            continue;
        }
        let Some(rule) = CHAOS_BIO_RULES.get(index) else {
            continue;
        };
        if now >= rule.deadline_ns {
            continue;
        }
        let on_device =
            dev == rule.dev || (rule.flags & bio_flags::WHOLE_DISK != 0 && disk_dev == rule.dev);
        if !on_device {
            continue;
        }
        let counters = CHAOS_BIO_COUNT.get_ptr_mut(index);
        bump(counters, |c| &mut c.seen);
        if ops & rule.ops == 0 {
            continue;
        }
        if rule.flags & bio_flags::SECTORS != 0
            && (sector > rule.sector_hi || end <= rule.sector_lo)
        {
            continue;
        }
        if rule.tgid != 0 && rule.tgid != tgid {
            continue;
        }
        if rule.cgroup_id != 0 && !charged_under(bio, rule.cgroup_id) {
            continue;
        }
        bump(counters, |c| &mut c.matched);
        if rule.threshold < PROBABILITY_ONE {
            // SAFETY: helper without arguments.
            let roll = u64::from(unsafe { bpf_get_prandom_u32() });
            if roll >= rule.threshold {
                continue;
            }
        }
        bump(counters, |c| &mut c.acted);
        // SAFETY: helper on this kprobe's registers; the kernel allows it only on functions
        // marked for error injection, as should_fail_bio is.
        unsafe { bpf_override_return(ctx.regs, (-EIO) as u64) };
        return 0;
    }
    0
}

/// Adds one to a per-CPU counter (no other CPU writes this copy).
#[inline(always)]
fn bump(counters: Option<*mut BioCounters>, field: impl FnOnce(&mut BioCounters) -> &mut u64) {
    if let Some(c) = counters {
        // SAFETY: a per-CPU map value of this CPU, valid for the program's run.
        let f = field(unsafe { &mut *c });
        *f += 1;
    }
}

/// Whether `bio` is charged to cgroup `id` or to a cgroup below it.
#[inline(always)]
fn charged_under(bio: *const u8, id: u64) -> bool {
    let blkg = read_ptr(bio, off(&CHAOS_OFF_BIO_BLKG));
    let blkcg = read_ptr(blkg, off(&CHAOS_OFF_BLKG_BLKCG));
    let cgroup = read_ptr(blkcg, off(&CHAOS_OFF_BLKCG_CGROUP));
    let mut kn = read_ptr(cgroup, off(&CHAOS_OFF_CGROUP_KN));
    let mut depth = 0;
    while depth < MAX_BIO_CGROUP_DEPTH {
        depth += 1;
        if kn.is_null() {
            return false;
        }
        if read::<u64>(kn, off(&CHAOS_OFF_KN_ID)) == id {
            return true;
        }
        kn = read_ptr(kn, off(&CHAOS_OFF_KN_PARENT));
    }
    false
}
