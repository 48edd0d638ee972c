//! `io slow` / `io hang`: limits in the target cgroup's v2 `io.max` or v1
//! `blkio.throttle.*_device` files, the limits that were there before kept and restored exactly;
//! a `--pid` that shares its cgroup is moved into a cgroup made for the fault and back.
//!
//! Two steps, so that a crash at any point can be undone: [`prepare`] reads what is there and
//! decides what will change (stored with the fault record before anything is touched),
//! [`apply`] changes it, and [`disarm`] undoes whatever part of it was done.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    plan::{BlockDevice, IoLimits, ThrottleTarget},
};

/// What a throttle changes and what it found there, to undo it exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThrottleArmed {
    /// The device, `MAJ:MIN`.
    pub device: String,
}

/// Reads the state the fault will change and decides how; touches nothing.
pub fn prepare(
    _fault_id: &str,
    device: &BlockDevice,
    _limits: &IoLimits,
    _target: &ThrottleTarget,
) -> Result<ThrottleArmed> {
    Err(Error::Unsupported {
        what: "io slow / hang".into(),
        why: format!("not built yet (device {})", device.dev()),
    })
}

/// Applies a prepared throttle: all of it, or (on error) none of it.
pub fn apply(_armed: &ThrottleArmed) -> Result<()> {
    Err(Error::Unsupported {
        what: "io slow / hang".into(),
        why: "not built yet".into(),
    })
}

/// Undoes whatever part of `armed` is in place; nothing in place is success.
pub fn disarm(_armed: &ThrottleArmed) -> Result<()> {
    Ok(())
}
