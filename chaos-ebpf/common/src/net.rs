//! Network fault rules, matched by the TC programs on each armed interface.

/// Maximum number of network rules armed at once across all interfaces.
pub const MAX_NET_RULES: u32 = 64;

/// Name of the array map holding [`NetRule`]s, indexed by rule slot.
pub const NET_RULES_MAP: &str = "CHAOS_NET_RULES";
/// Name of the per-CPU array map holding [`NetCounters`], indexed by rule slot.
pub const NET_COUNTERS_MAP: &str = "CHAOS_NET_COUNT";
/// Name of the hash map from attachment id to the bitmask of rule slots armed on it.
pub const NET_ATTACH_MAP: &str = "CHAOS_NET_ATTACH";
/// Name of the global set, at load time, to the id of the attachment (interface + direction in
/// one network namespace) that this instance of the program serves. Interface indexes repeat
/// across namespaces, attachment ids do not.
pub const ATTACH_ID_GLOBAL: &str = "CHAOS_ATTACH_ID";

/// The TC program for egress traffic.
pub const PROG_TC_EGRESS: &str = "chaos_tc_egress";
/// The TC program for ingress traffic.
pub const PROG_TC_INGRESS: &str = "chaos_tc_ingress";

/// What a matching packet suffers.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetAction {
    /// Slot unused: the rule matches nothing.
    None = 0,
    /// Drop the packet.
    Drop = 1,
}

/// One armed network fault: which packets it matches and what it does to them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRule {
    /// [`NetAction`] as `u32`; [`NetAction::None`] marks a free slot.
    pub action: u32,
    /// Reserved; zero.
    pub _pad: u32,
    /// Probability threshold on the [`crate::PROBABILITY_ONE`] scale.
    pub threshold: u64,
    /// `CLOCK_BOOTTIME` nanoseconds after which the rule no longer matches: the in-kernel deadline
    /// that ends the fault even when no controller is alive to remove it.
    pub deadline_ns: u64,
}

impl NetRule {
    /// A free slot.
    pub const EMPTY: NetRule = NetRule {
        action: NetAction::None as u32,
        _pad: 0,
        threshold: 0,
        deadline_ns: 0,
    };
}

/// Per-rule counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Packets the program examined for this rule (on an interface and direction it is armed on).
    pub seen: u64,
    /// Packets inside the rule's deadline that matched its filters.
    pub matched: u64,
    /// Packets the rule acted on (dropped, ...).
    pub acted: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::NetRule {}
    // SAFETY: plain `#[repr(C)]` data with no padding and no pointers.
    unsafe impl aya::Pod for super::NetCounters {}
}
