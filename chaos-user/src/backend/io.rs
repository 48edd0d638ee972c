//! `io fail` in the block layer: rule slots in the block maps and one kprobe on
//! `should_fail_bio` that overrides its return for the bios a rule selects (device, operation,
//! sectors, the bio's cgroup or the submitting process, probability), until the rule's deadline.

use std::time::Duration;

use aya::{
    maps::{Array, Map, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use chaos_common::block::{
    BIO_COUNTERS_MAP, BIO_LIVE_MAP, BIO_RULES_MAP, BioCounters, BioRule, MAX_BIO_RULES, bio_flags,
    op,
};
use serde::{Deserialize, Serialize};

use super::{find_or_attach, map_err};
use crate::{
    ebpf,
    error::{Error, Result},
    injector::Counters,
    plan::{BioFailPlan, BioTarget},
    spec::IoOp,
    store::{FaultRecord, Hook, Store},
};

/// The kernel function the rule's kprobe overrides.
pub const FAIL_FUNCTION: &str = "should_fail_bio";

/// Where a block-layer error rule lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BioArmed {
    /// Rule slot in `CHAOS_BIO_RULES`.
    pub slot: u32,
    /// Attachments it needs (the `should_fail_bio` kprobe).
    pub attachments: Vec<u32>,
    /// The device, `MAJ:MIN`.
    pub device: String,
}

struct Maps {
    rules: Array<MapData, BioRule>,
    counters: PerCpuArray<MapData, BioCounters>,
    live: Array<MapData, u64>,
}

fn open_maps() -> Result<Option<Maps>> {
    let (Some(rules), Some(counters), Some(live)) = (
        ebpf::typed_map(BIO_RULES_MAP, Map::Array)?,
        ebpf::typed_map(BIO_COUNTERS_MAP, Map::PerCpuArray)?,
        ebpf::typed_map(BIO_LIVE_MAP, Map::Array)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Maps {
        rules,
        counters,
        live,
    }))
}

/// The operation bits (`1 << chaos_common::block::op`) an `op` selects.
pub fn op_bits(o: IoOp) -> u32 {
    match o {
        IoOp::Read => 1 << op::READ,
        IoOp::Write => 1 << op::WRITE,
        IoOp::Flush => 1 << op::FLUSH,
        IoOp::Discard => 1 << op::DISCARD,
        IoOp::Any => u32::MAX,
    }
}

/// The kernel rule for `plan` (deadline not yet set).
fn rule(plan: &BioFailPlan) -> BioRule {
    let (sector_lo, sector_hi) = plan.sectors.unwrap_or((0, 0));
    let mut flags = 0;
    if plan.device.disk.is_none() {
        flags |= bio_flags::WHOLE_DISK;
    }
    if plan.sectors.is_some() {
        flags |= bio_flags::SECTORS;
    }
    BioRule {
        deadline_ns: 0,
        threshold: plan.chance.threshold,
        sector_lo,
        sector_hi,
        cgroup_id: match &plan.target {
            BioTarget::Cgroup(c) => c.id,
            _ => 0,
        },
        dev: plan.device.kernel_dev(),
        ops: op_bits(plan.op),
        tgid: match plan.target {
            BioTarget::Pid(p) => p,
            _ => 0,
        },
        flags,
    }
}

fn attach(name: &str) -> Result<crate::store::AttachLink> {
    let mut globals = crate::btf::block_offsets()?;
    globals.extend(crate::btf::bio_fail_globals()?);
    super::attach_kprobe(
        &globals,
        chaos_common::block::PROG_BIO_FAIL,
        FAIL_FUNCTION,
        name,
    )
}

/// Arms a block-layer error rule: attaches the kprobe (once for all rules), writes the rule
/// into a free slot and marks it live. Returns it and its in-kernel deadline (boot ns). On
/// error, everything this call did is undone.
pub fn arm(
    store: &Store,
    faults: &[FaultRecord],
    plan: &BioFailPlan,
    duration: Duration,
) -> Result<(BioArmed, u64)> {
    let used: Vec<u32> = faults
        .iter()
        .filter_map(|f| match &f.block {
            Some(crate::store::BlockArmed::Bio(b)) => Some(b.slot),
            _ => None,
        })
        .collect();
    let slot = (0..MAX_BIO_RULES)
        .find(|s| !used.contains(s))
        .ok_or_else(|| Error::Unsupported {
            what: "arm another block I/O rule".into(),
            why: format!("all {MAX_BIO_RULES} rule slots are in use; recover some faults first"),
        })?;
    let mut armed = BioArmed {
        slot,
        attachments: Vec::new(),
        device: plan.device.dev(),
    };
    let mut created = None;
    let mut rule = rule(plan);
    let result = (|| {
        let (a, new) = find_or_attach(store, Hook::BioFail, |_, id, _| {
            attach(&format!("bio-fail-{id}"))
        })?;
        if new {
            created = Some(a.clone());
        }
        armed.attachments.push(a.id);
        let mut maps = open_maps()?.ok_or_else(|| Error::Store {
            path: ebpf::MAP_PIN_DIR.into(),
            problem: "block maps missing right after loading the program".into(),
        })?;
        let zero = PerCpuValues::try_from(vec![BioCounters::default(); nr_cpus().unwrap_or(1)])
            .map_err(|e| Error::io("sizing per-CPU counters", e))?;
        maps.counters
            .set(slot, zero, 0)
            .map_err(map_err("zeroing rule counters"))?;
        rule.deadline_ns = crate::clock::boot_ns() + duration.as_nanos() as u64;
        maps.rules
            .set(slot, rule, 0)
            .map_err(map_err("writing the rule"))?;
        let live = maps.live.get(&0, 0).unwrap_or(0);
        maps.live
            .set(0, live | (1 << slot), 0)
            .map_err(map_err("marking the rule live"))
    })();
    match result {
        Ok(()) => Ok((armed, rule.deadline_ns)),
        Err(e) => {
            let _ = disarm(&armed, &[]);
            if let Some(a) = created {
                let _ = super::detach(&a);
                let _ = store.remove_attachment(a.id);
            }
            Err(e)
        }
    }
}

/// Takes a rule out of service: unmarked live, then its slot emptied. Maps already gone (every
/// pin removed) is success.
pub fn disarm(armed: &BioArmed, _remaining: &[&BioArmed]) -> Result<()> {
    let Some(mut maps) = open_maps()? else {
        return Ok(());
    };
    let live = maps.live.get(&0, 0).unwrap_or(0);
    maps.live
        .set(0, live & !(1u64 << armed.slot), 0)
        .map_err(map_err("unmarking the rule"))?;
    maps.rules
        .set(armed.slot, BioRule::default(), 0)
        .map_err(map_err("emptying the rule slot"))
}

/// A rule's counters, summed over CPUs: bios to its device, those it selects, those failed.
pub fn counters(slot: u32) -> Result<Counters> {
    let Some(maps) = open_maps()? else {
        return Ok(Counters::default());
    };
    let per_cpu = maps
        .counters
        .get(&slot, 0)
        .map_err(map_err("reading rule counters"))?;
    Ok(per_cpu.iter().fold(Counters::default(), |acc, c| Counters {
        seen: acc.seen + c.seen,
        matched: acc.matched + c.matched,
        acted: acc.acted + c.acted,
    }))
}
