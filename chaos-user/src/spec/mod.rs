//! Fault specs: what a user asks for, exactly as the CLI flags, the HTTP API and the library take
//! it (serde). Nothing here is checked beyond its shape; [`crate::plan`] validates. One fault
//! family per file.

mod net;

use serde::{Deserialize, Serialize};

pub use self::net::*;

/// One fault, tagged by `kind`, e.g.
/// `{"kind": "net", "action": "loss", "percent": 30, "interface": "veth0", "duration": "60s"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FaultSpec {
    /// A network fault.
    Net(NetSpec),
}

impl FaultSpec {
    /// Short name of the fault kind and action, e.g. `net loss`.
    pub fn name(&self) -> String {
        match self {
            FaultSpec::Net(n) => format!("net {}", n.action.as_str()),
        }
    }
}
