//! Network faults on TC: one classifier instance per armed interface and direction (an
//! "attachment"). Rules live in maps, so arming or disarming a fault is a map update, never a
//! reload.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_boot_ns},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use chaos_common::{
    PROBABILITY_ONE,
    net::{MAX_NET_RULES, NetAction, NetCounters, NetRule},
};

/// Set by the loader to the attachment this program instance serves (see
/// `chaos_common::net::ATTACH_ID_GLOBAL`). Read with a volatile load so the compiler cannot fold
/// the default.
#[unsafe(no_mangle)]
static CHAOS_ATTACH_ID: u32 = 0;

/// Rule slots, indexed by slot number. Pinned so every `chaos` process shares them.
#[map(name = "CHAOS_NET_RULES")]
static CHAOS_NET_RULES: Array<NetRule> = Array::pinned(MAX_NET_RULES, 0);

/// Per-rule, per-CPU counters, indexed like [`CHAOS_NET_RULES`].
#[map(name = "CHAOS_NET_COUNT")]
static CHAOS_NET_COUNT: PerCpuArray<NetCounters> = PerCpuArray::pinned(MAX_NET_RULES, 0);

/// Attachment id -> bitmask of the rule slots armed on it.
#[map(name = "CHAOS_NET_ATTACH")]
static CHAOS_NET_ATTACH: HashMap<u32, u64> = HashMap::pinned(1024, 0);

/// TC egress hook.
#[classifier]
pub fn chaos_tc_egress(_ctx: TcContext) -> i32 {
    run()
}

/// TC ingress hook.
#[classifier]
pub fn chaos_tc_ingress(_ctx: TcContext) -> i32 {
    run()
}

/// Returns `TC_ACT_SHOT` for a dropped packet and `TC_ACT_UNSPEC` otherwise, so the filters and
/// qdiscs that were there before ours still see every packet we let through.
fn run() -> i32 {
    // SAFETY: reading a plain static; volatile so the loader-set value is used.
    let attach_id = unsafe { core::ptr::read_volatile(&CHAOS_ATTACH_ID) };
    // SAFETY: the value is a plain u64 that user space replaces atomically.
    let Some(mask) = (unsafe { CHAOS_NET_ATTACH.get(attach_id) }) else {
        return TC_ACT_UNSPEC;
    };
    let mask = *mask;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut slot = 0u32;
    while slot < MAX_NET_RULES {
        if mask & (1u64 << slot) != 0 && apply(slot, now) {
            return TC_ACT_SHOT;
        }
        slot += 1;
    }
    TC_ACT_UNSPEC
}

/// Evaluates rule `slot` for one packet; returns whether the packet must be dropped.
fn apply(slot: u32, now: u64) -> bool {
    let Some(rule) = CHAOS_NET_RULES.get(slot) else {
        return false;
    };
    if rule.action == NetAction::None as u32 {
        return false;
    }
    let counters = CHAOS_NET_COUNT.get_ptr_mut(slot);
    let count = |f: fn(&mut NetCounters)| {
        if let Some(c) = counters {
            // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
            f(unsafe { &mut *c });
        }
    };
    count(|c| c.seen += 1);
    if now >= rule.deadline_ns {
        return false;
    }
    count(|c| c.matched += 1);
    // SAFETY: helper without arguments.
    let roll = u64::from(unsafe { bpf_get_prandom_u32() });
    if rule.threshold < PROBABILITY_ONE && roll >= rule.threshold {
        return false;
    }
    count(|c| c.acted += 1);
    rule.action == NetAction::Drop as u32
}
