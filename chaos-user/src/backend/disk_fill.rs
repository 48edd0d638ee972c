//! `disk fill`: files of ours, allocated with `fallocate` (written where it is unsupported),
//! named from the fault id so that recovery finds them even after a crash mid-fill.
//!
//! Two steps, so that a crash at any point can be undone: [`prepare`] decides the files (stored
//! with the fault record before anything is written), [`apply`] makes them, and [`disarm`]
//! removes whatever exists of them.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    plan::FillPlan,
};

/// The files a fill makes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FillArmed {
    /// Their directory.
    pub dir: std::path::PathBuf,
}

/// Decides the files; touches nothing.
pub fn prepare(_fault_id: &str, plan: &FillPlan) -> Result<FillArmed> {
    Err(Error::Unsupported {
        what: "disk fill".into(),
        why: format!("not built yet ({})", plan.dir.display()),
    })
}

/// Makes the files: all of the space asked, or (on error) none.
pub fn apply(_armed: &FillArmed) -> Result<()> {
    Err(Error::Unsupported {
        what: "disk fill".into(),
        why: "not built yet".into(),
    })
}

/// Removes whatever exists of the files; nothing there is success.
pub fn disarm(_armed: &FillArmed) -> Result<()> {
    Ok(())
}
