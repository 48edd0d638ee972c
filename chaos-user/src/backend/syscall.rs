//! Syscall faults: rule slots in the shared maps, and the programs they need, each attached once
//! and shared by every rule: the `sys_enter` raw tracepoint (signals, followed children), one
//! kprobe per `__x64_sys_*` entry point or one BPF LSM program per security hook (errors), the
//! `sched_process_fork` tracepoint (children of followed processes).

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        CgroupAttachMode, CgroupSockAddr, CgroupSockopt, CgroupSysctl, Lsm, RawTracePoint,
        TracePoint, links::FdLink,
    },
    util::nr_cpus,
};
use chaos_common::syscall::{
    MAX_SYS_RULES, MAX_SYSCALL_NR, PROG_SYS_ENTER, PROG_SYS_FORK, PROG_SYS_GETSOCKOPT,
    PROG_SYS_KPROBE, PROG_SYS_SETSOCKOPT, PROG_SYS_SYSCTL, SYS_CGROUP_MAP, SYS_COUNTERS_MAP,
    SYS_FOLLOW_MAP, SYS_HOOK_MAP, SYS_KIDS_MAP, SYS_KIND_MAP, SYS_NEW_MAP, SYS_PATH_MAP,
    SYS_PATHS_MAP, SYS_RULES_MAP, SYS_STATE_MAP, SYS_TGID_HINT_MAP, SYS_TGID_MAP, SysCounters,
    SysPathKey, SysRule, SysState, action, kind, matches, tgid_hint_index, via,
};

use super::{find_or_attach, find_program, load_program, map_err, pin_link, replace_all};
use crate::{
    ebpf,
    error::{Error, Result},
    plan::{SyscallEffect, SyscallPlan, SyscallTarget},
    store::{FaultRecord, Hook, Store, SysArmed},
    strategy::{SOCK_ADDR_CALLS, SyscallStrategy, UDP_SEND_CALLS, lsm_hook, sysctl_subtree},
};

/// At most this many entries are read from a map the kernel changes as we read it: when the key
/// in hand is deleted, the next-key walk starts over, and a busy forker could keep it going
/// forever. Twice the maps' size covers one full pass.
const MAP_SCAN_LIMIT: usize = 32_768;

struct Maps {
    rules: Array<MapData, SysRule>,
    counters: PerCpuArray<MapData, SysCounters>,
    state: Array<MapData, SysState>,
    hook: Array<MapData, u64>,
    tgid: HashMap<MapData, u32, u64>,
    tgid_hint: Array<MapData, u64>,
    kids: HashMap<MapData, u32, u64>,
    new: HashMap<MapData, u32, u64>,
    cgroup: HashMap<MapData, u64, u64>,
    follow: Array<MapData, u64>,
    path: HashMap<MapData, SysPathKey, u64>,
    paths: Array<MapData, u64>,
    kind: Array<MapData, u64>,
}

fn open_maps() -> Result<Option<Maps>> {
    let (
        Some(rules),
        Some(counters),
        Some(state),
        Some(hook),
        Some(tgid),
        Some(tgid_hint),
        Some(kids),
        Some(new),
        Some(cgroup),
        Some(follow),
        Some(path),
        Some(paths),
        Some(kind),
    ) = (
        ebpf::typed_map(SYS_RULES_MAP, Map::Array)?,
        ebpf::typed_map(SYS_COUNTERS_MAP, Map::PerCpuArray)?,
        ebpf::typed_map(SYS_STATE_MAP, Map::Array)?,
        ebpf::typed_map(SYS_HOOK_MAP, Map::Array)?,
        ebpf::typed_map(SYS_TGID_MAP, Map::HashMap)?,
        ebpf::typed_map(SYS_TGID_HINT_MAP, Map::Array)?,
        ebpf::typed_map(SYS_KIDS_MAP, Map::HashMap)?,
        ebpf::typed_map(SYS_NEW_MAP, Map::HashMap)?,
        ebpf::typed_map(SYS_CGROUP_MAP, Map::HashMap)?,
        ebpf::typed_map(SYS_FOLLOW_MAP, Map::Array)?,
        ebpf::typed_map(SYS_PATH_MAP, Map::HashMap)?,
        ebpf::typed_map(SYS_PATHS_MAP, Map::Array)?,
        ebpf::typed_map(SYS_KIND_MAP, Map::Array)?,
    )
    else {
        return Ok(None);
    };
    Ok(Some(Maps {
        rules,
        counters,
        state,
        hook,
        tgid,
        tgid_hint,
        kids,
        new,
        cgroup,
        follow,
        path,
        paths,
        kind,
    }))
}

/// The kernel rule for `plan`, without its deadline.
fn rule(plan: &SyscallPlan, strategy: SyscallStrategy) -> SysRule {
    let mut r = SysRule::EMPTY;
    r.via = match strategy {
        SyscallStrategy::TracepointSignal | SyscallStrategy::TracepointFreeze => via::TRACEPOINT,
        SyscallStrategy::KprobeOverride => via::KPROBE,
        SyscallStrategy::BpfLsm => via::LSM,
        SyscallStrategy::CgroupSockAddr => via::CGROUP,
        // Refused before arming: seccomp is chaos exec's.
        SyscallStrategy::SeccompNotify => 0,
    };
    match plan.effect {
        SyscallEffect::Fail { errno } => {
            r.action = action::FAIL;
            r.errno = errno;
        }
        SyscallEffect::Signal { signal } => {
            r.action = action::SIGNAL;
            r.signal = signal as u32;
        }
        SyscallEffect::Delay { latency } => {
            r.action = action::DELAY;
            r.signal = libc::SIGSTOP as u32;
            r.delay_ns = latency.as_nanos() as u64;
        }
    }
    match &plan.target {
        SyscallTarget::Pid {
            follow_children, ..
        } => {
            r.matches |= matches::TGID;
            if *follow_children {
                r.matches |= matches::FOLLOW;
            }
        }
        SyscallTarget::Cgroup(_) => r.matches |= matches::CGROUP,
        SyscallTarget::Comm(name) => {
            r.matches |= matches::COMM;
            r.comm[..name.len()].copy_from_slice(name.as_bytes());
        }
        SyscallTarget::Exec => {}
    }
    match (strategy, sysctl_subtree(plan)) {
        // Under /proc/sys the cgroup sysctl hook compares the sysctl's name.
        (SyscallStrategy::CgroupSockAddr, Some(name)) => {
            r.via = via::SYSCTL;
            r.matches |= matches::SYSCTL;
            r.sysctl_len = name.len() as u32;
            (r.sysctl, r.sysctl_mask, r.sysctl_exact) =
                chaos_common::syscall::sysctl_words(name.as_bytes());
        }
        _ if plan.path_prefix.is_some() => r.matches |= matches::PATH,
        _ => {}
    }
    r.threshold = plan.chance.threshold;
    r.after = plan.after;
    r.every = plan.every;
    r.max_count = plan.max_count.unwrap_or(u64::MAX);
    r
}

/// The syscall numbers a rule is armed on: its calls, and for the cgroup send hook (which judges
/// every UDP send as sendmsg) sendmsg's number too.
fn armed_numbers(plan: &SyscallPlan, strategy: SyscallStrategy) -> Vec<u32> {
    let mut nrs: Vec<u32> = plan.syscalls.iter().map(|c| c.nr).collect();
    let sendmsg = syscalls::Sysno::sendmsg.id() as u32;
    let is_send = |nr: &u32| UDP_SEND_CALLS.iter().any(|s| s.id() as u32 == *nr);
    if strategy == SyscallStrategy::CgroupSockAddr
        && nrs.iter().any(is_send)
        && !nrs.contains(&sendmsg)
    {
        nrs.push(sendmsg);
    }
    nrs
}

/// The hooks a rule needs.
fn hooks(plan: &SyscallPlan, strategy: SyscallStrategy) -> Vec<Hook> {
    let mut hooks = Vec::new();
    let follow = matches!(
        plan.target,
        SyscallTarget::Pid {
            follow_children: true,
            ..
        }
    );
    if strategy == SyscallStrategy::KprobeOverride {
        for call in &plan.syscalls {
            hooks.push(Hook::SysKprobe {
                function: format!("__x64_sys_{}", call.name),
            });
        }
    }
    if strategy == SyscallStrategy::BpfLsm {
        for call in &plan.syscalls {
            if let Some((hook, _)) = lsm_hook(call.nr) {
                let hook = Hook::SysLsm {
                    lsm_hook: hook.to_owned(),
                };
                if !hooks.contains(&hook) {
                    hooks.push(hook);
                }
            }
        }
    }
    if strategy == SyscallStrategy::CgroupSockAddr {
        let cgroup = match &plan.target {
            SyscallTarget::Cgroup(c) => plan.process_cgroup.clone().or(Some(c.clone())),
            _ => plan.process_cgroup.clone(),
        };
        let sysctl: &[&str] = &[PROG_SYS_SYSCTL];
        for call in &plan.syscalls {
            let programs = match sysctl_subtree(plan) {
                Some(_) => sysctl,
                None => SOCK_ADDR_CALLS
                    .iter()
                    .find(|(name, _)| *name == call.name)
                    .map_or(&[][..], |(_, p)| *p),
            };
            for program in programs {
                if let Some(c) = &cgroup {
                    let hook = Hook::SysSockAddr {
                        cgroup: c.clone(),
                        program: (*program).to_owned(),
                    };
                    if !hooks.contains(&hook) {
                        hooks.push(hook);
                    }
                }
            }
        }
    }
    // sys_enter sends the signals, and settles followed children at their first call.
    if matches!(
        strategy,
        SyscallStrategy::TracepointSignal | SyscallStrategy::TracepointFreeze
    ) || follow
    {
        hooks.push(Hook::SysEnter);
    }
    if follow {
        hooks.push(Hook::SysFork);
    }
    hooks
}

/// Arms a syscall rule: attaches what it needs, writes the rule into a free slot, then brings
/// the shared maps in line with every armed rule. On error, everything this call did is undone.
pub(crate) fn arm(
    store: &Store,
    faults: &[FaultRecord],
    plan: &SyscallPlan,
    strategy: SyscallStrategy,
    duration: std::time::Duration,
) -> Result<(SysArmed, u64)> {
    let used: Vec<u32> = faults
        .iter()
        .filter_map(|f| f.syscall.as_ref().map(|s| s.slot))
        .collect();
    let slot = (0..MAX_SYS_RULES)
        .find(|s| !used.contains(s))
        .ok_or_else(|| Error::Unsupported {
            what: "arm another syscall rule".into(),
            why: format!("all {MAX_SYS_RULES} rule slots are in use; recover some faults first"),
        })?;
    let others: Vec<&SysArmed> = faults.iter().filter_map(|f| f.syscall.as_ref()).collect();
    let mut rule = rule(plan, strategy);
    let mut armed = SysArmed {
        slot,
        attachments: Vec::new(),
        syscalls: armed_numbers(plan, strategy),
        tgids: match plan.target {
            SyscallTarget::Pid { pid, .. } => vec![pid],
            _ => Vec::new(),
        },
        cgroups: match &plan.target {
            SyscallTarget::Cgroup(c) => vec![c.id],
            _ => Vec::new(),
        },
        target: plan.target.clone(),
        signal: signal_of(plan),
        paths: match &plan.path_prefix {
            Some(_) if rule.via == via::SYSCTL => Vec::new(),
            Some(prefix) => path_keys(prefix)?
                .into_iter()
                .map(|k| (k.dev, k.ino))
                .collect(),
            None => Vec::new(),
        },
    };
    let mut created = Vec::new();
    let result = (|| {
        for hook in hooks(plan, strategy) {
            let (a, new) = find_or_attach(store, hook, |hook, id, _| attach(hook, id))?;
            if new {
                created.push(a.clone());
            }
            armed.attachments.push(a.id);
        }
        let mut maps = open_maps()?.ok_or_else(|| Error::Store {
            path: ebpf::MAP_PIN_DIR.into(),
            problem: "syscall maps missing right after loading the programs".into(),
        })?;
        let zero = PerCpuValues::try_from(vec![SysCounters::default(); nr_cpus().unwrap_or(1)])
            .map_err(|e| Error::io("sizing per-CPU counters", e))?;
        maps.counters
            .set(slot, zero, 0)
            .map_err(map_err("zeroing rule counters"))?;
        maps.state
            .set(slot, SysState::default(), 0)
            .map_err(map_err("resetting rule state"))?;
        rule.deadline_ns = crate::clock::boot_ns() + duration.as_nanos() as u64;
        maps.rules
            .set(slot, rule, 0)
            .map_err(map_err("writing the rule"))?;
        let mut all = others.clone();
        all.push(&armed);
        sync(&mut maps, &all)
    })();
    let result = result.and_then(|()| {
        if rule.action == action::DELAY {
            super::keeper::ensure_running(store)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok((armed, rule.deadline_ns)),
        Err(e) => {
            let _ = disarm(&armed, &others);
            for a in created {
                let _ = super::detach(&a);
                let _ = store.remove_attachment(a.id);
            }
            Err(e)
        }
    }
}

/// The signal `plan`'s rule sends: what a delay stopped, recovery continues, as for a stop.
fn signal_of(plan: &SyscallPlan) -> Option<i32> {
    match plan.effect {
        SyscallEffect::Signal { signal } => Some(signal),
        SyscallEffect::Delay { .. } => Some(libc::SIGSTOP),
        SyscallEffect::Fail { .. } => None,
    }
}

/// Undoes what fault `plan` may have done when its record never got its armed part (the arming
/// process died after the rule went live, before recording it): the shared maps are
/// resynchronised from the faults that remain, which leaves the unrecorded slot named by no
/// call, and a fault that stops its target (`stop`, `delay`) then continues it.
pub(crate) fn disarm_unrecorded(plan: &SyscallPlan, remaining: &[&SysArmed]) -> Result<()> {
    if let Some(mut maps) = open_maps()? {
        sync(&mut maps, remaining)?;
    }
    if signal_of(plan) == Some(libc::SIGSTOP) {
        wait_for_programs_in_flight();
        continue_stopped(&plan.target, &[]);
    }
    Ok(())
}

/// Takes a rule out of service: the shared maps first, then its slot; then whatever a `stop`
/// fault stopped is continued.
pub(crate) fn disarm(armed: &SysArmed, remaining: &[&SysArmed]) -> Result<()> {
    let mut followed = Vec::new();
    if let Some(mut maps) = open_maps()? {
        let bit = 1u64 << armed.slot;
        followed = maps
            .kids
            .iter()
            .take(MAP_SCAN_LIMIT)
            .filter_map(|e| e.ok())
            .filter(|(_, bits)| bits & bit != 0)
            .map(|(tgid, _)| tgid)
            .collect();
        sync(&mut maps, remaining)?;
        maps.rules
            .set(armed.slot, SysRule::EMPTY, 0)
            .map_err(map_err("clearing the rule"))?;
    }
    if armed.signal == Some(libc::SIGSTOP) {
        wait_for_programs_in_flight();
        continue_stopped(&armed.target, &followed);
    }
    Ok(())
}

/// Waits until the programs that may have read the rule before it was cleared have finished:
/// one of them could otherwise send its SIGSTOP after our SIGCONT, and the target would stay
/// stopped (seen once in 100 torture rounds under TCG). They run under RCU, and
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for an RCU grace period; where it is refused
/// (`nohz_full`), a pause far longer than any program takes.
fn wait_for_programs_in_flight() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier(2) with a command and zero flags; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r != 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends SIGCONT to the processes a `stop` fault may have stopped.
fn continue_stopped(target: &SyscallTarget, followed: &[u32]) {
    let mut pids: Vec<u32> = followed.to_vec();
    match target {
        SyscallTarget::Pid { pid, .. } => pids.push(*pid),
        SyscallTarget::Cgroup(c) => pids.extend(cgroup_procs(&c.path)),
        SyscallTarget::Comm(name) => pids.extend(procs_named(name)),
        SyscallTarget::Exec => {}
    }
    for pid in pids {
        // SAFETY: kill(2) with a pid and a signal number; a gone process is ESRCH, ignored.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    }
}

/// Processes in cgroup `dir` and below.
fn cgroup_procs(dir: &std::path::Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_procs(&entry.path()));
        }
    }
    pids
}

/// Processes whose `comm` is `name`.
fn procs_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end_matches('\n') == name)
        })
        .collect()
}

/// Rewrites the syscall, process and cgroup maps from `armed` (every armed rule), and clears the
/// bits of rules no longer armed from the followed children the kernel recorded.
fn sync(maps: &mut Maps, armed: &[&SysArmed]) -> Result<()> {
    let bit = |a: &SysArmed| 1u64 << a.slot;
    let mut hook = vec![0u64; MAX_SYSCALL_NR as usize];
    let mut tgid: BTreeMap<u32, u64> = BTreeMap::new();
    let mut cgroup: BTreeMap<u64, u64> = BTreeMap::new();
    let mut path: BTreeMap<SysPathKey, u64> = BTreeMap::new();
    let mut live = 0u64;
    let mut follow = 0u64;
    let mut by_path = 0u64;
    let mut kinds = [0u64; kind::COUNT as usize];
    for a in armed {
        live |= bit(a);
        if matches!(
            a.target,
            SyscallTarget::Pid {
                follow_children: true,
                ..
            }
        ) {
            follow |= bit(a);
        }
        let k = match a.target {
            SyscallTarget::Pid { .. } => Some(kind::TGID),
            SyscallTarget::Cgroup(_) => Some(kind::CGROUP),
            SyscallTarget::Comm(_) => Some(kind::COMM),
            SyscallTarget::Exec => None,
        };
        if let Some(k) = k {
            kinds[k as usize] |= bit(a);
        }
        for &nr in &a.syscalls {
            if let Some(h) = hook.get_mut(nr as usize) {
                *h |= bit(a);
            }
        }
        for &t in &a.tgids {
            *tgid.entry(t).or_default() |= bit(a);
        }
        for &c in &a.cgroups {
            *cgroup.entry(c).or_default() |= bit(a);
        }
        for &(dev, ino) in &a.paths {
            *path.entry(SysPathKey { dev, ino }).or_default() |= bit(a);
            by_path |= bit(a);
        }
    }
    sync_tgid_hints(maps, &tgid, live)?;
    // Kinds before the syscall slots, so a new rule is never on a call without its kind. (The
    // kernel checks every selector again in the rule loop; kinds only let it skip that loop.)
    for (k, bits) in kinds.iter().enumerate() {
        maps.kind
            .set(k as u32, *bits, 0)
            .map_err(map_err("updating the rule kinds"))?;
    }
    for (nr, bits) in hook.iter().enumerate() {
        let nr = nr as u32;
        if maps.hook.get(&nr, 0).unwrap_or(0) != *bits {
            maps.hook
                .set(nr, *bits, 0)
                .map_err(map_err("updating a syscall's rule slots"))?;
        }
    }
    maps.follow
        .set(0, follow, 0)
        .map_err(map_err("updating the followed rule slots"))?;
    // Directories before the mask that makes programs look them up.
    replace_all(&mut maps.path, &path)?;
    maps.paths
        .set(0, by_path, 0)
        .map_err(map_err("updating the path rule slots"))?;
    replace_all(&mut maps.tgid, &tgid)?;
    replace_all(&mut maps.cgroup, &cgroup)?;
    for map in [&mut maps.kids, &mut maps.new] {
        let entries: Vec<(u32, u64)> = map
            .iter()
            .take(MAP_SCAN_LIMIT)
            .filter_map(|e| e.ok())
            .collect();
        for (k, bits) in entries {
            if bits & !live != 0 {
                if bits & live == 0 {
                    let _ = map.remove(&k);
                } else {
                    let _ = map.insert(k, bits & live, 0);
                }
            }
        }
    }
    Ok(())
}

/// Brings the process id hints in line with `tgid` (the processes the armed rules name) before
/// the maps they stand for change: the entries of those processes, and of the processes
/// `CHAOS_SYS_TGID` holds now, keep their bits of rules still armed (`live`) and gain the named
/// ones. Bits of live rules are never cleared, nor those the kernel set for followed children:
/// a stale bit costs a lookup, while a missing one would let a targeted process through.
fn sync_tgid_hints(maps: &mut Maps, tgid: &BTreeMap<u32, u64>, live: u64) -> Result<()> {
    let mut hints: BTreeMap<u32, u64> = BTreeMap::new();
    for (&t, &bits) in tgid {
        *hints.entry(tgid_hint_index(t)).or_default() |= bits;
    }
    let held: Vec<u32> = maps.tgid.keys().filter_map(|k| k.ok()).collect();
    for t in held {
        hints.entry(tgid_hint_index(t)).or_default();
    }
    for (index, named) in hints {
        let current = maps.tgid_hint.get(&index, 0).unwrap_or(0);
        let value = (current & live) | named;
        if value != current {
            maps.tgid_hint
                .set(index, value, 0)
                .map_err(map_err("updating a process id hint"))?;
        }
    }
    Ok(())
}

/// A rule's counters, summed over CPUs.
pub fn counters(slot: u32) -> Result<SysCounters> {
    let Some(maps) = open_maps()? else {
        return Ok(SysCounters::default());
    };
    let values = maps
        .counters
        .get(&slot, 0)
        .map_err(map_err("reading rule counters"))?;
    Ok(values
        .iter()
        .fold(SysCounters::default(), |a, c| SysCounters {
            seen: a.seen + c.seen,
            matched: a.matched + c.matched,
            acted: a.acted + c.acted,
        }))
}

/// Offset of `child_pid` in the `sched_process_fork` record, from its format file (the record's
/// layout changed between kernels).
pub(crate) fn fork_child_pid_offset() -> Result<u32> {
    let dir = crate::mounts::ensure_tracefs()?;
    let path = dir.join("events/sched/sched_process_fork/format");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    text.lines()
        .find(|l| l.contains(" child_pid;"))
        .and_then(|l| l.split("offset:").nth(1))
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| Error::Store {
            path: path.clone(),
            problem: "no child_pid offset in the tracepoint format".into(),
        })
}

/// The `CHAOS_SYS_PATH` keys for path prefix `prefix`: the directory itself and the root of every
/// mount below it (the kernel's walk up from a file stops at its file system's root).
fn path_keys(prefix: &std::path::Path) -> Result<Vec<SysPathKey>> {
    use std::os::unix::fs::MetadataExt as _;
    let key = |path: &std::path::Path| -> std::io::Result<SysPathKey> {
        let m = std::fs::metadata(path)?;
        // The kernel's dev_t (MKDEV: major << 20 | minor), not the user-space encoding.
        let dev = (u64::from(libc::major(m.dev())) << 20) | u64::from(libc::minor(m.dev()));
        Ok(SysPathKey { dev, ino: m.ino() })
    };
    let mut keys = vec![key(prefix).map_err(|e| {
        Error::invalid(
            "path-prefix",
            format!("{}: {e}", prefix.display()),
            "give a directory that exists (the filter matches it and everything below it)",
        )
    })?];
    for mount in crate::mounts::mount_points()? {
        if mount != prefix
            && mount.starts_with(prefix)
            && let Ok(k) = key(&mount)
            && !keys.contains(&k)
        {
            keys.push(k);
        }
    }
    Ok(keys)
}

/// The load-time globals of the error programs: the path filters' struct offsets when this
/// kernel has BTF (path rules are refused without it, so zeros never serve one).
fn error_program_globals() -> Vec<(&'static str, u32)> {
    crate::btf::path_offsets().unwrap_or_default()
}

/// Links a loaded program to a cgroup (`bpf_link_create`) and pins the link, for the program
/// types whose aya links cannot become an `FdLink` (sockopt, in aya 0.14).
fn pin_cgroup_link(
    prog_fd: std::os::fd::RawFd,
    cgroup_fd: std::os::fd::RawFd,
    attach_type: libbpf_rs::libbpf_sys::bpf_attach_type,
    name: &str,
) -> std::io::Result<crate::store::AttachLink> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    // SAFETY: plain descriptors and a null options pointer, which libbpf accepts.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_link_create(prog_fd, cgroup_fd, attach_type, std::ptr::null())
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a descriptor the call above just returned, owned from here on.
    let link = unsafe { OwnedFd::from_raw_fd(fd) };
    let pin = ebpf::link_pin(name);
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a link descriptor and a NUL-terminated path.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_obj_pin(link.as_raw_fd(), path.as_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(-rc));
    }
    Ok(crate::store::AttachLink::Link { pin })
}

/// Loads and attaches the program for `hook`, pinning its link.
fn attach(hook: &Hook, id: u32) -> Result<crate::store::AttachLink> {
    let name = format!("sys-{id}");
    match hook {
        Hook::SysEnter => {
            let mut bpf = ebpf::load(&[])?;
            let program: &mut RawTracePoint = load_program(&mut bpf, PROG_SYS_ENTER)?;
            let link_id = program
                .attach("sys_enter")
                .map_err(|e| Error::bpf("attaching to raw tracepoint sys_enter", e))?;
            let link: FdLink = program
                .take_link(link_id)
                .map_err(|e| Error::bpf("taking the sys_enter link", e))?
                .into();
            pin_link(link, &name)
        }
        Hook::SysFork => {
            let offset = fork_child_pid_offset()?;
            let mut bpf =
                ebpf::load(&[(chaos_common::syscall::FORK_CHILD_PID_OFFSET_GLOBAL, offset)])?;
            let program: &mut TracePoint = load_program(&mut bpf, PROG_SYS_FORK)?;
            let link_id = program
                .attach("sched", "sched_process_fork")
                .map_err(|e| Error::bpf("attaching to sched_process_fork", e))?;
            let link: FdLink = program
                .take_link(link_id)
                .map_err(|e| Error::bpf("taking the fork link", e))?
                .try_into()
                .map_err(|e| Error::bpf("fork link as fd link", e))?;
            pin_link(link, &name)
        }
        Hook::SysKprobe { function } => {
            super::attach_kprobe(&error_program_globals(), PROG_SYS_KPROBE, function, &name)
        }
        Hook::SysLsm { lsm_hook: hook } => {
            let mut bpf = ebpf::load(&error_program_globals())?;
            let btf = ebpf::vmlinux_btf()?;
            let program_name = format!("chaos_lsm_{hook}");
            let program: &mut Lsm = find_program(&mut bpf, &program_name)?;
            program
                .load(hook, btf)
                .map_err(|e| Error::bpf(format!("loading {program_name}"), e))?;
            let link_id = program
                .attach()
                .map_err(|e| Error::bpf(format!("attaching {program_name}"), e))?;
            let link: FdLink = program
                .take_link(link_id)
                .map_err(|e| Error::bpf("taking the LSM link", e))?
                .into();
            pin_link(link, &name)
        }
        Hook::SysSockAddr { cgroup, program } => {
            let mut bpf = ebpf::load(&[])?;
            let dir = std::fs::File::open(&cgroup.path)
                .map_err(|e| Error::io(format!("opening cgroup {}", cgroup.path.display()), e))?;
            let attaching = |e| {
                Error::bpf(
                    format!("attaching {program} to cgroup {}", cgroup.path.display()),
                    e,
                )
            };
            if program == PROG_SYS_SYSCTL {
                let prog: &mut CgroupSysctl = load_program(&mut bpf, program)?;
                let prog_fd = prog.fd().map_err(attaching)?.as_fd().as_raw_fd();
                return pin_cgroup_link(
                    prog_fd,
                    dir.as_raw_fd(),
                    libbpf_rs::libbpf_sys::BPF_CGROUP_SYSCTL,
                    &name,
                )
                .map_err(|e| Error::io(format!("attaching {program} to cgroup"), e));
            }
            let sockopt = [PROG_SYS_SETSOCKOPT, PROG_SYS_GETSOCKOPT].contains(&program.as_str());
            if sockopt {
                let prog: &mut CgroupSockopt = load_program(&mut bpf, program)?;
                let attach_type = if program == PROG_SYS_SETSOCKOPT {
                    libbpf_rs::libbpf_sys::BPF_CGROUP_SETSOCKOPT
                } else {
                    libbpf_rs::libbpf_sys::BPF_CGROUP_GETSOCKOPT
                };
                let prog_fd = prog.fd().map_err(attaching)?.as_fd().as_raw_fd();
                return pin_cgroup_link(prog_fd, dir.as_raw_fd(), attach_type, &name)
                    .map_err(|e| Error::io(format!("attaching {program} to cgroup"), e));
            }
            let prog: &mut CgroupSockAddr = load_program(&mut bpf, program)?;
            let link_id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(attaching)?;
            let link: FdLink = prog
                .take_link(link_id)
                .map_err(|e| Error::bpf("taking the cgroup link", e))?
                .try_into()
                .map_err(|e| Error::bpf("cgroup link as fd link", e))?;
            pin_link(link, &name)
        }
        other => unreachable!("{other:?} is not a syscall hook"),
    }
}
