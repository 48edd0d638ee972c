//! Privilege checks, done before anything else so that a missing capability is one clear line
//! and not a half-armed fault.

use crate::error::{Error, Result};

/// A Linux capability the injector needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// CAP_NET_ADMIN: TC, qdiscs, netlink.
    NetAdmin = 12,
    /// CAP_SYS_ADMIN: bpffs, namespaces, cgroups, and BPF on older kernels.
    SysAdmin = 21,
    /// CAP_PERFMON: tracing programs.
    Perfmon = 38,
    /// CAP_BPF: loading programs and creating maps.
    Bpf = 39,
}

impl Cap {
    fn name(self) -> &'static str {
        match self {
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Perfmon => "CAP_PERFMON",
            Cap::Bpf => "CAP_BPF",
        }
    }
}

/// The capabilities every fault-making command needs.
pub const INJECT: &[Cap] = &[Cap::Bpf, Cap::NetAdmin, Cap::SysAdmin, Cap::Perfmon];

/// Effective capability mask of this process, from /proc/self/status.
fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Checks that this process holds `caps`; the error names what is missing and the fix.
pub fn check(caps: &[Cap]) -> Result<()> {
    check_mask(effective(), nix::unistd::geteuid().is_root(), caps)
}

fn check_mask(mask: u64, root: bool, caps: &[Cap]) -> Result<()> {
    let missing: Vec<&str> = caps
        .iter()
        .filter(|c| mask & (1u64 << (**c as u32)) == 0)
        .map(|c| c.name())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Privilege(if root {
        format!(
            "running as root but without {}; run chaos outside restricted containers, or grant them (e.g. docker --privileged)",
            missing.join(", ")
        )
    } else {
        format!(
            "chaos needs root (missing {}); run it with sudo",
            missing.join(", ")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_caps() {
        let all = (1u64 << 12) | (1 << 21) | (1 << 38) | (1 << 39);
        assert!(check_mask(all, true, INJECT).is_ok());
        let err = check_mask(all & !(1 << 39), false, INJECT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CAP_BPF") && err.contains("sudo"), "{err}");
        assert!(!err.contains("CAP_NET_ADMIN"), "{err}");
    }
}
