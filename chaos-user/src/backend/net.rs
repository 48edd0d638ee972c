//! Network faults: TC program instances per interface and direction ("attachments"), and rule
//! slots in the shared maps.

use std::process::Command;

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        SchedClassifier, TcAttachType,
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle, qdisc_add_clsact},
    },
    util::nr_cpus,
};
use chaos_common::net::{
    ATTACH_ID_GLOBAL, MAX_NET_RULES, NET_ATTACH_MAP, NET_COUNTERS_MAP, NET_RULES_MAP, NetAction,
    NetCounters, NetRule, PROG_TC_EGRESS, PROG_TC_INGRESS,
};

use crate::{
    ebpf,
    error::{Error, Result},
    netns,
    plan::{Interface, NetLossPlan},
    spec::Direction,
    store::{AttachLink, Attachment, FaultRecord, NetArmed, Store},
    strategy::Strategy,
};

struct Maps {
    rules: Array<MapData, NetRule>,
    counters: PerCpuArray<MapData, NetCounters>,
    attach: HashMap<MapData, u32, u64>,
}

fn open_maps() -> Result<Option<Maps>> {
    let rules = ebpf::typed_map(NET_RULES_MAP, Map::Array)?;
    let counters = ebpf::typed_map(NET_COUNTERS_MAP, Map::PerCpuArray)?;
    let attach = ebpf::typed_map(NET_ATTACH_MAP, Map::HashMap)?;
    Ok(match (rules, counters, attach) {
        (Some(rules), Some(counters), Some(attach)) => Some(Maps {
            rules,
            counters,
            attach,
        }),
        _ => None,
    })
}

fn map_err(what: &str) -> impl FnOnce(aya::maps::MapError) -> Error + '_ {
    move |e| Error::bpf(what.to_owned(), e)
}

/// Arms a loss rule: finds or creates the attachments, then writes the rule and sets its bit.
/// On any error everything this call did is undone before the error is returned.
pub(crate) fn arm(
    store: &Store,
    faults: &[FaultRecord],
    plan: &NetLossPlan,
    strategy: Strategy,
    deadline_boot_ns: u64,
) -> Result<NetArmed> {
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
    let mut created = Vec::new();
    let mut attachments = Vec::new();
    let result = (|| {
        for &dir in plan.direction.parts() {
            let (a, new) = find_or_attach(store, &plan.interface, dir, strategy)?;
            if new {
                created.push(a.clone());
            }
            attachments.push(a.id);
        }
        let mut maps = open_maps()?.ok_or_else(|| Error::Store {
            path: ebpf::MAP_PIN_DIR.into(),
            problem: "maps missing right after loading the programs".into(),
        })?;
        let zero = PerCpuValues::try_from(vec![NetCounters::default(); nr_cpus().unwrap_or(1)])
            .map_err(|e| Error::io("sizing per-CPU counters", e))?;
        maps.counters
            .set(slot, zero, 0)
            .map_err(map_err("zeroing rule counters"))?;
        let rule = NetRule {
            action: NetAction::Drop as u32,
            _pad: 0,
            threshold: plan.threshold,
            deadline_ns: deadline_boot_ns,
        };
        maps.rules
            .set(slot, rule, 0)
            .map_err(map_err("writing the rule"))?;
        for &aid in &attachments {
            let mask = maps.attach.get(&aid, 0).unwrap_or(0);
            maps.attach
                .insert(aid, mask | (1u64 << slot), 0)
                .map_err(map_err("arming the rule on its attachment"))?;
        }
        Ok(())
    })();
    let armed = NetArmed { slot, attachments };
    match result {
        Ok(()) => Ok(armed),
        Err(e) => {
            let _ = clear_rule(&armed);
            for a in created {
                let _ = detach(&a);
                let _ = store.remove_attachment(a.id);
            }
            Err(e)
        }
    }
}

/// Clears the rule's bit on its attachments and frees its slot.
pub(crate) fn clear_rule(armed: &NetArmed) -> Result<()> {
    let Some(mut maps) = open_maps()? else {
        return Ok(());
    };
    for &aid in &armed.attachments {
        if let Ok(mask) = maps.attach.get(&aid, 0) {
            let mask = mask & !(1u64 << armed.slot);
            if mask == 0 {
                let _ = maps.attach.remove(&aid);
            } else {
                maps.attach
                    .insert(aid, mask, 0)
                    .map_err(map_err("disarming the rule"))?;
            }
        }
    }
    maps.rules
        .set(armed.slot, NetRule::EMPTY, 0)
        .map_err(map_err("clearing the rule"))
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

fn find_or_attach(
    store: &Store,
    interface: &Interface,
    direction: Direction,
    strategy: Strategy,
) -> Result<(Attachment, bool)> {
    let existing = store.attachments()?;
    let same_ns = |a: &Attachment| match (&a.interface.netns, &interface.netns) {
        (Some(x), Some(y)) => x.id == y.id,
        (None, None) => true,
        _ => false,
    };
    if let Some(a) = existing.iter().find(|a| {
        a.direction == direction && a.interface.ifindex == interface.ifindex && same_ns(a)
    }) {
        return Ok((a.clone(), false));
    }
    let id = existing.iter().map(|a| a.id).max().unwrap_or(0) + 1;
    // A clsact qdisc we added for the other direction is ours too: whichever of the two
    // attachments goes last removes it.
    let qdisc_is_ours = existing.iter().any(|a| {
        a.interface.ifindex == interface.ifindex
            && same_ns(a)
            && matches!(
                a.link,
                AttachLink::Clsact {
                    created_qdisc: true,
                    ..
                }
            )
    });
    let link = attach(interface, direction, strategy, id, qdisc_is_ours)?;
    let a = Attachment {
        id,
        interface: interface.clone(),
        direction,
        link,
    };
    if let Err(e) = store.put_attachment(&a) {
        let _ = detach(&a);
        return Err(e);
    }
    Ok((a, true))
}

fn tc_attach_type(direction: Direction) -> TcAttachType {
    match direction {
        Direction::Ingress => TcAttachType::Ingress,
        _ => TcAttachType::Egress,
    }
}

/// Loads a program instance for attachment `id` and attaches it; the attachment outlives this
/// process (TCX link pinned on bpffs, or a clsact filter held by the kernel). `qdisc_is_ours`:
/// another attachment of ours on the interface added its clsact qdisc.
fn attach(
    interface: &Interface,
    direction: Direction,
    strategy: Strategy,
    id: u32,
    qdisc_is_ours: bool,
) -> Result<AttachLink> {
    let prog_name = match direction {
        Direction::Ingress => PROG_TC_INGRESS,
        _ => PROG_TC_EGRESS,
    };
    let ifname = interface.name.clone();
    netns::run_in(interface.netns.as_ref(), move || {
        let mut bpf = ebpf::load(&[(ATTACH_ID_GLOBAL, id)])?;
        let program: &mut SchedClassifier = bpf
            .program_mut(prog_name)
            .ok_or_else(|| {
                Error::bpf(
                    "finding the TC program",
                    aya::programs::ProgramError::NotLoaded,
                )
            })?
            .try_into()
            .map_err(|e| Error::bpf("finding the TC program", e))?;
        program
            .load()
            .map_err(|e| Error::bpf(format!("loading {prog_name}"), e))?;
        let attach_type = tc_attach_type(direction);
        match strategy {
            Strategy::TcxBpf => {
                let link_id = program
                    .attach_with_options(
                        &ifname,
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
                let pin = ebpf::link_pin(&format!("tc-{id}"));
                fd_link
                    .pin(&pin)
                    .map_err(|e| Error::bpf(format!("pinning {}", pin.display()), e))?;
                Ok(AttachLink::Tcx { pin })
            }
            Strategy::ClsactBpf => {
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
                })
            }
        }
    })
}

/// Detaches an attachment. An interface or namespace that no longer exists took the attachment
/// with it; that is success.
pub(crate) fn detach(a: &Attachment) -> Result<()> {
    match &a.link {
        AttachLink::Tcx { pin } => match PinnedLink::from_pin(pin) {
            Ok(link) => {
                let fd_link = link
                    .unpin()
                    .map_err(|e| Error::io(format!("unpinning {}", pin.display()), e))?;
                drop(fd_link);
                Ok(())
            }
            Err(_) if !pin.exists() => Ok(()),
            Err(e) => Err(Error::bpf(format!("opening {}", pin.display()), e)),
        },
        AttachLink::Clsact {
            priority,
            handle,
            created_qdisc,
        } => {
            if let Some(ns) = &a.interface.netns
                && !ns.path.exists()
            {
                return Ok(());
            }
            let ifname = a.interface.name.clone();
            let attach_type = tc_attach_type(a.direction);
            let (priority, handle, created_qdisc) = (*priority, *handle, *created_qdisc);
            netns::run_in(a.interface.netns.as_ref(), move || {
                if netns::ifindex(&ifname).is_none() {
                    return Ok(());
                }
                if let Ok(link) = SchedClassifierLink::attached(
                    &ifname,
                    attach_type,
                    priority,
                    TcHandle::from(handle),
                    None,
                ) {
                    use aya::programs::links::Link as _;
                    // ENOENT: someone removed the filter already.
                    let _ = link.detach();
                }
                if created_qdisc && !has_filters(&ifname) {
                    del_clsact(&ifname);
                }
                Ok(())
            })
        }
    }
}

/// Whether the clsact qdisc on `ifname` still holds any filter (ours or anyone's).
fn has_filters(ifname: &str) -> bool {
    ["ingress", "egress"].iter().any(|dir| {
        Command::new("tc")
            .args(["filter", "show", "dev", ifname, dir])
            .output()
            .map(|o| !o.stdout.trim_ascii().is_empty())
            .unwrap_or(true)
    })
}

fn del_clsact(ifname: &str) {
    let _ = Command::new("tc")
        .args(["qdisc", "del", "dev", ifname, "clsact"])
        .output();
}
