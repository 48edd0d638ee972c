//! The deadline keeper: a `chaos keep-deadlines` process that recovers, at their deadlines,
//! the faults whose state lives outside BPF (cgroup limits, fill files, qdiscs and ifb devices
//! of network faults), which no kernel check can end. (A network fault's rule stops steering
//! packets into its netem band at the deadline, in the kernel; the band itself is removed here.) It is started by the first such fault armed, sleeps until the next deadline, and
//! exits once none is left. Its pid is in `deadline-keeper.pid` in the state directory.
//!
//! Were it killed, `chaos recover --all` (or any later `chaos inject`, which reaps expired
//! faults first) undoes what it would have.

use std::{path::PathBuf, time::Duration};

use super::keeper;
use crate::{
    clock::boot_ns,
    error::Result,
    injector::Injector,
    probe::Report,
    store::{BlockArmed, FaultRecord, Store},
};

/// The hidden subcommand that runs [`run`].
pub const SUBCOMMAND: &str = "keep-deadlines";

/// Longest sleep between looks at the store (how late a fault armed meanwhile is noticed is
/// irrelevant: arming starts a keeper when none runs; this bounds the reaction to clock steps).
const IDLE: Duration = Duration::from_secs(1);

fn pid_file(store: &Store) -> PathBuf {
    store.dir().join("deadline-keeper.pid")
}

/// Whether a fault's state needs someone to end it at its deadline.
pub fn needs_keeper(record: &FaultRecord) -> bool {
    matches!(
        record.block,
        Some(BlockArmed::Throttle(_) | BlockArmed::Fill(_))
    ) || record
        .net
        .as_ref()
        .is_some_and(|n| n.shaping.holds_qdiscs())
}

/// Starts the deadline keeper unless one runs. With the store lock held.
pub fn ensure_running(store: &Store) -> Result<()> {
    if keeper::running_as(&pid_file(store), SUBCOMMAND).is_some() {
        return Ok(());
    }
    keeper::spawn(
        store,
        SUBCOMMAND,
        &pid_file(store),
        "end a cgroup or fill fault at its deadline",
    )
}

/// Removes the pid file of a keeper that no longer runs (killed: it could not remove it), so
/// that it does not keep the state directory. With the store lock held.
pub fn forget_if_dead(store: &Store) {
    keeper::forget_dead(&pid_file(store), SUBCOMMAND);
}

/// The keeper's loop: recovers expired faults until no fault needing it is left.
pub fn run(store: &Store) -> Result<()> {
    let injector = Injector::with(Report::unprobed(), store.clone());
    loop {
        let kept: Vec<FaultRecord> = store.faults()?.into_iter().filter(needs_keeper).collect();
        let now = boot_ns();
        if kept.iter().any(|f| f.deadline_boot_ns <= now) {
            injector.reap_expired()?;
            continue;
        }
        if kept.is_empty() {
            // Decided under the store lock, which arming holds while it records a fault and
            // looks for a keeper: a fault armed meanwhile is seen here, or starts a keeper.
            let _lock = store.lock()?;
            if store.faults()?.iter().any(needs_keeper) {
                continue;
            }
            if keeper::running_as(&pid_file(store), SUBCOMMAND) == Some(std::process::id()) {
                let _ = std::fs::remove_file(pid_file(store));
            }
            let _ = store.remove_if_empty();
            return Ok(());
        }
        let next = kept.iter().map(|f| f.deadline_boot_ns).min().unwrap_or(now);
        std::thread::sleep(Duration::from_nanos(next.saturating_sub(now)).min(IDLE));
    }
}
