//! Network fault rules, matched by the TC programs on each armed interface.
//!
//! A packet on an attachment (an interface and direction in one network namespace) is checked
//! against the rule slots set in that attachment's [`AttachSlots`] mask. Each rule filters by
//! protocol, ports, address ranges (in the shared [`NET_CIDR_MAP`] LPM trie), excluded ports and
//! addresses, and cgroup, then applies its action with its probability (a two-state Markov chain,
//! so loss can come in bursts) until its in-kernel deadline.

/// Maximum number of network rules armed at once across all interfaces (one bit each in a u64).
pub const MAX_NET_RULES: u32 = 64;

/// Attachment ids are below this (the controller reuses the lowest free one).
pub const MAX_ATTACHMENTS: u32 = 1024;

/// Name of the array map holding [`NetRule`]s, indexed by rule slot.
pub const NET_RULES_MAP: &str = "CHAOS_NET_RULES";
/// Name of the per-CPU array map holding [`NetCounters`], indexed by rule slot.
pub const NET_COUNTERS_MAP: &str = "CHAOS_NET_COUNT";
/// Name of the array map holding [`NetState`], indexed by rule slot.
pub const NET_STATE_MAP: &str = "CHAOS_NET_STATE";
/// Name of the array map from attachment id to its [`AttachSlots`].
pub const NET_ATTACH_MAP: &str = "CHAOS_NET_ATTACH";
/// Name of the LPM trie from [`CidrKey`] to the bitmask of rule slots whose address filter covers
/// that prefix (the controller stores, for every prefix, the union of all rules covering it, so
/// the longest match answers for every rule at once).
pub const NET_CIDR_MAP: &str = "CHAOS_NET_CIDR";
/// Name of the hash map from cgroup v2 id to the bitmask of rule slots that target it.
pub const NET_CGROUP_MAP: &str = "CHAOS_NET_CGRP";
/// Name of the hash map from socket cookie to the bitmask of rule slots that target it (the
/// sockets a `--pid` process held when the fault was armed).
pub const NET_SOCKET_MAP: &str = "CHAOS_NET_SOCK";
/// Name of the hash map from interface index to the bitmask of rule slots limited to it
/// ([`matches::IFINDEX`]). Indexes repeat across network namespaces; a rule's cgroup keeps it to
/// the namespace its sockets live in.
pub const NET_IFACE_MAP: &str = "CHAOS_NET_IFACE";
/// Name of the array map of jitter distribution tables ([`DIST_TABLE_SIZE`] entries per
/// [`dist`] kind, in units of `sigma / DIST_SCALE`), filled by the controller.
pub const NET_DIST_MAP: &str = "CHAOS_NET_DIST";
/// Name of the global set, at load time, to the id of the attachment (interface + direction in
/// one network namespace) that this instance of the program serves. Interface indexes repeat
/// across namespaces, attachment ids do not.
pub const ATTACH_ID_GLOBAL: &str = "CHAOS_ATTACH_ID";

/// Name of the global set, at load time, to which [`via`] copy of the TC program this instance
/// is. An attachment can have two instances on its hook for a moment, while a handover moves it
/// from a clsact filter to a TCX link; [`AttachSlots::via`] says which of them judges.
pub const TC_VIA_GLOBAL: &str = "CHAOS_TC_VIA";

/// Which copy of the TC program judges an attachment's packets ([`AttachSlots::via`],
/// [`TC_VIA_GLOBAL`]).
pub mod via {
    /// The instance the attachment was made with (a clsact filter or a TCX link).
    pub const FIRST: u32 = 0;
    /// The TCX link a handover attached after the clsact filter: the attachment is fast to arm
    /// through clsact, and its packets then pay TCX's cheaper per-packet path.
    pub const TCX_COPY: u32 = 1;
}

/// Name of the array map from interface index to the [`IfAttach`] of the shared TC instances on
/// that interface. One loaded program per direction serves every interface whose index is below
/// [`MAX_SHARED_IFINDEX`] and not already taken by a shared attachment in another network
/// namespace; the others get an instance of their own, loaded with [`ATTACH_ID_GLOBAL`] set.
pub const NET_IFATTACH_MAP: &str = "CHAOS_NET_IFATT";

/// Interface indexes the shared TC instances serve are below this.
pub const MAX_SHARED_IFINDEX: u32 = 16384;

/// The attachments of the shared TC instances on one interface index, 0 where none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfAttach {
    /// Attachment id of the egress instance.
    pub egress: u32,
    /// Attachment id of the ingress instance.
    pub ingress: u32,
}

/// The TC program for egress traffic.
pub const PROG_TC_EGRESS: &str = "chaos_tc_egress";
/// The TC program for ingress traffic.
pub const PROG_TC_INGRESS: &str = "chaos_tc_ingress";
/// The `cgroup_skb/ingress` program, for inbound faults selected by cgroup or process: attached
/// to the target cgroup, it sees each packet with its receiving socket, and can only drop.
pub const PROG_CGROUP_INGRESS: &str = "chaos_cgroup_ingress";

/// cgroup levels below the root that a rule's cgroup filter looks through: a rule on a cgroup
/// also selects the sockets of every cgroup below it, down to this depth.
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// `skb->mark` bit carried by the copies that `duplicate` makes, so the program lets them pass
/// instead of acting on them again; cleared before the copy leaves.
pub const DUP_MARK: u32 = 0x4000_0000;

/// Entries per distribution table.
pub const DIST_TABLE_SIZE: u32 = 4096;
/// Distribution tables hold `value * DIST_SCALE` for a unit-sigma variate (netem's scale).
pub const DIST_SCALE: i64 = 8192;

/// Jitter distributions.
pub mod dist {
    /// Uniform in `[-jitter, +jitter]`; needs no table.
    pub const UNIFORM: u32 = 0;
    /// Normal with sigma = jitter.
    pub const NORMAL: u32 = 1;
    /// Pareto (heavy tail) scaled to sigma = jitter.
    pub const PARETO: u32 = 2;
    /// netem's "paretonormal": 1/4 normal + 3/4 pareto.
    pub const PARETONORMAL: u32 = 3;
    /// Number of table-backed kinds (tables for kinds 1..KINDS).
    pub const KINDS: u32 = 4;
}

/// What a matching packet suffers.
pub mod action {
    /// Slot unused: the rule matches nothing.
    pub const NONE: u32 = 0;
    /// Drop the packet.
    pub const DROP: u32 = 1;
    /// Flip one random bit of its L4 payload.
    pub const CORRUPT: u32 = 2;
    /// Send a copy as well.
    pub const DUPLICATE: u32 = 3;
    /// Delay it: earliest departure time = now + delay (+ jitter), enforced by the fq qdisc.
    pub const DELAY: u32 = 4;
    /// Pace the rule's packets at `rate_bytes_per_s` (earliest departure times, fq qdisc).
    pub const RATE: u32 = 5;
    /// Steer it into a netem band: `skb->priority = priority`.
    pub const STEER: u32 = 6;
    /// Steer it into a netem band of interface `redirect_ifindex` (an ifb, for ingress).
    pub const REDIRECT: u32 = 7;
}

/// Filter bits for [`NetRule::matches`] and [`AttachSlots::needs`].
pub mod matches {
    /// Protocol must equal [`super::NetRule::proto`].
    pub const PROTO: u32 = 1;
    /// Destination port within `dport_lo..=dport_hi`.
    pub const DPORT: u32 = 2;
    /// Source port within `sport_lo..=sport_hi`.
    pub const SPORT: u32 = 4;
    /// Destination address covered by one of the rule's `--dst` prefixes.
    pub const DST: u32 = 8;
    /// Source address covered by one of the rule's `--src` prefixes.
    pub const SRC: u32 = 16;
    /// Skip packets whose destination is covered by an excluded prefix.
    pub const XDST: u32 = 32;
    /// Skip packets whose source is covered by an excluded prefix.
    pub const XSRC: u32 = 64;
    /// Skip packets with a source or destination port in `exclude_ports`.
    pub const XPORT: u32 = 128;
    /// The packet's socket must be in one of the rule's cgroups v2, or below one (TC egress and
    /// the cgroup ingress hook; TC ingress has no socket yet).
    pub const CGROUP: u32 = 256;
    /// The packet's socket must be one of the rule's sockets (by cookie; same hooks as
    /// [`CGROUP`]).
    pub const SOCKET: u32 = 512;
    /// The packet's interface index must be one of the rule's, in [`super::NET_IFACE_MAP`] (set
    /// for rules that the cgroup ingress hook judges, since that hook sees every interface).
    pub const IFINDEX: u32 = 1024;
}

/// Address kinds in [`CidrKey::kind`].
pub mod cidr {
    /// IPv4 destination.
    pub const DST4: u8 = 1;
    /// IPv4 source.
    pub const SRC4: u8 = 2;
    /// IPv6 destination.
    pub const DST6: u8 = 3;
    /// IPv6 source.
    pub const SRC6: u8 = 4;
    /// Added to a kind for excluded prefixes.
    pub const EXCLUDE: u8 = 4;
}

/// Key of [`NET_CIDR_MAP`] (the LPM trie's data; its prefix length counts the kind byte, so a
/// /24 is `8 + 24`). IPv4 addresses fill the first 4 bytes of `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CidrKey {
    /// One of [`cidr`]'s kinds.
    pub kind: u8,
    /// The address, network byte order.
    pub addr: [u8; 16],
    /// Explicit padding (zero), so no byte of the key is left uninitialised.
    pub _pad: [u8; 3],
}

/// Protocol classes for [`AttachSlots::protos`].
pub mod proto_class {
    /// TCP.
    pub const TCP: u32 = 1;
    /// UDP.
    pub const UDP: u32 = 2;
    /// ICMP or ICMPv6.
    pub const ICMP: u32 = 4;
    /// Anything else, or not IP.
    pub const OTHER: u32 = 8;
    /// Every class: a rule without a protocol filter.
    pub const ALL: u32 = 15;
}

/// Value of [`NET_ATTACH_MAP`]: the rules armed on an attachment, and what they have in common,
/// so that packets no rule can select are let through before any per-rule work.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachSlots {
    /// Bitmask of the rule slots armed on the attachment.
    pub slots: u64,
    /// Union of those rules' [`matches`] bits: lookups no rule needs are skipped.
    pub needs: u32,
    /// Union of the [`proto_class`]es the rules accept.
    pub protos: u32,
    /// Smallest destination port some rule accepts (0 when a rule takes any).
    pub dport_lo: u16,
    /// Largest destination port some rule accepts (65535 when a rule takes any).
    pub dport_hi: u16,
    /// Smallest source port some rule accepts.
    pub sport_lo: u16,
    /// Largest source port some rule accepts.
    pub sport_hi: u16,
    /// Which [`via`] copy of the TC program judges the attachment; the other lets every packet
    /// through untouched. Set to [`via::FIRST`] when the attachment is made, to
    /// [`via::TCX_COPY`] by a handover; rule changes keep it.
    pub via: u32,
    /// Zero (explicit padding).
    pub reserved: u32,
    /// Slots whose rules need the destination in their prefixes ([`matches::DST`]).
    pub need_dst: u64,
    /// Slots whose rules need the source in their prefixes ([`matches::SRC`]).
    pub need_src: u64,
    /// Slots whose rules need the socket's cgroup ([`matches::CGROUP`]).
    pub need_cgroup: u64,
    /// Slots whose rules need the socket ([`matches::SOCKET`]).
    pub need_socket: u64,
    /// Slots whose rules need the interface ([`matches::IFINDEX`]).
    pub need_iface: u64,
}

/// One armed network fault: which packets it matches and what it does to them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRule {
    /// One of [`action`]'s values; [`action::NONE`] marks a free slot.
    pub action: u32,
    /// [`matches`] bits.
    pub matches: u32,
    /// IP protocol number for [`matches::PROTO`] (6 tcp, 17 udp, 1 icmp; icmp also matches 58).
    pub proto: u32,
    /// [`dist`] kind for jitter.
    pub distribution: u32,
    /// Destination port range, inclusive.
    pub dport_lo: u16,
    /// Upper end of the destination port range.
    pub dport_hi: u16,
    /// Source port range, inclusive.
    pub sport_lo: u16,
    /// Upper end of the source port range.
    pub sport_hi: u16,
    /// Ports never touched (either end of the packet); 0 = unused entry.
    pub exclude_ports: [u16; 8],
    /// Probability threshold (on the `PROBABILITY_ONE` scale) after a packet the rule did not
    /// act on.
    pub threshold: u64,
    /// Probability threshold after a packet it acted on; equal to `threshold` without
    /// correlation, higher with it (bursts).
    pub threshold_after_hit: u64,
    /// `CLOCK_BOOTTIME` nanoseconds after which the rule no longer matches: the in-kernel deadline
    /// that ends the fault even when no controller is alive to remove it.
    pub deadline_ns: u64,
    /// Added delay for [`action::DELAY`], ns.
    pub delay_ns: u64,
    /// Jitter (uniform half-width, or sigma), ns.
    pub jitter_ns: u64,
    /// Rate for [`action::RATE`], bytes per second.
    pub rate_bytes_per_s: u64,
    /// `skb->priority` for [`action::STEER`] and [`action::REDIRECT`] (the netem band).
    pub priority: u32,
    /// Interface index for [`action::REDIRECT`] (an ifb).
    pub redirect_ifindex: u32,
}

impl NetRule {
    /// A free slot.
    pub const EMPTY: NetRule = NetRule {
        action: action::NONE,
        matches: 0,
        proto: 0,
        distribution: 0,
        dport_lo: 0,
        dport_hi: 0,
        sport_lo: 0,
        sport_hi: 0,
        exclude_ports: [0; 8],
        threshold: 0,
        threshold_after_hit: 0,
        deadline_ns: 0,
        delay_ns: 0,
        jitter_ns: 0,
        rate_bytes_per_s: 0,
        priority: 0,
        redirect_ifindex: 0,
    };
}

/// Mutable per-rule state shared by all CPUs (updates may race; each is a best effort that
/// cannot break a packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetState {
    /// 1 if the rule acted on the last packet it judged (the Markov chain's state).
    pub last_hit: u64,
    /// Earliest departure time of the rule's next packet, for [`action::RATE`] (CLOCK_MONOTONIC).
    pub next_departure_ns: u64,
}

/// Per-rule counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Packets the program examined for this rule (on an interface and direction it is armed on).
    pub seen: u64,
    /// Packets inside the rule's deadline that matched its filters.
    pub matched: u64,
    /// Packets the rule acted on (dropped, corrupted, duplicated, delayed...).
    pub acted: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): plain `#[repr(C)]` data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::NetRule {}
    unsafe impl aya::Pod for super::NetCounters {}
    unsafe impl aya::Pod for super::NetState {}
    unsafe impl aya::Pod for super::IfAttach {}
    unsafe impl aya::Pod for super::AttachSlots {}
    unsafe impl aya::Pod for super::CidrKey {}
}
