//! Network faults on TC: one classifier instance per armed interface and direction (an
//! "attachment"). Rules live in maps, so arming or disarming a fault is a map update, never a
//! reload. Inbound traffic selected by cgroup or process (TC ingress runs before the packet has
//! a socket) is judged by a `cgroup_skb/ingress` instance attached to the target cgroup
//! instead; that hook can only drop.
//!
//! Per packet: two array lookups for the attachment's rule slots (nothing else when none is
//! armed); on TC, the protocol and ports read in place and checked against what the armed rules
//! accept together (most packets of a host leave here); then a parse of the IPv4/IPv6 and
//! TCP/UDP headers into per-CPU scratch space, the LPM and cgroup lookups that some armed rule
//! needs, and each armed rule's filters, deadline and probability. Rules decide into a
//! [`Verdict`]; the verdict is applied once at the end.

use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};

use crate::bits::lowest_bit;
use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_INGRESS, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{
        bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_ktime_get_ns,
        bpf_loop, bpf_redirect, bpf_skb_ancestor_cgroup_id,
    },
    macros::{cgroup_skb, classifier, map},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::{SkBuffContext, TcContext, sk_buff::SkBuff},
};
use chaos_common::{
    PROBABILITY_ONE,
    net::{
        AttachSlots, CidrKey, DIST_SCALE, DIST_TABLE_SIZE, DUP_MARK, IfAttach, MAX_ATTACHMENTS,
        MAX_CGROUP_DEPTH, MAX_NET_RULES, MAX_SHARED_IFINDEX, NetCounters, NetRule, NetState,
        action, cidr, dist, matches, proto_class, via,
    },
};

/// Set by the loader to the attachment this program instance serves (see
/// `chaos_common::net::ATTACH_ID_GLOBAL`); 0 for the shared TC instances, which find it by the
/// packet's interface in [`CHAOS_NET_IFATT`]. Read with a volatile load so the compiler cannot
/// fold the default.
#[unsafe(no_mangle)]
static CHAOS_ATTACH_ID: u32 = 0;

/// Set by the loader to which copy of the TC program this instance is
/// (`chaos_common::net::TC_VIA_GLOBAL`): [`via::FIRST`] unless a handover loaded it as the TCX
/// copy. Volatile load, as above.
#[unsafe(no_mangle)]
static CHAOS_TC_VIA: u32 = via::FIRST;

/// Interface index -> the attachment ids of the shared TC instances on it (see
/// `chaos_common::net::NET_IFATTACH_MAP`).
#[map(name = "CHAOS_NET_IFATT")]
static CHAOS_NET_IFATT: Array<IfAttach> = Array::pinned(MAX_SHARED_IFINDEX, 0);

/// Rule slots, indexed by slot number. Pinned so every `chaos` process shares them.
#[map(name = "CHAOS_NET_RULES")]
static CHAOS_NET_RULES: Array<NetRule> = Array::pinned(MAX_NET_RULES, 0);

/// Per-rule, per-CPU counters, indexed like [`CHAOS_NET_RULES`].
#[map(name = "CHAOS_NET_COUNT")]
static CHAOS_NET_COUNT: PerCpuArray<NetCounters> = PerCpuArray::pinned(MAX_NET_RULES, 0);

/// Per-rule shared state (Markov chain, pacing), indexed like [`CHAOS_NET_RULES`].
#[map(name = "CHAOS_NET_STATE")]
static CHAOS_NET_STATE: Array<NetState> = Array::pinned(MAX_NET_RULES, 0);

/// Attachment id -> the rule slots armed on it (all zero: none). An array, whose lookup the
/// verifier inlines: this is the one lookup every packet pays.
#[map(name = "CHAOS_NET_ATTACH")]
static CHAOS_NET_ATTACH: Array<AttachSlots> = Array::pinned(MAX_ATTACHMENTS, 0);

/// Address prefixes -> rule slots they select (see `chaos_common::net::NET_CIDR_MAP`).
/// `BPF_F_NO_PREALLOC` is mandatory for LPM tries.
#[map(name = "CHAOS_NET_CIDR")]
static CHAOS_NET_CIDR: LpmTrie<CidrKey, u64> = LpmTrie::pinned(16384, 1);

/// cgroup v2 id -> rule slots that target it (and every cgroup below it).
#[map(name = "CHAOS_NET_CGRP")]
static CHAOS_NET_CGRP: HashMap<u64, u64> = HashMap::pinned(4096, 0);

/// The verdict being built for the packet in hand, one per CPU. Kept in a map rather than on the
/// stack so that the verifier does not track its fields as constants: with them on the stack,
/// every combination of earlier rules' decisions was a separate state and a 64-slot loop blew
/// the 1M-instruction budget.
#[map(name = "CHAOS_NET_VERD")]
static CHAOS_NET_VERD: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory for one packet: what the rules decided, and what `judge_next` needs
/// (too big for the 512-byte BPF stack next to everything else; `bpf_loop` hands its callback
/// only a stack pointer, so the callback finds it here).
#[repr(C)]
#[derive(Default)]
pub struct Scratch {
    verdict: Verdict,
    judging: Judging,
}

/// Socket cookie -> rule slots that target it.
#[map(name = "CHAOS_NET_SOCK")]
static CHAOS_NET_SOCK: HashMap<u64, u64> = HashMap::pinned(65536, 0);

/// Interface index -> rule slots limited to it.
#[map(name = "CHAOS_NET_IFACE")]
static CHAOS_NET_IFACE: HashMap<u32, u64> = HashMap::pinned(1024, 0);

/// Jitter distribution tables, `dist::KINDS` tables of `DIST_TABLE_SIZE` entries.
#[map(name = "CHAOS_NET_DIST")]
static CHAOS_NET_DIST: Array<i16> = Array::pinned(dist::KINDS * DIST_TABLE_SIZE, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// TC egress hook.
#[classifier]
pub fn chaos_tc_egress(ctx: TcContext) -> i32 {
    tc(&ctx, Hook::TcEgress)
}

/// TC ingress hook.
#[classifier]
pub fn chaos_tc_ingress(ctx: TcContext) -> i32 {
    tc(&ctx, Hook::TcIngress)
}

/// cgroup ingress hook, for inbound faults selected by cgroup or process: it runs when the
/// packet reaches a socket of the cgroup (or one below it), so the socket is known. 1 lets the
/// packet through, 0 drops it; nothing else can be done here.
#[cgroup_skb(ingress)]
pub fn chaos_cgroup_ingress(ctx: SkBuffContext) -> i32 {
    let Some(a) = attachment(&ctx.skb, Hook::CgroupIngress) else {
        return 1;
    };
    match judge_packet(&ctx.skb, Hook::CgroupIngress, 0, a) {
        // SAFETY: this CPU's scratch value, just filled.
        Some(scratch) if unsafe { (*scratch).verdict.drop } != 0 => 0,
        _ => 1,
    }
}

/// Where a program instance runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    TcEgress,
    TcIngress,
    CgroupIngress,
}

impl Hook {
    /// Whether the packet carries its socket here (TC ingress runs before socket lookup).
    fn has_socket(self) -> bool {
        self != Hook::TcIngress
    }
}

/// What the packet's headers say.
#[repr(C)]
#[derive(Default)]
struct Packet {
    v6: bool,
    proto: u8,
    sport: u16,
    dport: u16,
    src: [u8; 16],
    dst: [u8; 16],
    /// Offset of the L4 payload (after the TCP/UDP header), 0 if unknown.
    payload: u32,
    len: u32,
    /// Length on the wire as qdiscs (and netem's rate) count it: `len` plus the headers of
    /// every GSO segment after the first.
    wire_len: u32,
    /// The interface the packet is on.
    ifindex: u32,
}

/// What the armed rules decided for one packet.
#[repr(C)]
#[derive(Default)]
pub struct Verdict {
    drop: u32,
    corrupt: u32,
    duplicate: u32,
    /// Earliest departure time to set (CLOCK_MONOTONIC ns), 0 for none.
    tstamp: u64,
    priority: u32,
    redirect: u32,
}

fn tc(ctx: &TcContext, hook: Hook) -> i32 {
    // The context is only ever accessed through this raw pointer, never a `&mut`: helpers such
    // as `bpf_clone_redirect` read it behind the compiler's back, so a reference's no-alias
    // promise would let the compiler drop the mark written just before the clone.
    let skb = ctx.skb.skb;
    let a = attachment(&ctx.skb, hook);
    // During a handover two instances run on the hook (the TCX copy first, then the clsact
    // filter): the one the attachment names judges, the other passes every packet on.
    // SAFETY: reading a plain static; volatile so the loader-set value is used.
    let judges = a.is_some_and(|a| a.via == unsafe { read_volatile(&CHAOS_TC_VIA) });
    // SAFETY: `skb` is the valid context pointer the kernel handed to the program.
    let mark = unsafe { read_volatile(&(*skb).mark) };
    if mark & DUP_MARK != 0 {
        // A copy made by `duplicate`: let it go untouched. The judging instance clears the mark
        // (the other runs first during a handover, and must leave the mark for it to see).
        if judges || a.is_none() {
            // SAFETY: as above; `mark` is writable from TC programs.
            unsafe { write_volatile(&mut (*skb).mark, mark & !DUP_MARK) };
        }
        return TC_ACT_UNSPEC;
    }
    let Some(a) = a else {
        return TC_ACT_UNSPEC;
    };
    if !judges || a.slots == 0 {
        return TC_ACT_UNSPEC;
    }
    // The common case of a packet no rule can select, decided from the headers read in place:
    // no scratch space, no parse, no copy.
    // SAFETY: as above.
    if let Some((class, sport, dport)) = unsafe { peek(skb) }
        && !envelope_admits(a, class, sport, dport)
    {
        return TC_ACT_UNSPEC;
    }
    // What a qdisc counts for the packet: with GSO, every segment's headers (the kernel sets it
    // before the egress hook). Only TC programs may read it.
    // SAFETY: as above.
    let wire_len = unsafe { read_volatile(&(*skb).wire_len) };
    let Some(scratch) = judge_packet(&ctx.skb, hook, wire_len, a) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: this CPU's scratch value, just filled; nothing else runs on this CPU meanwhile.
    let scratch = unsafe { &*scratch };
    if scratch.verdict.drop != 0 {
        return TC_ACT_SHOT;
    }
    apply(
        ctx,
        &scratch.judging.pkt,
        &scratch.verdict,
        hook == Hook::TcIngress,
    )
}

/// The rules armed on this instance's attachment.
#[inline(always)]
fn attachment(skb: &SkBuff, hook: Hook) -> Option<&'static AttachSlots> {
    // SAFETY: reading a plain static; volatile so the loader-set value is used.
    let mut attach_id = unsafe { core::ptr::read_volatile(&CHAOS_ATTACH_ID) };
    if attach_id == 0 {
        // A shared instance: the interface says which attachment this is (TC only; the cgroup
        // instances are always loaded with their id).
        // SAFETY: context field read.
        let ifindex = unsafe { read_volatile(&(*skb.skb).ifindex) };
        let ids = CHAOS_NET_IFATT.get_ptr(ifindex)?;
        // SAFETY: map value pointer from a successful lookup.
        let ids = unsafe { &*ids };
        attach_id = if hook == Hook::TcIngress {
            ids.ingress
        } else {
            ids.egress
        };
    }
    let attach = CHAOS_NET_ATTACH.get_ptr(attach_id)?;
    // SAFETY: map value pointer from a successful lookup (array values live as long as the
    // map, which the program holds); user space replaces it atomically.
    Some(unsafe { &*attach })
}

/// Whether some rule of `a` accepts the protocol class and the ports: the envelope of the
/// attachment's rules, checked before any per-rule work.
#[inline(always)]
fn envelope_admits(a: &AttachSlots, class: u32, sport: u16, dport: u16) -> bool {
    a.protos & class != 0
        && dport >= a.dport_lo
        && dport <= a.dport_hi
        && sport >= a.sport_lo
        && sport <= a.sport_hi
}

/// The protocol class of an IP protocol number.
#[inline(always)]
fn class_of(proto: u8) -> u32 {
    match proto {
        IPPROTO_TCP => proto_class::TCP,
        IPPROTO_UDP => proto_class::UDP,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => proto_class::ICMP,
        _ => proto_class::OTHER,
    }
}

/// The protocol class and the source and destination ports of a TC packet, read in place from
/// the linear data; `None` when they are not all there or the IPv4 header has options (then
/// [`parse`] decides). Gives what [`parse`] would: ports 0 for other protocols, class
/// [`proto_class::OTHER`] for packets that are not IP.
///
/// # Safety
/// `skb` is the TC program's context.
#[inline(always)]
unsafe fn peek(skb: *mut __sk_buff) -> Option<(u32, u16, u16)> {
    // SAFETY: context fields readable from TC programs.
    let (data, end) = unsafe {
        (
            read_volatile(&(*skb).data) as usize,
            read_volatile(&(*skb).data_end) as usize,
        )
    };
    if data + ETH_HLEN > end {
        return None;
    }
    // SAFETY (block): every read below is within bounds checked before it.
    unsafe {
        let ethertype = u16::from_be(((data + 12) as *const u16).read_unaligned());
        let (proto, l4) = match ethertype {
            ETH_P_IP => {
                if data + ETH_HLEN + 20 > end || *((data + ETH_HLEN) as *const u8) != 0x45 {
                    return None;
                }
                (*((data + ETH_HLEN + 9) as *const u8), data + ETH_HLEN + 20)
            }
            ETH_P_IPV6 => {
                if data + ETH_HLEN + 40 > end {
                    return None;
                }
                (*((data + ETH_HLEN + 6) as *const u8), data + ETH_HLEN + 40)
            }
            _ => return Some((proto_class::OTHER, 0, 0)),
        };
        let class = class_of(proto);
        if class != proto_class::TCP && class != proto_class::UDP {
            return Some((class, 0, 0));
        }
        if l4 + 4 > end {
            return None;
        }
        let sport = u16::from_be((l4 as *const u16).read_unaligned());
        let dport = u16::from_be(((l4 + 2) as *const u16).read_unaligned());
        Some((class, sport, dport))
    }
}

/// Judges the packet against the rules armed on attachment `a`; `None` when none selects it.
/// The verdict is in the returned per-CPU scratch value. `wire_len`: the packet's length as
/// qdiscs count it, 0 if unknown.
fn judge_packet(skb: &SkBuff, hook: Hook, wire_len: u32, a: &AttachSlots) -> Option<*mut Scratch> {
    if a.slots == 0 {
        return None;
    }
    let needs = a.needs;
    let scratch = CHAOS_NET_VERD.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch value; nothing else runs on this CPU while we do. Everything is
    // written in place: the BPF stack (512 bytes for all frames) has no room for copies.
    let s = unsafe { &mut *scratch };
    let j = &mut s.judging;
    parse(skb, hook, &mut j.pkt);
    // Packets no armed rule can select leave here, before any per-rule work: the protocols and
    // port envelopes the rules accept, then the sets they need the packet in.
    let pkt = &j.pkt;
    if !envelope_admits(a, class_of(pkt.proto), pkt.sport, pkt.dport) {
        return None;
    }
    if wire_len > j.pkt.len {
        j.pkt.wire_len = wire_len;
    }
    let pkt = &j.pkt;
    let lookup = |kind: u8, addr: &[u8; 16]| -> u64 {
        let key = Key::new(
            8 + if pkt.v6 { 128 } else { 32 },
            CidrKey {
                kind: kind + if pkt.v6 { 2 } else { 0 },
                addr: *addr,
                _pad: [0; 3],
            },
        );
        // IPv4 addresses use the first 4 bytes; `parse` leaves the rest zero.
        CHAOS_NET_CIDR.get(&key).copied().unwrap_or(0)
    };
    let known = pkt.proto != 0;
    let wants = |bit: u32| known && needs & bit != 0;
    let sel = &mut j.sel;
    sel.dst = if wants(matches::DST) {
        lookup(cidr::DST4, &pkt.dst)
    } else {
        0
    };
    sel.src = if wants(matches::SRC) {
        lookup(cidr::SRC4, &pkt.src)
    } else {
        0
    };
    sel.xdst = if wants(matches::XDST) {
        lookup(cidr::DST4 + cidr::EXCLUDE, &pkt.dst)
    } else {
        0
    };
    sel.xsrc = if wants(matches::XSRC) {
        lookup(cidr::SRC4 + cidr::EXCLUDE, &pkt.src)
    } else {
        0
    };
    sel.cgroup = if needs & matches::CGROUP != 0 && hook.has_socket() {
        cgroup_slots(skb)
    } else {
        0
    };
    sel.socket = if needs & matches::SOCKET != 0 && hook.has_socket() {
        // SAFETY: helper on the program's own context; 0 when the packet has no socket.
        let cookie = unsafe { bpf_get_socket_cookie(skb.skb.cast()) };
        // SAFETY: plain u64 value.
        unsafe { CHAOS_NET_SOCK.get(cookie) }.copied().unwrap_or(0)
    } else {
        0
    };
    sel.iface = if needs & matches::IFINDEX != 0 {
        // SAFETY: plain u32 key.
        unsafe { CHAOS_NET_IFACE.get(pkt.ifindex) }
            .copied()
            .unwrap_or(0)
    } else {
        0
    };
    // A rule that needs the packet in a set it is not in cannot select it.
    let slots = a.slots
        & !(a.need_dst & !sel.dst)
        & !(a.need_src & !sel.src)
        & !(a.need_cgroup & !sel.cgroup)
        & !(a.need_socket & !sel.socket)
        & !(a.need_iface & !sel.iface);
    if slots == 0 {
        return None;
    }
    j.slots = slots;
    s.verdict = Verdict::default();
    // SAFETY: helpers without arguments.
    (j.boot_now, j.mono_now) = unsafe { (bpf_ktime_get_boot_ns(), bpf_ktime_get_ns()) };
    // The rules are judged from a bpf_loop callback, which the verifier checks once, instead of
    // an unrolled-in-verification loop whose states multiplied with every filter (it hit the 1M
    // instruction limit). One iteration per armed slot, lowest first.
    // SAFETY: the callback takes no context; it works on this CPU's scratch value.
    unsafe {
        bpf_loop(
            MAX_NET_RULES + 1,
            judge_next as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    Some(scratch)
}

/// The slots whose cgroups hold the packet's socket: its own cgroup or any ancestor (level 0 is
/// the root, which only a forced rule targets).
fn cgroup_slots(skb: &SkBuff) -> u64 {
    let mut slots = 0;
    let mut level = 0;
    while level <= MAX_CGROUP_DEPTH {
        // SAFETY: helper on the program's own context; 0 past the socket's own level or without
        // a full socket.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(skb.skb, level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: plain u64 value.
        slots |= unsafe { CHAOS_NET_CGRP.get(id) }.copied().unwrap_or(0);
        level += 1;
    }
    slots
}

/// The state of one packet's judging, read by [`judge_next`].
#[repr(C)]
#[derive(Default)]
struct Judging {
    /// Slots still to judge.
    slots: u64,
    pkt: Packet,
    sel: Selected,
    boot_now: u64,
    mono_now: u64,
}

/// `bpf_loop` callback: judges the lowest slot left; returns 1 (stop) when none is left or the
/// packet is to be dropped.
extern "C" fn judge_next(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = CHAOS_NET_VERD.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value, filled by `run` before `bpf_loop`.
    let Scratch {
        verdict,
        judging: j,
    } = unsafe { &mut *scratch };
    if j.slots == 0 {
        return 1;
    }
    let slot = lowest_bit(j.slots);
    j.slots &= j.slots - 1;
    judge(slot, &j.pkt, &j.sel, j.boot_now, j.mono_now, verdict);
    i64::from(verdict.drop != 0)
}

/// Results of the shared lookups: for each, the slots it selects.
#[repr(C)]
#[derive(Default)]
struct Selected {
    dst: u64,
    src: u64,
    xdst: u64,
    xsrc: u64,
    cgroup: u64,
    socket: u64,
    iface: u64,
}

/// Reads the headers. TC programs see the Ethernet header; cgroup programs start at the network
/// header and learn the protocol from `skb->protocol`.
fn parse(ctx: &SkBuff, hook: Hook, p: &mut Packet) {
    let skb = ctx.skb;
    // SAFETY (both): `skb` is the program's context; these fields are readable from TC and
    // cgroup programs.
    let (ifindex, protocol) = unsafe {
        (
            read_volatile(&(*skb).ifindex),
            read_volatile(&(*skb).protocol),
        )
    };
    *p = Packet {
        len: ctx.len(),
        wire_len: ctx.len(),
        ifindex,
        ..Packet::default()
    };
    // SAFETY: as above; data and data_end are readable from TC and cgroup programs.
    let (data, end) = unsafe {
        (
            read_volatile(&(*skb).data) as usize,
            read_volatile(&(*skb).data_end) as usize,
        )
    };
    // The common case, headers in the linear data, read in place at constant offsets.
    let done = if hook == Hook::CgroupIngress {
        parse_direct::<0>(data, end, u16::from_be(protocol as u16), p)
    } else {
        data + ETH_HLEN <= end && {
            // SAFETY: bounds-checked just above.
            let ethertype = unsafe { ((data + 12) as *const u16).read_unaligned() };
            parse_direct::<ETH_HLEN>(data, end, u16::from_be(ethertype), p)
        }
    };
    if done {
        return;
    }
    let (l3, ethertype) = if hook == Hook::CgroupIngress {
        (0, u16::from_be(protocol as u16))
    } else {
        let Ok(ethertype) = load::<u16>(ctx, 12) else {
            return;
        };
        (ETH_HLEN, u16::from_be(ethertype))
    };
    let l4 = match ethertype {
        ETH_P_IP => {
            let (Ok(vihl), Ok(proto)) = (load::<u8>(ctx, l3), load::<u8>(ctx, l3 + 9)) else {
                return;
            };
            let (Ok(s), Ok(d)) = (load::<[u8; 4]>(ctx, l3 + 12), load::<[u8; 4]>(ctx, l3 + 16))
            else {
                return;
            };
            p.src[..4].copy_from_slice(&s);
            p.dst[..4].copy_from_slice(&d);
            p.proto = proto;
            l3 + usize::from(vihl & 0x0f) * 4
        }
        ETH_P_IPV6 => {
            let Ok(next) = load::<u8>(ctx, l3 + 6) else {
                return;
            };
            let (Ok(s), Ok(d)) = (
                load::<[u8; 16]>(ctx, l3 + 8),
                load::<[u8; 16]>(ctx, l3 + 24),
            ) else {
                return;
            };
            p.v6 = true;
            p.src = s;
            p.dst = d;
            // Extension headers are not followed: their packets match by address and protocol
            // "other" only.
            p.proto = next;
            l3 + 40
        }
        _ => return,
    };
    let header = match p.proto {
        IPPROTO_TCP => load::<u8>(ctx, l4 + 12)
            .map(|off| usize::from(off >> 4) * 4)
            .unwrap_or(20),
        IPPROTO_UDP => 8,
        _ => 0,
    };
    if header != 0
        && let (Ok(sport), Ok(dport)) = (load::<u16>(ctx, l4), load::<u16>(ctx, l4 + 2))
    {
        p.sport = u16::from_be(sport);
        p.dport = u16::from_be(dport);
        p.payload = (l4 + header) as u32;
    }
}

/// Reads IPv4 (without options) or IPv6 headers and the ports in place, `L3` bytes into the
/// linear data; `false` when they are not all there (then `parse` loads them).
#[inline(always)]
fn parse_direct<const L3: usize>(data: usize, end: usize, ethertype: u16, p: &mut Packet) -> bool {
    // Up to the IPv6 ports; an IPv4 packet with its ports is shorter, so check per family.
    let l4 = match ethertype {
        ETH_P_IP => {
            if data + L3 + 24 > end {
                return false;
            }
            let at = |off: usize| (data + L3 + off) as *const u8;
            // SAFETY (block): every read is within the 24 bytes checked above.
            unsafe {
                if *at(0) != 0x45 {
                    return false;
                }
                p.proto = *at(9);
                p.src[..4].copy_from_slice(&*(at(12) as *const [u8; 4]));
                p.dst[..4].copy_from_slice(&*(at(16) as *const [u8; 4]));
            }
            20
        }
        ETH_P_IPV6 => {
            if data + L3 + 44 > end {
                return false;
            }
            let at = |off: usize| (data + L3 + off) as *const u8;
            // SAFETY (block): every read is within the 44 bytes checked above.
            unsafe {
                p.v6 = true;
                p.proto = *at(6);
                p.src = *(at(8) as *const [u8; 16]);
                p.dst = *(at(24) as *const [u8; 16]);
            }
            40
        }
        // Not IP: nothing more to read.
        _ => return true,
    };
    let at = |off: usize| (data + L3 + l4 + off) as *const u8;
    match p.proto {
        IPPROTO_UDP => p.payload = (L3 + l4 + 8) as u32,
        IPPROTO_TCP => {
            // The header length, for corrupt's payload offset; 20 when it is not linear.
            let header = if data + L3 + l4 + 13 <= end {
                // SAFETY: bounds-checked just above.
                usize::from(unsafe { *at(12) } >> 4) * 4
            } else {
                20
            };
            p.payload = (L3 + l4 + header) as u32;
        }
        _ => return true,
    }
    // SAFETY: the ports are within the bytes checked for the family.
    unsafe {
        p.sport = u16::from_be((at(0) as *const u16).read_unaligned());
        p.dport = u16::from_be((at(2) as *const u16).read_unaligned());
    }
    true
}

/// Reads a `T` at `off` bytes into the packet (`bpf_skb_load_bytes`: direct packet access with
/// offsets computed from the headers did not pass the verifier).
#[inline(always)]
fn load<T: Copy>(ctx: &SkBuff, off: usize) -> Result<T, i64> {
    ctx.load(off)
}

/// Whether `rule`'s filters select the packet.
fn selects(rule: &NetRule, slot: u32, pkt: &Packet, sel: &Selected) -> bool {
    let bit = 1u64 << slot;
    let m = rule.matches;
    if m & matches::PROTO != 0 {
        let p = pkt.proto as u32;
        let icmp = rule.proto == IPPROTO_ICMP as u32 && p == IPPROTO_ICMPV6 as u32;
        if p != rule.proto && !icmp {
            return false;
        }
    }
    if m & matches::DPORT != 0 && (pkt.dport < rule.dport_lo || pkt.dport > rule.dport_hi) {
        return false;
    }
    if m & matches::SPORT != 0 && (pkt.sport < rule.sport_lo || pkt.sport > rule.sport_hi) {
        return false;
    }
    if (m & matches::DST != 0 && sel.dst & bit == 0)
        || (m & matches::SRC != 0 && sel.src & bit == 0)
        || (m & matches::CGROUP != 0 && sel.cgroup & bit == 0)
        || (m & matches::SOCKET != 0 && sel.socket & bit == 0)
        || (m & matches::IFINDEX != 0 && sel.iface & bit == 0)
        || (m & matches::XDST != 0 && sel.xdst & bit != 0)
        || (m & matches::XSRC != 0 && sel.xsrc & bit != 0)
    {
        return false;
    }
    if m & matches::XPORT != 0 && pkt.payload != 0 {
        let mut i = 0;
        while i < rule.exclude_ports.len() {
            let x = rule.exclude_ports[i];
            if x != 0 && (x == pkt.sport || x == pkt.dport) {
                return false;
            }
            i += 1;
        }
    }
    true
}

fn judge(slot: u32, pkt: &Packet, sel: &Selected, boot_now: u64, mono_now: u64, v: &mut Verdict) {
    let Some(rule) = CHAOS_NET_RULES.get(slot) else {
        return;
    };
    if rule.action == action::NONE {
        return;
    }
    let counters = CHAOS_NET_COUNT.get_ptr_mut(slot);
    let count = |f: fn(&mut NetCounters)| {
        if let Some(c) = counters {
            // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
            f(unsafe { &mut *c });
        }
    };
    count(|c| c.seen += 1);
    if boot_now >= rule.deadline_ns || !selects(rule, slot, pkt, sel) {
        return;
    }
    count(|c| c.matched += 1);
    let state = CHAOS_NET_STATE.get_ptr_mut(slot);
    // The Markov chain: the threshold depends on whether the rule acted on the last packet.
    // SAFETY: map value pointer; races between CPUs only blur the chain, never break memory.
    let last_hit = state.is_some_and(|s| unsafe { (*s).last_hit } != 0);
    let threshold = if last_hit {
        rule.threshold_after_hit
    } else {
        rule.threshold
    };
    // SAFETY: helper without arguments.
    let roll = u64::from(unsafe { bpf_get_prandom_u32() });
    let hit = threshold >= PROBABILITY_ONE || roll < threshold;
    if let Some(s) = state {
        // SAFETY: as above.
        unsafe { (*s).last_hit = hit as u64 };
    }
    if !hit {
        return;
    }
    count(|c| c.acted += 1);
    match rule.action {
        action::DROP => v.drop = 1,
        action::CORRUPT => v.corrupt = 1,
        action::DUPLICATE => v.duplicate = 1,
        action::DELAY => {
            let at = mono_now.saturating_add(rule.delay_ns);
            let at = add_jitter(at, rule.jitter_ns, rule.distribution);
            v.tstamp = v.tstamp.max(at);
        }
        action::RATE => {
            if let Some(s) = state {
                // SAFETY: as above; concurrent packets may share a departure slot.
                let next = unsafe { &mut (*s).next_departure_ns };
                let at = (*next).max(mono_now);
                // Wire bytes, as netem's rate counts them: a GSO packet pays for the headers
                // each of its segments will carry.
                let cost = (pkt.wire_len as u64).saturating_mul(1_000_000_000)
                    / rule.rate_bytes_per_s.max(1);
                *next = at.saturating_add(cost);
                v.tstamp = v.tstamp.max(at);
            }
        }
        action::STEER => v.priority = rule.priority,
        action::REDIRECT => {
            v.priority = rule.priority;
            v.redirect = rule.redirect_ifindex;
        }
        _ => {}
    }
}

/// `at` moved by a jitter sample: uniform in `[-jitter, +jitter]`, or from a distribution table
/// with sigma = jitter. Never earlier than `at - jitter`, never negative.
fn add_jitter(at: u64, jitter: u64, kind: u32) -> u64 {
    if jitter == 0 {
        return at;
    }
    // SAFETY: helper without arguments.
    let r = u64::from(unsafe { bpf_get_prandom_u32() });
    let offset: i64 = if kind == dist::UNIFORM || kind >= dist::KINDS {
        (r % (2 * jitter + 1)) as i64 - jitter as i64
    } else {
        let index = kind * DIST_TABLE_SIZE + (r as u32 % DIST_TABLE_SIZE);
        let t = CHAOS_NET_DIST.get(index).copied().unwrap_or(0) as i64;
        t * jitter as i64 / DIST_SCALE
    };
    if offset < 0 {
        at.saturating_sub(offset.unsigned_abs())
    } else {
        at.saturating_add(offset as u64)
    }
}

fn apply(ctx: &TcContext, pkt: &Packet, v: &Verdict, ingress: bool) -> i32 {
    let skb = ctx.skb.skb;
    if v.corrupt != 0 && pkt.payload != 0 && pkt.payload < pkt.len {
        // SAFETY: helper without arguments.
        let r = unsafe { bpf_get_prandom_u32() };
        let offset = pkt.payload + r % (pkt.len - pkt.payload);
        if let Ok(byte) = ctx.load::<u8>(offset as usize) {
            let flipped = byte ^ (1u8 << ((r >> 24) & 7));
            // No checksum fix-up: the receiver's checksum check catches it, unless the
            // checksum is computed after us (offload), and then the payload is corrupt.
            let _ = ctx.store(offset as usize, &flipped, 0);
        }
    }
    // SAFETY (all accesses below): `skb` is the program's context; mark, tstamp and priority
    // are writable from TC programs, and volatile accesses keep their order around helpers.
    if v.duplicate != 0 {
        let mark = unsafe { read_volatile(&(*skb).mark) };
        unsafe { write_volatile(&mut (*skb).mark, mark | DUP_MARK) };
        let flags = if ingress { BPF_F_INGRESS as u64 } else { 0 };
        let ifindex = unsafe { read_volatile(&(*skb).ifindex) };
        let _ = ctx.clone_redirect(ifindex, flags);
        unsafe { write_volatile(&mut (*skb).mark, mark) };
    }
    if v.tstamp != 0 && !ingress {
        let now = unsafe { read_volatile(&(*skb).tstamp) };
        unsafe { write_volatile(&mut (*skb).tstamp, now.max(v.tstamp)) };
    }
    if v.priority != 0 {
        unsafe { write_volatile(&mut (*skb).priority, v.priority) };
    }
    if v.redirect != 0 {
        // SAFETY: plain helper call; the kernel checks the interface index.
        return unsafe { bpf_redirect(v.redirect, 0) } as i32;
    }
    TC_ACT_UNSPEC
}
