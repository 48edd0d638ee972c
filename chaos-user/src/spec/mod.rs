//! Fault specs: what a user asks for, exactly as the CLI flags, the HTTP API and the library take
//! it (serde). Nothing here is checked beyond its shape; [`crate::plan`] validates. One fault
//! family per file; [`from_json`] reads a spec from JSON text with errors that name the field.

mod disk;
#[cfg(test)]
mod fuzz;
mod io;
pub(crate) mod json;
mod net;
mod syscall;

use serde::{Deserialize, Serialize};

pub use self::{
    disk::*,
    io::*,
    json::{KINDS, from_json},
    net::*,
    syscall::*,
};

/// One fault, tagged by `kind`, e.g.
/// `{"kind": "net", "action": "loss", "percent": 30, "interface": "veth0", "duration": "60s"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FaultSpec {
    /// A network fault.
    Net(NetSpec),
    /// A syscall fault.
    Syscall(SyscallSpec),
    /// A block I/O fault.
    Io(IoSpec),
    /// A disk (filesystem space) fault.
    Disk(DiskSpec),
}

impl FaultSpec {
    /// Short name of the fault kind and action, e.g. `net loss`.
    pub fn name(&self) -> String {
        match self {
            FaultSpec::Net(n) => format!("net {}", n.action.as_str()),
            FaultSpec::Syscall(s) => format!("syscall {}", s.action.as_str()),
            FaultSpec::Io(s) => format!("io {}", s.action.as_str()),
            FaultSpec::Disk(s) => format!("disk {}", s.action.as_str()),
        }
    }
}
