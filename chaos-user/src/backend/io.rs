//! `io fail` in the block layer: rule slots in the block maps and one kprobe on
//! `should_fail_bio` that overrides its return for the bios a rule selects (device, operation,
//! sectors, the bio's cgroup or the submitting process, probability), until the rule's deadline.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    plan::BioFailPlan,
    store::{FaultRecord, Store},
};

/// Where a block-layer error rule lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BioArmed {
    /// Rule slot in the block rules map.
    pub slot: u32,
    /// Attachments it needs (the `should_fail_bio` kprobe).
    pub attachments: Vec<u32>,
    /// The device, `MAJ:MIN`.
    pub device: String,
}

/// Arms a block-layer error rule; returns it and its in-kernel deadline (boot ns).
pub fn arm(
    _store: &Store,
    _faults: &[FaultRecord],
    plan: &BioFailPlan,
    _duration: Duration,
) -> Result<(BioArmed, u64)> {
    Err(Error::Unsupported {
        what: "io fail in the block layer".into(),
        why: format!("not built yet (device {})", plan.device.dev()),
    })
}

/// Takes a rule out of service.
pub fn disarm(_armed: &BioArmed, _remaining: &[&BioArmed]) -> Result<()> {
    Ok(())
}

/// A rule's counters: bios examined, of its target, failed.
pub fn counters(_slot: u32) -> Result<crate::injector::Counters> {
    Ok(crate::injector::Counters::default())
}
