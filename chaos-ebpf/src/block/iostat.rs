//! Block I/O measurement: latency, operations and bytes per (device, cgroup, operation), on
//! every kernel (raw tracepoints need nothing else).
//!
//! - `chaos_io_complete` (tracepoint `block_rq_complete(struct request *rq, blk_status_t error,
//!   unsigned int nr_bytes)`): the driver finished (part of) a request; its row gains the bytes,
//!   and at its last part one operation, its latency (sum, maximum, histogram) and, for a
//!   non-zero status, an error. The latency runs from the block layer's own start time of the
//!   request (`start_time_ns`, kept whenever its queue collects I/O statistics, the default, or
//!   has a scheduler: what the submitter waits, block-layer queueing included) to completion.
//! - `chaos_io_issue` (tracepoint `block_rq_issue(struct request *rq)`), attached only while a
//!   watched device's queue keeps no start times: a request without one, on a watched device,
//!   goes to the driver; its issue time and row go into a slot of `CHAOS_IO_INFLIGHT` near the
//!   hash of its address, claimed with compare-and-swap, and its latency runs from there.
//!
//! Reading the request's fields at completion costs less than carrying them from the issue in
//! the in-flight table: the completion often runs on another CPU, and the slot's cache line
//! moved between the two for every request (40 % of these programs' samples under `perf`),
//! while the request and its cgroup's structures are read-mostly.
//!
//! Each has a raw tracepoint version (fields read with `bpf_probe_read_kernel`) and a BTF-typed
//! one (`*_btf`, plain loads; Linux 5.5+), which the loader prefers.
//!
//! With no device watched each request costs one array read per program. Every table is an
//! array map used as an open-addressing hash table (see `chaos_common::block`): lookups are
//! inlined loads, with no lock and no allocation. Rows are shared by all CPUs and updated with atomic adds, so
//! they are exact and their memory does not grow with the number of CPUs.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_buf},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::Array,
    programs::{BtfTracePointContext, RawTracePointContext},
};
use chaos_common::block::{
    INFLIGHT_PROBES, INFLIGHT_SLOTS, INFLIGHT_STALE_NS, InFlight, IoCounters, IoKey, IoRow,
    LAT_BUCKETS, ROW_PROBES, ROW_SLOTS, WATCH_PROBES, WATCH_SLOTS, WatchEntry, inflight_slot,
    latency_bucket, op, row_slot, row_state, watch_slot,
};

use super::bio::{Request, typed};

/// Watched devices (written by the controller).
#[map(name = "CHAOS_IO_WATCH")]
static CHAOS_IO_WATCH: Array<WatchEntry> = Array::pinned(WATCH_SLOTS, 0);

/// Index 0: how many devices are watched (written by the controller).
#[map(name = "CHAOS_IO_WATCHING")]
static CHAOS_IO_WATCHING: Array<u32> = Array::pinned(1, 0);

/// Requests issued to a watched device and not yet completed (see `inflight_slot`). Pinned
/// like the others, so every load of the object shares one.
#[map(name = "CHAOS_IO_INFLIGHT")]
static CHAOS_IO_INFLIGHT: Array<InFlight> = Array::pinned(INFLIGHT_SLOTS, 0);

/// The measurement rows (read by the controller, which frees a device's rows when its last
/// watcher goes).
#[map(name = "CHAOS_IO_STATS")]
static CHAOS_IO_STATS: Array<IoRow> = Array::pinned(ROW_SLOTS, 0);

/// Index 0: all-zero counters, copied into a row slot when it is claimed. Never written.
#[map(name = "CHAOS_IO_ZERO")]
static CHAOS_IO_ZERO: Array<IoCounters> = Array::with_max_entries(1, 0);

/// Whether any device is watched (an inlined array read).
#[inline(always)]
fn watching() -> bool {
    CHAOS_IO_WATCHING.get(0).is_some_and(|n| *n != 0)
}

/// The slot of `dev` in the watch table, if it is watched.
#[inline(always)]
fn watched(dev: u32) -> Option<u32> {
    if dev == 0 {
        return None;
    }
    let first = watch_slot(dev);
    for k in 0..WATCH_PROBES {
        let index = (first + k) & (WATCH_SLOTS - 1);
        if CHAOS_IO_WATCH.get(index).is_some_and(|e| e.dev == dev) {
            return Some(index);
        }
    }
    None
}

/// Counts a request of the device in watch slot `watch` that no row holds.
#[inline(always)]
fn untracked(watch: u32) {
    if let Some(entry) = CHAOS_IO_WATCH.get_ptr_mut(watch) {
        // SAFETY: map value; the programs only add to this field, atomically.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*entry).untracked, 1)
        };
    }
}

/// What the programs read from a request, raw (helper calls) or BTF-typed (plain loads).
trait Fields {
    /// Kernel `dev_t` of its partition or disk.
    fn dev(&self) -> u32;
    /// Its operation (`op` values).
    fn op(&self) -> u32;
    /// Its cgroup id (0: unknown).
    fn cgroup_id(&self) -> u64;
    /// Bytes left in it.
    fn bytes(&self) -> u32;
    /// The block layer's start time (0: none).
    fn start(&self) -> u64;
}

impl Fields for Request {
    fn dev(&self) -> u32 {
        Request::dev(self)
    }
    fn op(&self) -> u32 {
        Request::op(self)
    }
    fn cgroup_id(&self) -> u64 {
        Request::cgroup_id(self)
    }
    fn bytes(&self) -> u32 {
        Request::bytes(self)
    }
    fn start(&self) -> u64 {
        Request::start(self)
    }
}

/// A BTF-typed `struct request *`.
struct Typed(*const u8);

impl Fields for Typed {
    fn dev(&self) -> u32 {
        typed::request_dev(self.0)
    }
    fn op(&self) -> u32 {
        typed::request_op(self.0)
    }
    fn cgroup_id(&self) -> u64 {
        typed::request_cgroup_id(self.0)
    }
    fn bytes(&self) -> u32 {
        typed::request_bytes(self.0)
    }
    fn start(&self) -> u64 {
        typed::request_start(self.0)
    }
}

/// The row key of `rq`, on device `dev`.
#[inline(always)]
fn key_of(rq: &impl Fields, dev: u32) -> IoKey {
    let raw = rq.op();
    IoKey {
        dev,
        op: if raw < op::COUNTED { raw } else { op::OTHER },
        cgroup: rq.cgroup_id(),
    }
}

#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn chaos_io_issue(ctx: RawTracePointContext) -> i32 {
    if watching() {
        let rq: *const u8 = ctx.arg(0);
        issue(rq as u64, &Request::read(rq));
    }
    0
}

/// The same on the BTF-typed tracepoint (Linux 5.5+, kernel BTF): the request's fields are
/// plain loads, not helper calls. The loader uses it where the kernel accepts it.
#[btf_tracepoint(function = "block_rq_issue")]
pub fn chaos_io_issue_btf(ctx: BtfTracePointContext) -> i32 {
    if watching() {
        let rq: *const u8 = ctx.arg(0);
        issue(typed::address(rq), &Typed(rq));
    }
    0
}

/// A request at `addr` goes to the driver: on a watched device, its issue time and row go into
/// an in-flight slot near `inflight_slot(addr)`. (Its fields are read here, where the submitter
/// has just touched them, rather than at completion, often on another CPU: that cost twice as
/// much.)
#[inline(always)]
fn issue(addr: u64, rq: &impl Fields) {
    if rq.start() != 0 {
        return;
    }
    let dev = rq.dev();
    let Some(watch) = watched(dev) else {
        return;
    };
    if addr == 0 {
        untracked(watch);
        return;
    }
    let key = key_of(rq, dev);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
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
                (*slot).watch = watch;
                return;
            }
        }
    }
    untracked(watch);
}

#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn chaos_io_complete(ctx: RawTracePointContext) -> i32 {
    if watching() {
        let rq: *const u8 = ctx.arg(0);
        let status: u64 = ctx.arg(1);
        let nr_bytes: u64 = ctx.arg(2);
        complete(rq as u64, &Request::read(rq), status, nr_bytes as u32);
    }
    0
}

/// The same on the BTF-typed tracepoint.
#[btf_tracepoint(function = "block_rq_complete")]
pub fn chaos_io_complete_btf(ctx: BtfTracePointContext) -> i32 {
    if watching() {
        let rq: *const u8 = ctx.arg(0);
        let status: u64 = ctx.arg(1);
        let nr_bytes: u64 = ctx.arg(2);
        let typed = Typed(rq);
        // The address is only needed without a start time (an in-flight slot).
        let addr = if typed.start() == 0 {
            typed::address(rq)
        } else {
            0
        };
        complete(addr, &typed, status, nr_bytes as u32);
    }
    0
}

/// `nr_bytes` of the request at `addr` completed with `status` (a `blk_status_t`: only its low
/// byte is defined). A request that completes in parts adds each part's bytes; it counts as
/// one operation, with its latency and any error, at its last part (when `nr_bytes` covers
/// what is left of it).
#[inline(always)]
fn complete(addr: u64, rq: &impl Fields, status: u64, nr_bytes: u32) {
    let start = rq.start();
    if start != 0 {
        let dev = rq.dev();
        let Some(watch) = watched(dev) else {
            return;
        };
        let last = nr_bytes >= rq.bytes();
        // SAFETY: helper without arguments.
        let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
        account(
            &key_of(rq, dev),
            watch,
            nr_bytes,
            last,
            latency,
            status & 0xff != 0,
        );
        return;
    }
    let first = inflight_slot(addr);
    for k in 0..INFLIGHT_PROBES {
        let Some(slot) = CHAOS_IO_INFLIGHT.get_ptr_mut((first + k) & (INFLIGHT_SLOTS - 1)) else {
            break;
        };
        // SAFETY: map value; the slot is ours while `rq` holds our address.
        if addr == 0 || unsafe { core::ptr::read_volatile(&raw const (*slot).rq) } != addr {
            continue;
        }
        // SAFETY: as above; copied out before the slot is released.
        let flight = unsafe { *slot };
        let last = nr_bytes >= rq.bytes();
        if last {
            // SAFETY: as above.
            unsafe {
                core::ptr::write_volatile(&raw mut (*slot).start_ns, u64::MAX);
                core::ptr::write_volatile(&raw mut (*slot).rq, 0);
            }
        }
        // SAFETY: helper without arguments.
        let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(flight.start_ns);
        account(
            &flight.key,
            flight.watch,
            nr_bytes,
            last,
            latency,
            status & 0xff != 0,
        );
        return;
    }
    // Neither timed by the block layer nor at issue (the queue stopped keeping start times
    // while watched, or the issue program was not attached yet): counted, not timed.
    if let Some(watch) = watched(rq.dev())
        && nr_bytes >= rq.bytes()
    {
        untracked(watch);
    }
}

/// The counters of `key`'s row: a ready slot with that key, or a free one claimed for it.
/// (Two CPUs making the same row at once may claim a slot each: the controller adds up every
/// slot of a key.)
#[inline(always)]
fn row(key: &IoKey) -> Option<*mut IoCounters> {
    let first = row_slot(key);
    for k in 0..ROW_PROBES {
        let slot = CHAOS_IO_STATS.get_ptr_mut((first + k) & (ROW_SLOTS - 1))?;
        // SAFETY (all): map value; `state` only moves FREE -> CLAIMED (compare-and-swap, here)
        // -> READY (here) -> FREE (the controller, once the device is no longer watched).
        unsafe {
            let state = core::ptr::read_volatile(&raw const (*slot).state);
            if state == row_state::READY && (*slot).key == *key {
                return Some(&raw mut (*slot).counters);
            }
            if state == row_state::FREE
                && atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                    &raw mut (*slot).state,
                    row_state::FREE,
                    row_state::CLAIMED,
                )
                .1
            {
                // Counters are zeroed again: a late completion may have added to the slot
                // after the controller freed it.
                let zero = CHAOS_IO_ZERO.get_ptr(0)?;
                let counters = &raw mut (*slot).counters;
                let _ = bpf_probe_read_kernel_buf(
                    zero as *const u8,
                    core::slice::from_raw_parts_mut(
                        counters as *mut u8,
                        core::mem::size_of::<IoCounters>(),
                    ),
                );
                (*slot).key = *key;
                core::ptr::write_volatile(&raw mut (*slot).state, row_state::READY);
                return Some(counters);
            }
        }
    }
    None
}

/// Adds `bytes` to `key`'s row and, at a request's `last` part, one operation, its `latency`
/// and, if it `failed`, an error.
#[inline(always)]
fn account(key: &IoKey, watch: u32, bytes: u32, last: bool, latency: u64, failed: bool) {
    let Some(row) = row(key) else {
        if last {
            untracked(watch);
        }
        return;
    };
    // SAFETY (all): `row` points into the map value; its fields are only ever updated with
    // atomic operations. Relaxed adds become BPF's add without fetch, all a counter needs.
    let add = |field: *mut u64, n: u64| unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, n);
    };
    unsafe {
        add(&raw mut (*row).bytes, u64::from(bytes));
        if !last {
            return;
        }
        add(&raw mut (*row).ops, 1);
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
