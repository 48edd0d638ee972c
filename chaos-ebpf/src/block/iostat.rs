//! Block I/O measurement: latency, operations and bytes per (device, cgroup, operation), on
//! every kernel (raw tracepoints need nothing else).
//!
//! - `chaos_io_issue` (raw tracepoint `block_rq_issue(struct request *rq)`): a request goes to
//!   the driver. On a watched device, its address, start time, row and size are kept in a slot
//!   of `CHAOS_IO_INFLIGHT` near the hash of its address, claimed with compare-and-swap.
//! - `chaos_io_complete` (raw tracepoint `block_rq_complete(struct request *rq, blk_status_t
//!   error, unsigned int nr_bytes)`): the driver finished it; the row gains one operation, its
//!   bytes, its latency (sum, maximum, histogram) and, for a non-zero status, an error.
//!
//! With no device watched each request costs one array read per program; on an unwatched
//! device while others are watched, two kernel reads and a hash lookup at issue and an array
//! read at completion. Rows are shared by all CPUs and updated with atomic adds, so they are
//! exact and their memory does not grow with the number of CPUs. The in-flight table is an
//! array (inlined lookups, no lock, no allocation): a hash map's update and delete took about
//! 150 ns of the 480 ns these programs first cost per request.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap},
    programs::RawTracePointContext,
};
use chaos_common::block::{
    INFLIGHT_PROBES, INFLIGHT_SLOTS, INFLIGHT_STALE_NS, InFlight, IoCounters, IoKey, LAT_BUCKETS,
    MAX_IO_ROWS, WatchEntry, inflight_slot, latency_bucket, op,
};

use super::bio::Request;

/// Kernel `dev_t` -> watchers (written by the controller).
#[map(name = "CHAOS_IO_WATCH")]
static CHAOS_IO_WATCH: HashMap<u32, WatchEntry> = HashMap::pinned(256, 0);

/// Index 0: how many devices are watched (written by the controller).
#[map(name = "CHAOS_IO_WATCHING")]
static CHAOS_IO_WATCHING: Array<u32> = Array::pinned(1, 0);

/// Requests issued to a watched device and not yet completed (see `inflight_slot`). Pinned
/// like the others, so every load of the object shares one.
#[map(name = "CHAOS_IO_INFLIGHT")]
static CHAOS_IO_INFLIGHT: Array<InFlight> = Array::pinned(INFLIGHT_SLOTS, 0);

/// The measurement rows (read by the controller, which deletes a device's rows when its last
/// watcher goes).
#[map(name = "CHAOS_IO_STATS")]
static CHAOS_IO_STATS: HashMap<IoKey, IoCounters> = HashMap::pinned(MAX_IO_ROWS, 0);

/// Index 0: an all-zero row, the source of new rows (a row is larger than the BPF stack).
/// Never written.
#[map(name = "CHAOS_IO_ZERO")]
static CHAOS_IO_ZERO: Array<IoCounters> = Array::with_max_entries(1, 0);

/// Whether any device is watched (an inlined array read).
#[inline(always)]
fn watching() -> bool {
    CHAOS_IO_WATCHING.get(0).is_some_and(|n| *n != 0)
}

#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn chaos_io_issue(ctx: RawTracePointContext) -> i32 {
    if !watching() {
        return 0;
    }
    let rq: *const u8 = ctx.arg(0);
    let request = Request::read(rq);
    let dev = request.dev();
    // SAFETY: plain key.
    if unsafe { CHAOS_IO_WATCH.get(dev) }.is_none() {
        return 0;
    }
    let raw_op = request.op();
    let key = IoKey {
        dev,
        op: if raw_op < op::COUNTED {
            raw_op
        } else {
            op::OTHER
        },
        cgroup: request.cgroup_id(),
    };
    let bytes = request.bytes();
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let addr = rq as u64;
    let first = inflight_slot(addr);
    for k in 0..INFLIGHT_PROBES {
        let Some(slot) = CHAOS_IO_INFLIGHT.get_ptr_mut((first + k) & (INFLIGHT_SLOTS - 1)) else {
            break;
        };
        // SAFETY (all): `slot` points into the map value; `rq` is only changed by
        // compare-and-swap (claim) and by the completion that holds the slot (release).
        unsafe {
            let held = core::ptr::read_volatile(&raw const (*slot).rq);
            // A slot being claimed still has its initial start (0) or the one its release
            // left (u64::MAX): never stale.
            let start = core::ptr::read_volatile(&raw const (*slot).start_ns);
            let free = held == 0 || (start != 0 && now.saturating_sub(start) > INFLIGHT_STALE_NS);
            // A requeued request is issued again: it keeps its slot.
            if held == addr
                || (free
                    && atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                        &raw mut (*slot).rq,
                        held,
                        addr,
                    )
                    .1)
            {
                (*slot).start_ns = now;
                (*slot).key = key;
                (*slot).bytes = bytes;
                return 0;
            }
        }
    }
    // No room near its slot: counted, not timed.
    if let Some(row) = row(&key) {
        // SAFETY: as in `account`.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*row).untracked, 1)
        };
    }
    0
}

#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn chaos_io_complete(ctx: RawTracePointContext) -> i32 {
    if !watching() {
        return 0;
    }
    let addr: u64 = ctx.arg(0);
    let first = inflight_slot(addr);
    for k in 0..INFLIGHT_PROBES {
        let Some(slot) = CHAOS_IO_INFLIGHT.get_ptr_mut((first + k) & (INFLIGHT_SLOTS - 1)) else {
            return 0;
        };
        // SAFETY: map value; the slot is ours while `rq` holds our address.
        if unsafe { core::ptr::read_volatile(&raw const (*slot).rq) } != addr {
            continue;
        }
        // SAFETY: as above; copied out before the slot is released.
        let flight = unsafe { *slot };
        // SAFETY: as above. A request that completes in parts is counted once, at its first.
        unsafe {
            core::ptr::write_volatile(&raw mut (*slot).start_ns, u64::MAX);
            core::ptr::write_volatile(&raw mut (*slot).rq, 0);
        }
        // SAFETY: helper without arguments.
        let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(flight.start_ns);
        let status: u64 = ctx.arg(1);
        // blk_status_t is a u8; the register's upper bits are not defined.
        account(&flight, latency, status & 0xff != 0);
        return 0;
    }
    0
}

/// The row of `key`, made on first use.
#[inline(always)]
fn row(key: &IoKey) -> Option<*mut IoCounters> {
    if let Some(row) = CHAOS_IO_STATS.get_ptr_mut(key) {
        return Some(row);
    }
    let zero = CHAOS_IO_ZERO.get(0)?;
    // Another CPU may make it first (NOEXIST then fails, and its row is used).
    let _ = CHAOS_IO_STATS.insert(key, zero, aya_ebpf::bindings::BPF_NOEXIST.into());
    CHAOS_IO_STATS.get_ptr_mut(key)
}

/// Adds one completed request to its row (made on first use).
#[inline(always)]
fn account(flight: &InFlight, latency: u64, failed: bool) {
    let Some(row) = row(&flight.key) else {
        return;
    };
    // SAFETY (all): `row` points into the map value; its fields are only ever updated with
    // atomic operations. Relaxed adds become BPF's add without fetch, all a counter needs.
    let add = |field: *mut u64, n: u64| unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, n);
    };
    unsafe {
        add(&raw mut (*row).ops, 1);
        add(&raw mut (*row).bytes, u64::from(flight.bytes));
        if failed {
            add(&raw mut (*row).errors, 1);
        }
        add(&raw mut (*row).lat_sum_ns, latency);
        // Masked so the verifier sees the index in bounds (latency_bucket is below 64 already).
        let bucket = latency_bucket(latency) & (LAT_BUCKETS - 1);
        add(&raw mut (*row).hist[bucket], 1);
        let max = &raw mut (*row).lat_max_ns;
        // A few tries: a lost race means another CPU just raised the maximum.
        for _ in 0..4 {
            let seen = core::ptr::read_volatile(max);
            if latency <= seen
                || atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                    max, seen, latency,
                )
                .1
            {
                break;
            }
        }
    }
}
