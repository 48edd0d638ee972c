//! Network faults: TC program instances per interface and direction ("attachments"), and rule
//! slots in the shared maps.

use std::path::PathBuf;

use aya::{
    maps::{
        Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SchedClassifier, TcAttachType,
        links::{FdLink, LinkOrder},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle, qdisc_add_clsact},
    },
    util::nr_cpus,
};
use chaos_common::net::{
    ATTACH_ID_GLOBAL, AttachSlots, CidrKey, DIST_TABLE_SIZE, IfAttach, MAX_NET_RULES,
    MAX_SHARED_IFINDEX, NET_ATTACH_MAP, NET_CGROUP_MAP, NET_CIDR_MAP, NET_COUNTERS_MAP,
    NET_DIST_MAP, NET_IFACE_MAP, NET_IFATTACH_MAP, NET_RULES_MAP, NET_SOCKET_MAP, NET_STATE_MAP,
    NetCounters, NetRule, NetState, PROG_CGROUP_INGRESS, PROG_TC_EGRESS, PROG_TC_INGRESS,
    TC_VIA_GLOBAL, action, cidr, dist, matches, proto_class, via,
};
use ipnet::IpNet;

use super::{
    detach, find_program, load_program, map_err, pin_link, replace_all, shaping, unpin_link,
};
use crate::{
    ebpf,
    error::{Error, Result},
    netns,
    plan::{CgroupTarget, Chance, Effect, Interface, NetPlan},
    spec::{Direction, Distribution, Proto},
    store::{AttachLink, Attachment, FaultRecord, Hook, NetArmed, Store},
    strategy::{Attach, NetStrategy, Shaping},
};

struct Maps {
    rules: Array<MapData, NetRule>,
    counters: PerCpuArray<MapData, NetCounters>,
    state: Array<MapData, NetState>,
    attach: Array<MapData, AttachSlots>,
    cidr: LpmTrie<MapData, CidrKey, u64>,
    cgroup: HashMap<MapData, u64, u64>,
    socket: HashMap<MapData, u64, u64>,
    iface: HashMap<MapData, u32, u64>,
    dist: Array<MapData, i16>,
}

fn open_maps() -> Result<Option<Maps>> {
    let (
        Some(rules),
        Some(counters),
        Some(state),
        Some(attach),
        Some(cidr),
        Some(cgroup),
        Some(socket),
        Some(iface),
        Some(dist),
    ) = (
        ebpf::typed_map(NET_RULES_MAP, Map::Array)?,
        ebpf::typed_map(NET_COUNTERS_MAP, Map::PerCpuArray)?,
        ebpf::typed_map(NET_STATE_MAP, Map::Array)?,
        ebpf::typed_map(NET_ATTACH_MAP, Map::Array)?,
        ebpf::typed_map(NET_CIDR_MAP, Map::LpmTrie)?,
        ebpf::typed_map(NET_CGROUP_MAP, Map::HashMap)?,
        ebpf::typed_map(NET_SOCKET_MAP, Map::HashMap)?,
        ebpf::typed_map(NET_IFACE_MAP, Map::HashMap)?,
        ebpf::typed_map(NET_DIST_MAP, Map::Array)?,
    )
    else {
        return Ok(None);
    };
    Ok(Some(Maps {
        rules,
        counters,
        state,
        attach,
        cidr,
        cgroup,
        socket,
        iface,
        dist,
    }))
}

/// The kernel rule for `plan`, without its deadline (set when it goes live). `band` is the netem
/// band (priority, redirect ifindex) for netem-shaped effects.
fn rule(plan: &NetPlan, strategy: NetStrategy, band: (u32, u32)) -> NetRule {
    let f = &plan.filter;
    let mut r = NetRule::EMPTY;
    if let Some(p) = f.proto {
        r.matches |= matches::PROTO;
        r.proto = match p {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        };
    }
    if let Some((lo, hi)) = f.dport {
        r.matches |= matches::DPORT;
        (r.dport_lo, r.dport_hi) = (lo, hi);
    }
    if let Some((lo, hi)) = f.sport {
        r.matches |= matches::SPORT;
        (r.sport_lo, r.sport_hi) = (lo, hi);
    }
    if !f.dst.is_empty() {
        r.matches |= matches::DST;
    }
    if !f.src.is_empty() {
        r.matches |= matches::SRC;
    }
    if !f.exclude_nets.is_empty() {
        r.matches |= matches::XDST | matches::XSRC;
    }
    if !f.exclude_ports.is_empty() {
        r.matches |= matches::XPORT;
        for (slot, p) in r.exclude_ports.iter_mut().zip(&f.exclude_ports) {
            *slot = *p;
        }
    }
    if !f.cgroups.is_empty() {
        r.matches |= matches::CGROUP;
    }
    if f.sockets.is_some() {
        r.matches |= matches::SOCKET;
    }
    if !plan.socket_hooks.is_empty() {
        // The cgroup hook sees the cgroup's packets on every interface: keep to the fault's.
        r.matches |= matches::IFINDEX;
    }
    let chance = |r: &mut NetRule, c: &Chance| {
        r.threshold = c.threshold;
        r.threshold_after_hit = c.threshold_after_hit;
    };
    let always = Chance::always();
    match (&plan.effect, strategy.shaping) {
        (Effect::Drop(c), _) => {
            r.action = action::DROP;
            chance(&mut r, c);
        }
        (Effect::Corrupt(c), _) => {
            r.action = action::CORRUPT;
            chance(&mut r, c);
        }
        (Effect::Duplicate(c), _) => {
            r.action = action::DUPLICATE;
            chance(&mut r, c);
        }
        (
            Effect::Delay {
                latency,
                jitter,
                distribution,
            },
            Shaping::Fq,
        ) => {
            r.action = action::DELAY;
            chance(&mut r, &always);
            r.delay_ns = latency.as_nanos() as u64;
            r.jitter_ns = jitter.as_nanos() as u64;
            r.distribution = match distribution {
                Distribution::Uniform => dist::UNIFORM,
                Distribution::Normal => dist::NORMAL,
                Distribution::Pareto => dist::PARETO,
                Distribution::Paretonormal => dist::PARETONORMAL,
            };
        }
        (Effect::Rate { bytes_per_s }, Shaping::Fq) => {
            r.action = action::RATE;
            chance(&mut r, &always);
            r.rate_bytes_per_s = *bytes_per_s;
        }
        // Netem does the shaping: the program only steers the packet into the band.
        (_, _) => {
            chance(&mut r, &always);
            (r.priority, r.redirect_ifindex) = band;
            r.action = if band.1 != 0 {
                action::REDIRECT
            } else {
                action::STEER
            };
        }
    }
    r
}

/// Address prefixes of `filter` as (`CidrKey` kind, prefix) pairs.
fn cidrs(filter: &crate::plan::NetFilter) -> Vec<(u8, IpNet)> {
    let mut out = Vec::new();
    for n in &filter.dst {
        out.push((cidr::DST4, *n));
    }
    for n in &filter.src {
        out.push((cidr::SRC4, *n));
    }
    for n in &filter.exclude_nets {
        out.push((cidr::DST4 + cidr::EXCLUDE, *n));
        out.push((cidr::SRC4 + cidr::EXCLUDE, *n));
    }
    out
}

/// The LPM key of a (base kind, prefix) pair: IPv6 kinds are the IPv4 ones + 2.
fn cidr_key(kind: u8, net: &IpNet) -> Key<CidrKey> {
    let mut k = CidrKey {
        kind,
        ..CidrKey::default()
    };
    match net {
        IpNet::V4(n) => k.addr[..4].copy_from_slice(&n.addr().octets()),
        IpNet::V6(n) => {
            k.kind += 2;
            k.addr = n.addr().octets();
        }
    }
    Key::new(8 + u32::from(net.prefix_len()), k)
}

/// Arms a network rule: finds or creates the attachments, writes the rule into a free slot,
/// then brings the shared maps (attachment masks, prefixes, cgroups) in line with every armed
/// fault. On any error everything this call did is undone before the error is returned.
pub(crate) fn arm(
    store: &Store,
    faults: &[FaultRecord],
    plan: &NetPlan,
    strategy: NetStrategy,
    duration: std::time::Duration,
) -> Result<(NetArmed, u64)> {
    let used: Vec<u32> = faults
        .iter()
        .filter_map(|f| f.net.as_ref().map(|n| n.slot))
        .collect();
    let slot = (0..MAX_NET_RULES)
        .find(|s| !used.contains(s))
        .ok_or_else(|| Error::Unsupported {
            what: "arm another network rule".into(),
            why: format!("all {MAX_NET_RULES} rule slots are in use; recover some faults first"),
        })?;
    let others: Vec<&NetArmed> = faults.iter().filter_map(|f| f.net.as_ref()).collect();
    // Qdiscs first: the rule needs the band it steers into.
    let shaping = shaping::prepare(plan, strategy.shaping, &others)?;
    let mut rule = rule(plan, strategy, shaping.band());
    let mut armed = NetArmed {
        slot,
        attachments: Vec::new(),
        needs: rule.matches,
        cidrs: cidrs(&plan.filter),
        cgroups: plan.filter.cgroups.iter().map(|c| c.id).collect(),
        sockets: plan
            .filter
            .sockets
            .as_ref()
            .map(|s| s.cookies.clone())
            .unwrap_or_default(),
        ifindexes: if plan.socket_hooks.is_empty() {
            Vec::new()
        } else {
            plan.interfaces.iter().map(|i| i.ifindex).collect()
        },
        protos: match plan.filter.proto {
            None => proto_class::ALL,
            Some(Proto::Tcp) => proto_class::TCP,
            Some(Proto::Udp) => proto_class::UDP,
            Some(Proto::Icmp) => proto_class::ICMP,
        },
        dports: plan.filter.dport,
        sports: plan.filter.sport,
        shaping,
    };
    let mut created = Vec::new();
    let result = (|| {
        let mut hooks = Vec::new();
        for interface in &plan.interfaces {
            for &direction in plan.direction.parts() {
                if direction == Direction::Ingress && !plan.socket_hooks.is_empty() {
                    continue;
                }
                hooks.push(Hook::Tc {
                    interface: interface.clone(),
                    direction,
                });
            }
        }
        for cgroup in &plan.socket_hooks {
            hooks.push(Hook::CgroupIngress {
                cgroup: cgroup.clone(),
            });
        }
        for hook in hooks {
            let (a, new) = find_or_attach(store, hook, strategy.attach)?;
            if new {
                created.push(a.clone());
            }
            armed.attachments.push(a.id);
        }
        let mut maps = open_maps()?.ok_or_else(|| Error::Store {
            path: ebpf::MAP_PIN_DIR.into(),
            problem: "maps missing right after loading the programs".into(),
        })?;
        if rule.action == action::DELAY && rule.distribution != dist::UNIFORM {
            fill_dist_tables(&mut maps)?;
        }
        let zero = PerCpuValues::try_from(vec![NetCounters::default(); nr_cpus().unwrap_or(1)])
            .map_err(|e| Error::io("sizing per-CPU counters", e))?;
        maps.counters
            .set(slot, zero, 0)
            .map_err(map_err("zeroing rule counters"))?;
        maps.state
            .set(slot, NetState::default(), 0)
            .map_err(map_err("resetting rule state"))?;
        // The deadline counts from now, when the rule goes live, not from the start of arming
        // (loading and attaching can take seconds on a slow machine).
        rule.deadline_ns = crate::clock::boot_ns() + duration.as_nanos() as u64;
        maps.rules
            .set(slot, rule, 0)
            .map_err(map_err("writing the rule"))?;
        let mut all = others.clone();
        all.push(&armed);
        sync(&mut maps, &all, &[])
    })();
    match result {
        Ok(()) => Ok((armed, rule.deadline_ns)),
        Err(e) => {
            let _ = disarm(&armed, &others);
            for a in created {
                let _ = detach(&a);
                let _ = store.remove_attachment(a.id);
            }
            Err(e)
        }
    }
}

/// Takes a rule out of service: the shared maps are brought in line with `remaining` (the other
/// armed rules) first, so no packet sees a half-removed rule, then its slot is cleared and the
/// qdiscs it alone relied on are restored.
pub(crate) fn disarm(armed: &NetArmed, remaining: &[&NetArmed]) -> Result<()> {
    if let Some(mut maps) = open_maps()? {
        sync(&mut maps, remaining, &armed.attachments)?;
        maps.rules
            .set(armed.slot, NetRule::EMPTY, 0)
            .map_err(map_err("clearing the rule"))?;
    }
    shaping::release(&armed.shaping, remaining)
}

/// Rewrites the attachment masks, the prefix trie, the cgroup, socket and interface maps from
/// `armed`, the complete list of armed rules, and deletes entries nothing needs any more.
/// `released`: attachments a rule no longer in `armed` used, whose masks may need emptying
/// (reading all [`chaos_common::net::MAX_ATTACHMENTS`] entries instead cost a millisecond per
/// arming).
fn sync(maps: &mut Maps, armed: &[&NetArmed], released: &[u32]) -> Result<()> {
    use std::collections::BTreeMap;
    let bit = |a: &NetArmed| 1u64 << a.slot;

    // Per attachment: its rules, and the union of what they accept, so the program lets
    // through packets none of them can select before any per-rule work.
    let mut attach: BTreeMap<u32, AttachSlots> = BTreeMap::new();
    for a in armed {
        for &id in &a.attachments {
            let e = attach.entry(id).or_insert(AttachSlots {
                dport_lo: u16::MAX,
                sport_lo: u16::MAX,
                ..AttachSlots::default()
            });
            e.slots |= bit(a);
            e.needs |= a.needs;
            e.protos |= a.protos;
            let (dlo, dhi) = a.dports.unwrap_or((0, u16::MAX));
            let (slo, shi) = a.sports.unwrap_or((0, u16::MAX));
            (e.dport_lo, e.dport_hi) = (e.dport_lo.min(dlo), e.dport_hi.max(dhi));
            (e.sport_lo, e.sport_hi) = (e.sport_lo.min(slo), e.sport_hi.max(shi));
            for (need, bit_of) in [
                (matches::DST, &mut e.need_dst),
                (matches::SRC, &mut e.need_src),
                (matches::CGROUP, &mut e.need_cgroup),
                (matches::SOCKET, &mut e.need_socket),
                (matches::IFINDEX, &mut e.need_iface),
            ] {
                if a.needs & need != 0 {
                    *bit_of |= bit(a);
                }
            }
        }
    }
    // For every prefix, the union of the rules whose prefixes of the same kind cover it: the
    // trie's longest match then answers for all of them.
    let mut cidr: BTreeMap<(u8, IpNet), u64> = BTreeMap::new();
    for a in armed {
        for (kind, net) in &a.cidrs {
            cidr.insert((*kind, *net), 0);
        }
    }
    for ((kind, net), value) in cidr.iter_mut() {
        for a in armed {
            if a.cidrs.iter().any(|(k, n)| k == kind && n.contains(net)) {
                *value |= bit(a);
            }
        }
    }
    let mut cgroup: BTreeMap<u64, u64> = BTreeMap::new();
    let mut socket: BTreeMap<u64, u64> = BTreeMap::new();
    let mut iface: BTreeMap<u32, u64> = BTreeMap::new();
    for a in armed {
        for &id in &a.cgroups {
            *cgroup.entry(id).or_default() |= bit(a);
        }
        for &cookie in &a.sockets {
            *socket.entry(cookie).or_default() |= bit(a);
        }
        for &ifindex in &a.ifindexes {
            *iface.entry(ifindex).or_default() |= bit(a);
        }
    }

    // New values first, then the removal of stale keys.
    for (kind_net, value) in &cidr {
        maps.cidr
            .insert(&cidr_key(kind_net.0, &kind_net.1), value, 0)
            .map_err(map_err("writing an address prefix"))?;
    }
    let wanted: Vec<Key<CidrKey>> = cidr.keys().map(|(k, n)| cidr_key(*k, n)).collect();
    let stale: Vec<Key<CidrKey>> = maps
        .cidr
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| {
            !wanted
                .iter()
                .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data())
        })
        .collect();
    for k in stale {
        let _ = maps.cidr.remove(&k);
    }
    replace_all(&mut maps.cgroup, &cgroup)?;
    replace_all(&mut maps.socket, &socket)?;
    replace_all(&mut maps.iface, &iface)?;
    // New values first, then the attachments no rule uses any more are emptied. Which program
    // copy judges an attachment (`via`) is the attachment's, not the rules': it is kept.
    for (id, slots) in &attach {
        let via = maps.attach.get(id, 0).map_or(via::FIRST, |a| a.via);
        maps.attach
            .set(*id, AttachSlots { via, ..*slots }, 0)
            .map_err(map_err("writing an attachment's rules"))?;
    }
    for &id in released {
        if attach.contains_key(&id) {
            continue;
        }
        if let Ok(a) = maps.attach.get(&id, 0) {
            let empty = AttachSlots {
                via: a.via,
                ..AttachSlots::default()
            };
            if a != empty {
                maps.attach
                    .set(id, empty, 0)
                    .map_err(map_err("emptying an attachment"))?;
            }
        }
    }
    Ok(())
}

/// Writes the jitter distribution tables, once per map lifetime.
fn fill_dist_tables(maps: &mut Maps) -> Result<()> {
    let last = dist::NORMAL * DIST_TABLE_SIZE + DIST_TABLE_SIZE - 1;
    if maps.dist.get(&last, 0).unwrap_or(0) != 0 {
        return Ok(());
    }
    for kind in 1..dist::KINDS {
        for (i, v) in super::dist::table(kind).into_iter().enumerate() {
            maps.dist
                .set(kind * DIST_TABLE_SIZE + i as u32, v, 0)
                .map_err(map_err("writing a distribution table"))?;
        }
    }
    Ok(())
}

/// Summed per-CPU counters of rule `slot`.
pub fn counters(slot: u32) -> Result<NetCounters> {
    let Some(maps) = open_maps()? else {
        return Ok(NetCounters::default());
    };
    let values = maps
        .counters
        .get(&slot, 0)
        .map_err(map_err("reading counters"))?;
    Ok(values
        .iter()
        .fold(NetCounters::default(), |a, c| NetCounters {
            seen: a.seen + c.seen,
            matched: a.matched + c.matched,
            acted: a.acted + c.acted,
        }))
}

fn find_or_attach(store: &Store, hook: Hook, mode: Attach) -> Result<(Attachment, bool)> {
    super::find_or_attach(store, hook, |hook, id, existing| match hook {
        Hook::Tc {
            interface,
            direction,
        } => {
            // A clsact qdisc we added for the other direction is ours too: whichever of the two
            // attachments goes last removes it.
            let qdisc_is_ours = existing.iter().any(|a| {
                matches!(&a.hook, Hook::Tc { interface: i, .. } if same_interface(i, interface))
                    && matches!(
                        a.link,
                        AttachLink::Clsact {
                            created_qdisc: true,
                            ..
                        }
                    )
            });
            // One loaded program per direction serves every interface it can tell apart by
            // index: arming on a new interface then attaches it, without loading and verifying
            // a program. An index a shared attachment in another namespace holds (or one the
            // map has no room for) gets an instance of its own.
            let taken = existing.iter().any(|a| {
                is_shared(a)
                    && matches!(&a.hook, Hook::Tc { interface: i, direction: d }
                        if i.ifindex == interface.ifindex && d == direction)
            });
            let shared = !taken && shared_slot_free(interface.ifindex, *direction)?;
            attach_tc(interface, *direction, mode, id, qdisc_is_ours, shared)
        }
        Hook::CgroupIngress { cgroup } => attach_cgroup(cgroup, id),
        other => unreachable!("{other:?} is not a network hook"),
    })
}

/// Whether two hooks are the same place (interface indexes repeat across namespaces).
pub(super) fn same_hook(a: &Hook, b: &Hook) -> bool {
    match (a, b) {
        (
            Hook::Tc {
                interface: x,
                direction: dx,
            },
            Hook::Tc {
                interface: y,
                direction: dy,
            },
        ) => dx == dy && same_interface(x, y),
        (Hook::CgroupIngress { cgroup: x }, Hook::CgroupIngress { cgroup: y }) => x.id == y.id,
        (Hook::Tc { .. } | Hook::CgroupIngress { .. }, _) => false,
        (x, y) => x == y,
    }
}

fn same_interface(x: &Interface, y: &Interface) -> bool {
    let same_ns = match (&x.netns, &y.netns) {
        (Some(x), Some(y)) => x.id == y.id,
        (None, None) => true,
        _ => false,
    };
    same_ns && x.ifindex == y.ifindex
}

fn tc_attach_type(direction: Direction) -> TcAttachType {
    match direction {
        Direction::Ingress => TcAttachType::Ingress,
        _ => TcAttachType::Egress,
    }
}

/// Loads a `cgroup_skb/ingress` instance for attachment `id` and links it to `cgroup`; the link
/// is pinned on bpffs so that it outlives this process.
fn attach_cgroup(cgroup: &CgroupTarget, id: u32) -> Result<AttachLink> {
    let mut bpf = ebpf::load(&[(ATTACH_ID_GLOBAL, id)])?;
    let program: &mut CgroupSkb = load_program(&mut bpf, PROG_CGROUP_INGRESS)?;
    let dir = std::fs::File::open(&cgroup.path)
        .map_err(|e| Error::io(format!("opening cgroup {}", cgroup.path.display()), e))?;
    let link_id = program
        .attach(&dir, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
        .map_err(|e| Error::bpf(format!("attaching to cgroup {}", cgroup.path.display()), e))?;
    let link: FdLink = program
        .take_link(link_id)
        .map_err(|e| Error::bpf("taking the cgroup link", e))?
        .try_into()
        .map_err(|e| Error::bpf("cgroup link as fd link", e))?;
    pin_link(link, &format!("cgroup-{id}"))
}

/// Whether attachment `a` is served by a shared TC program instance.
fn is_shared(a: &Attachment) -> bool {
    matches!(
        a.link,
        AttachLink::Tcx { shared: true, .. } | AttachLink::Clsact { shared: true, .. }
    )
}

/// The shared instances' interface map, `None` before the first load created it.
fn ifattach_map() -> Result<Option<Array<MapData, IfAttach>>> {
    ebpf::typed_map(NET_IFATTACH_MAP, Map::Array)
}

/// Whether the shared instance for `direction` can serve interface index `ifindex`: below the
/// map's size and not registered to anything (an entry left by a crash whose records are gone
/// may still belong to an attached instance).
fn shared_slot_free(ifindex: u32, direction: Direction) -> Result<bool> {
    if ifindex >= MAX_SHARED_IFINDEX {
        return Ok(false);
    }
    let Some(map) = ifattach_map()? else {
        return Ok(true);
    };
    let entry = map.get(&ifindex, 0).unwrap_or_default();
    Ok(match direction {
        Direction::Ingress => entry.ingress == 0,
        _ => entry.egress == 0,
    })
}

/// Sets (`set`) or clears (only if it still names `id`) the shared instance's entry for the
/// interface and direction of TC hook `hook`.
fn register_shared(hook: &Hook, id: u32, set: bool) -> Result<()> {
    let Hook::Tc {
        interface,
        direction,
    } = hook
    else {
        return Ok(());
    };
    let Some(mut map) = ifattach_map()? else {
        return Ok(());
    };
    let ifindex = interface.ifindex;
    let mut entry = map.get(&ifindex, 0).unwrap_or_default();
    let field = match direction {
        Direction::Ingress => &mut entry.ingress,
        _ => &mut entry.egress,
    };
    if set {
        *field = id;
    } else if *field == id {
        *field = 0;
    } else {
        return Ok(());
    }
    map.set(ifindex, entry, 0)
        .map_err(map_err("writing the shared instances' interface map"))
}

/// Clears the interface map entry of a shared attachment, after it was detached.
pub(super) fn unregister_shared(a: &Attachment) -> Result<()> {
    if is_shared(a) {
        register_shared(&a.hook, a.id, false)?;
    }
    Ok(())
}

/// The shared instance of TC program `prog_name` as copy `via_copy` ([`via`]): loaded and pinned
/// by the first arming that needs it (under [`ebpf::PROG_PIN_DIR`], named by this build's
/// object, so another version's is never used), then taken from the pin. The pin goes with the
/// maps' when nothing of ours is left.
fn shared_program(prog_name: &str, via_copy: u32) -> Result<SchedClassifier> {
    let pin = ebpf::prog_pin(&if via_copy == via::FIRST {
        prog_name.to_owned()
    } else {
        format!("{prog_name}-via{via_copy}")
    });
    if let Ok(program) = SchedClassifier::from_pin(&pin) {
        return Ok(program);
    }
    let mut bpf = ebpf::load(&[(TC_VIA_GLOBAL, via_copy)])?;
    let program: &mut SchedClassifier = load_program(&mut bpf, prog_name)?;
    if let Err(e) = program.pin(&pin)
        && !pin.exists()
    {
        return Err(Error::bpf(format!("pinning {}", pin.display()), e));
    }
    SchedClassifier::from_pin(&pin).map_err(|e| Error::bpf(format!("opening {}", pin.display()), e))
}

/// A loaded TC program instance: the shared one, or one loaded for a single attachment.
enum TcInstance {
    Shared(Box<SchedClassifier>),
    Own(aya::Ebpf),
}

impl TcInstance {
    /// The instance of `prog_name`, copy `via_copy`, for attachment `id`: the shared one
    /// (`shared`) or one loaded with the attachment's id.
    fn new(prog_name: &str, shared: bool, id: u32, via_copy: u32) -> Result<TcInstance> {
        if shared {
            return Ok(TcInstance::Shared(Box::new(shared_program(
                prog_name, via_copy,
            )?)));
        }
        let mut bpf = ebpf::load(&[(ATTACH_ID_GLOBAL, id), (TC_VIA_GLOBAL, via_copy)])?;
        load_program::<SchedClassifier>(&mut bpf, prog_name)?;
        Ok(TcInstance::Own(bpf))
    }

    fn program(&mut self, prog_name: &str) -> Result<&mut SchedClassifier> {
        match self {
            TcInstance::Shared(p) => Ok(p),
            TcInstance::Own(bpf) => find_program(bpf, prog_name),
        }
    }
}

fn tc_prog_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => PROG_TC_INGRESS,
        _ => PROG_TC_EGRESS,
    }
}

/// Attaches `program` to `ifname` as a TCX link (after any other) and pins the link for
/// attachment `id`, so it outlives this process.
fn link_tcx(
    program: &mut SchedClassifier,
    ifname: &str,
    attach_type: TcAttachType,
    id: u32,
) -> Result<PathBuf> {
    let link_id = program
        .attach_with_options(
            ifname,
            attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| Error::bpf(format!("attaching tcx on {ifname}"), e))?;
    let link = program
        .take_link(link_id)
        .map_err(|e| Error::bpf("taking the tcx link", e))?;
    let fd_link: FdLink = link
        .try_into()
        .map_err(|e| Error::bpf("tcx link as fd link", e))?;
    let pin = tcx_pin(id);
    fd_link
        .pin(&pin)
        .map_err(|e| Error::bpf(format!("pinning {}", pin.display()), e))?;
    Ok(pin)
}

/// Where attachment `id`'s TCX link is pinned.
pub(super) fn tcx_pin(id: u32) -> PathBuf {
    ebpf::link_pin(&format!("tc-{id}"))
}

/// The attachment masks map, once the first load created it.
fn attach_map() -> Result<Array<MapData, AttachSlots>> {
    ebpf::typed_map(NET_ATTACH_MAP, Map::Array)?.ok_or_else(|| Error::Store {
        path: ebpf::MAP_PIN_DIR.into(),
        problem: "the attachment map is missing after loading the programs".into(),
    })
}

/// Sets which program copy judges attachment `id`'s packets, keeping its rules.
fn set_via(id: u32, via_copy: u32) -> Result<()> {
    let mut map = attach_map()?;
    let slots = map.get(&id, 0).unwrap_or_default();
    map.set(
        id,
        AttachSlots {
            via: via_copy,
            ..slots
        },
        0,
    )
    .map_err(map_err("setting which program copy judges an attachment"))
}

/// Attaches a TC program instance for attachment `id`: the shared one for the direction
/// (`shared`, registered under the interface's index first) or one loaded for it. The
/// attachment outlives this process (TCX link pinned on bpffs, or a clsact filter held by the
/// kernel). `qdisc_is_ours`: another attachment of ours on the interface added its clsact qdisc.
fn attach_tc(
    interface: &Interface,
    direction: Direction,
    mode: Attach,
    id: u32,
    qdisc_is_ours: bool,
    shared: bool,
) -> Result<AttachLink> {
    let prog_name = tc_prog_name(direction);
    let ifname = interface.name.clone();
    let hook = Hook::Tc {
        interface: interface.clone(),
        direction,
    };
    let to_register = hook.clone();
    let attached = netns::run_in(interface.netns.as_ref(), move || {
        let hook = to_register;
        let mut instance = TcInstance::new(prog_name, shared, id, via::FIRST)?;
        // A new attachment starts empty, judged by the copy attached now (an id a crash left
        // behind may say otherwise).
        attach_map()?
            .set(id, AttachSlots::default(), 0)
            .map_err(map_err("resetting an attachment"))?;
        if shared {
            // Before the link: the first packets must find the attachment (its rule mask is
            // empty until the rules are synced, so they pass).
            register_shared(&hook, id, true)?;
        }
        let program = instance.program(prog_name)?;
        let attach_type = tc_attach_type(direction);
        match mode {
            Attach::Tcx => Ok(AttachLink::Tcx {
                pin: link_tcx(program, &ifname, attach_type, id)?,
                shared,
            }),
            Attach::Clsact | Attach::ClsactThenTcx => {
                let added = qdisc_add_clsact(&ifname).is_ok();
                let created_qdisc = added || qdisc_is_ours;
                let attached = program.attach_with_options(
                    &ifname,
                    attach_type,
                    TcAttachOptions::Netlink(NlOptions::default()),
                );
                let link_id = match attached {
                    Ok(l) => l,
                    Err(e) => {
                        if added {
                            del_clsact(&ifname);
                        }
                        return Err(Error::bpf(
                            format!("attaching clsact filter on {ifname}"),
                            e,
                        ));
                    }
                };
                let link = program
                    .take_link(link_id)
                    .map_err(|e| Error::bpf("taking the tc link", e))?;
                let priority = link.priority().map_err(|e| Error::bpf("tc priority", e))?;
                let handle: u32 = link
                    .handle()
                    .map_err(|e| Error::bpf("tc handle", e))?
                    .into();
                // The filter must outlive this process: dropping the link would detach it.
                std::mem::forget(link);
                Ok(AttachLink::Clsact {
                    priority,
                    handle,
                    created_qdisc,
                    shared,
                    hand_over: mode == Attach::ClsactThenTcx,
                })
            }
        }
    });
    if shared && attached.is_err() {
        let _ = register_shared(&hook, id, false);
    }
    attached
}

/// Hands every attachment made for a handover ([`Attach::ClsactThenTcx`]) over from its clsact
/// filter to a TCX link, and records it. Call with the store locked, once the faults on them
/// are armed: their packets are judged through the filter until the link's copy takes over, so
/// the fault acts all along, and no packet is judged twice.
///
/// An attachment whose handover fails stays on its filter, which serves it as well, and is not
/// tried again (the log says why). Err only when the store cannot be read.
pub(crate) fn hand_over(store: &Store) -> Result<()> {
    for a in store.attachments()? {
        let AttachLink::Clsact {
            hand_over: true,
            shared,
            ..
        } = a.link
        else {
            continue;
        };
        let link = match hand_over_one(&a) {
            Ok(pin) => AttachLink::Tcx { pin, shared },
            Err(e) => {
                tracing::warn!(
                    attachment = a.id,
                    "kept on its clsact filter, not handed over to a tcx link: {e}"
                );
                let mut link = a.link.clone();
                if let AttachLink::Clsact { hand_over, .. } = &mut link {
                    *hand_over = false;
                }
                link
            }
        };
        // If this write fails the record still says clsact, and detaching it removes the link
        // as well (see `detach_clsact`); the next call tries again.
        if let Err(e) = store.put_attachment(&Attachment { link, ..a }) {
            tracing::warn!(attachment = a.id, "recording a handover: {e}");
        }
    }
    Ok(())
}

/// One attachment's handover: the TCX copy is linked (it passes every packet on while the
/// attachment names the first copy), the attachment is switched to it in one map write, then
/// the clsact filter is removed (with the qdisc, if ours and left empty). Returns the link's
/// pin. On failure nothing of the handover is left and the filter still judges.
fn hand_over_one(a: &Attachment) -> Result<PathBuf> {
    let (
        Hook::Tc {
            interface,
            direction,
        },
        AttachLink::Clsact {
            priority,
            handle,
            created_qdisc,
            shared,
            ..
        },
    ) = (&a.hook, &a.link)
    else {
        return Err(Error::Store {
            path: format!("attachment {}", a.id).into(),
            problem: "only a clsact filter on a tc hook can be handed over".into(),
        });
    };
    let (priority, handle, created_qdisc, shared) = (*priority, *handle, *created_qdisc, *shared);
    let (id, ifname, direction) = (a.id, interface.name.clone(), *direction);
    netns::run_in(interface.netns.as_ref(), move || {
        let prog_name = tc_prog_name(direction);
        let attach_type = tc_attach_type(direction);
        let mut copy = TcInstance::new(prog_name, shared, id, via::TCX_COPY)?;
        let pin = link_tcx(copy.program(prog_name)?, &ifname, attach_type, id)?;
        let undo = |e: Error| {
            let _ = set_via(id, via::FIRST);
            let _ = unpin_link(&pin);
            e
        };
        set_via(id, via::TCX_COPY).map_err(undo)?;
        remove_filter(&ifname, attach_type, priority, handle).map_err(undo)?;
        if created_qdisc && !has_filters(&ifname) {
            del_clsact(&ifname);
        }
        Ok(pin.clone())
    })
}

/// Removes the clsact filter `priority`/`handle` of `ifname`; one already gone is success.
fn remove_filter(
    ifname: &str,
    attach_type: TcAttachType,
    priority: u16,
    handle: u32,
) -> Result<()> {
    use aya::programs::links::Link as _;
    let Ok(link) =
        SchedClassifierLink::attached(ifname, attach_type, priority, TcHandle::from(handle), None)
    else {
        // The interface is gone, and the filter with it.
        return Ok(());
    };
    match link.detach() {
        Ok(()) => Ok(()),
        Err(aya::programs::ProgramError::NetlinkError(e))
            if e.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::bpf(
            format!("removing the clsact filter on {ifname}"),
            e,
        )),
    }
}

/// Detaches a clsact filter attachment (and the clsact qdisc, if we added it and it is empty),
/// with the TCX link of a handover that did not finish (a crash between its steps).
pub(crate) fn detach_clsact(a: &Attachment) -> Result<()> {
    match &a.link {
        AttachLink::Clsact {
            priority,
            handle,
            created_qdisc,
            ..
        } => {
            unpin_link(&tcx_pin(a.id))?;
            let Hook::Tc {
                interface,
                direction,
            } = &a.hook
            else {
                return Err(Error::Store {
                    path: format!("attachment {}", a.id).into(),
                    problem: "a clsact filter recorded for a cgroup hook".into(),
                });
            };
            if let Some(ns) = &interface.netns
                && !ns.path.exists()
            {
                return Ok(());
            }
            let ifname = interface.name.clone();
            let attach_type = tc_attach_type(*direction);
            let (priority, handle, created_qdisc) = (*priority, *handle, *created_qdisc);
            netns::run_in(interface.netns.as_ref(), move || {
                if netns::ifindex(&ifname).is_none() {
                    return Ok(());
                }
                // Best effort, as the qdisc below: the attachment is being undone.
                let _ = remove_filter(&ifname, attach_type, priority, handle);
                if created_qdisc && !has_filters(&ifname) {
                    del_clsact(&ifname);
                }
                Ok(())
            })
        }
        // Pinned links are not clsact filters.
        AttachLink::Tcx { .. } | AttachLink::Link { .. } => Ok(()),
    }
}

/// Whether the clsact qdisc on `ifname` still holds any filter (ours or anyone's). When the
/// kernel cannot answer, it says yes: the qdisc then stays, and never goes with someone's filter.
pub(super) fn has_filters(ifname: &str) -> bool {
    netns::ifindex(ifname).is_some_and(|i| super::rtnl::clsact_has_filters(i).unwrap_or(true))
}

/// Deletes the clsact qdisc of `ifname`, if it has one.
pub(super) fn del_clsact(ifname: &str) {
    if let Some(ifindex) = netns::ifindex(ifname) {
        let _ = super::rtnl::del_clsact(ifindex);
    }
}
