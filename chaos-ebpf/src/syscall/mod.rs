//! Syscall faults. Rules live in maps keyed by syscall number, so arming one is a map update.
//!
//! - `chaos_sys_enter` (raw tracepoint `sys_enter`, every syscall of every process): signal
//!   rules (kill, stop), and the first-call bookkeeping of followed children.
//! - `chaos_sys_kprobe` (kprobe on `__x64_sys_*`, with `bpf_override_return`): error rules, on
//!   kernels with function error injection.
//! - `chaos_sys_fork` (tracepoint `sched/sched_process_fork`): notes the children of followed
//!   processes; their first syscall tells whether they are processes or threads.
//!
//! - `chaos_lsm_*` (BPF LSM hooks, in `lsm`): error rules, on kernels with BPF LSM.
//!
//! A call costs one array lookup when no rule is armed on its number. Path filters are in
//! `path`.
//!
//! Process ids are those of the controller's pid namespace (`current_tgid`): a controller in a
//! pod names its targets as the pod sees them, and no rule of it judges a task outside the pod.

mod lsm;
mod path;

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_or, atomic_xadd},
};

use crate::bits::lowest_bit;
use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_ns_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_loop,
        bpf_override_return, bpf_probe_read_kernel, bpf_send_signal, bpf_set_retval,
        bpf_sysctl_get_name,
    },
    macros::{
        cgroup_sock_addr, cgroup_sockopt, cgroup_sysctl, kprobe, map, raw_tracepoint, tracepoint,
    },
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{
        ProbeContext, RawTracePointContext, SockAddrContext, SockoptContext, SysctlContext,
        TracePointContext,
    },
};
use chaos_common::{
    PROBABILITY_ONE,
    syscall::{
        MAX_SYS_CGROUP_DEPTH, MAX_SYS_RULES, MAX_SYSCALL_NR, SYS_TGID_HINTS, SYSCTL_NAME_LEN,
        SysCounters, SysEvent, SysRule, SysState, action, kind, matches, tgid_hint_index, via,
    },
};

/// Rule slots. Pinned so every `chaos` process shares them.
#[map(name = "CHAOS_SYS_RULES")]
static CHAOS_SYS_RULES: Array<SysRule> = Array::pinned(MAX_SYS_RULES, 0);

/// Per-rule, per-CPU counters.
#[map(name = "CHAOS_SYS_COUNT")]
static CHAOS_SYS_COUNT: PerCpuArray<SysCounters> = PerCpuArray::pinned(MAX_SYS_RULES, 0);

/// Per-rule shared counts for after-N, every-N and the maximum.
#[map(name = "CHAOS_SYS_STATE")]
static CHAOS_SYS_STATE: Array<SysState> = Array::pinned(MAX_SYS_RULES, 0);

/// Syscall number -> rule slots armed on it.
#[map(name = "CHAOS_SYS_HOOK")]
static CHAOS_SYS_HOOK: Array<u64> = Array::pinned(MAX_SYSCALL_NR, 0);

/// Process id -> rule slots that target it (written by the controller).
#[map(name = "CHAOS_SYS_TGID")]
static CHAOS_SYS_TGID: HashMap<u32, u64> = HashMap::pinned(4096, 0);

/// Process id -> rule slots that target it because its parent was followed (written here; the
/// controller only clears the bits of rules it disarms).
#[map(name = "CHAOS_SYS_KIDS")]
static CHAOS_SYS_KIDS: HashMap<u32, u64> = HashMap::pinned(16384, 0);

/// Process id hints: the rule slots that may be in [`CHAOS_SYS_TGID`] or [`CHAOS_SYS_KIDS`] for
/// the ids that fall on each entry (see `chaos_common::syscall::SYS_TGID_HINT_MAP`). An array,
/// whose lookup the verifier inlines: the processes a rule does not target skip the hash
/// lookups.
#[map(name = "CHAOS_SYS_TGIDH")]
static CHAOS_SYS_TGIDH: Array<u64> = Array::pinned(SYS_TGID_HINTS, 0);

/// New task id -> rule slots its parent was followed by, until its first syscall shows whether
/// it is a process (its own tgid) or a thread.
#[map(name = "CHAOS_SYS_NEW")]
static CHAOS_SYS_NEW: HashMap<u32, u64> = HashMap::pinned(16384, 0);

/// Index 0: the rule slots that follow their targets' children (written by the controller).
#[map(name = "CHAOS_SYS_FOLLOW")]
static CHAOS_SYS_FOLLOW: Array<u64> = Array::pinned(1, 0);

/// Processes stopped by delay rules, for the controller's keeper to continue.
#[map(name = "CHAOS_SYS_EVENTS")]
static CHAOS_SYS_EVENTS: RingBuf = RingBuf::pinned(64 * 1024, 0);

/// Rule slots by how they select their target (see `chaos_common::syscall::kind`).
#[map(name = "CHAOS_SYS_KIND")]
static CHAOS_SYS_KIND: Array<u64> = Array::pinned(kind::COUNT, 0);

/// cgroup v2 id -> rule slots that target it and the cgroups below it.
#[map(name = "CHAOS_SYS_CGRP")]
static CHAOS_SYS_CGRP: HashMap<u64, u64> = HashMap::pinned(1024, 0);

/// Offset of `child_pid` in the `sched_process_fork` record, set by the loader from the
/// tracepoint's format file (it moved between kernels).
#[unsafe(no_mangle)]
static CHAOS_FORK_CHILD_PID_OFFSET: u32 = 0;

/// The pid namespace of the controller (device and inode of its `/proc/self/ns/pid`, the
/// device as the kernel encodes it), set by the loader when it is not the machine's initial
/// one; 0 otherwise.
#[unsafe(no_mangle)]
static CHAOS_PIDNS_DEV: u32 = 0;
#[unsafe(no_mangle)]
static CHAOS_PIDNS_INO: u32 = 0;

/// The offset of `child_pid` in the `sched_process_fork` record (0 when the loader did not set
/// it).
pub(crate) fn fork_child_pid_offset() -> usize {
    // SAFETY: volatile so the loader-set value is used.
    unsafe { core::ptr::read_volatile(&CHAOS_FORK_CHILD_PID_OFFSET) as usize }
}

/// The caller's process id as the controller's pid namespace numbers it: the rules' process
/// ids are the controller's. `None` for a task outside that namespace, which no rule may touch
/// (a controller in a pod reaches only the pod). The branch is decided by read-only data the
/// verifier knows, so programs of types without the namespace helper (cgroup hooks before 6.10)
/// still load for a controller in the initial namespace.
pub(crate) fn current_tgid() -> Option<u32> {
    current_tgid_of(bpf_get_current_pid_tgid())
}

/// [`current_tgid`] for a caller whose `bpf_get_current_pid_tgid` is in hand.
fn current_tgid_of(pid_tgid: u64) -> Option<u32> {
    // SAFETY: volatile so the loader-set values are used.
    let (dev, ino) = unsafe {
        (
            core::ptr::read_volatile(&CHAOS_PIDNS_DEV),
            core::ptr::read_volatile(&CHAOS_PIDNS_INO),
        )
    };
    if ino == 0 {
        return Some((pid_tgid >> 32) as u32);
    }
    let mut ns = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: helper writing `size_of::<bpf_pidns_info>()` bytes to `ns`.
    let rc = unsafe {
        bpf_get_ns_current_pid_tgid(
            u64::from(dev),
            u64::from(ino),
            &mut ns,
            core::mem::size_of::<bpf_pidns_info>() as u32,
        )
    };
    (rc == 0).then_some(ns.tgid)
}

/// The call being judged, one per CPU (`bpf_loop` callbacks only get a stack pointer).
#[map(name = "CHAOS_SYS_CALL")]
static CHAOS_SYS_CALL: PerCpuArray<Call> = PerCpuArray::with_max_entries(1, 0);

/// One call under judgement.
#[repr(C)]
pub struct Call {
    /// Slots left to judge.
    slots: u64,
    /// The program judging: rules acted on by another ([`via`]) are skipped.
    via: u32,
    tgid: u32,
    /// Slots selecting the caller by process, by cgroup, by the file's path.
    by_tgid: u64,
    by_cgroup: u64,
    by_path: u64,
    comm: [u8; 16],
    /// The sysctl read or written (set by the sysctl hook before judging; stale elsewhere, and
    /// looked at only by its rules).
    sysctl: [u8; SYSCTL_NAME_LEN],
    now: u64,
    /// The decision: the rule that acts, or `u32::MAX`.
    acting: u32,
}

/// `pt_regs->orig_ax` on x86_64: the syscall number, in the user registers a `__x64_sys_*`
/// entry point receives.
const PT_REGS_ORIG_AX: usize = 15 * 8;
/// `pt_regs->di` on x86_64: the syscall's first argument (a descriptor for the calls a path
/// filter serves through the kprobe).
const PT_REGS_DI: usize = 14 * 8;

/// Signals and followed children, on every syscall.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn chaos_sys_enter(ctx: RawTracePointContext) -> i32 {
    let nr: u64 = ctx.arg(1);
    // Only while some rule follows children (an inlined array read, not a hash lookup on every
    // syscall of the machine).
    let following = CHAOS_SYS_FOLLOW.get(0).is_some_and(|f| *f != 0);
    if !following && CHAOS_SYS_HOOK.get(nr as u32).is_none_or(|s| *s == 0) {
        return 0;
    }
    // New tasks are noted by their id in the initial namespace (all the fork record has).
    let pid_tgid = bpf_get_current_pid_tgid();
    let (host_tgid, host_tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let Some(tgid) = current_tgid_of(pid_tgid) else {
        return 0;
    };
    // SAFETY: plain u32 key.
    if following && let Some(bits) = unsafe { CHAOS_SYS_NEW.get(host_tid) }.copied() {
        // A followed parent's new task, at its first syscall: a process of its own if its tgid
        // is its tid; a thread of an already targeted process otherwise.
        if host_tgid == host_tid {
            // The hint first, so no call of the child skips the lookup that finds it.
            if let Some(hint) = CHAOS_SYS_TGIDH.get_ptr_mut(tgid_hint_index(tgid)) {
                // SAFETY: map value pointer; an atomic OR, as other CPUs and the controller
                // write it too.
                unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(hint, bits) };
            }
            let _ = CHAOS_SYS_KIDS.insert(tgid, bits, 0);
        }
        let _ = CHAOS_SYS_NEW.remove(host_tid);
    }
    if let Some(acting) = judge(nr as u32, via::TRACEPOINT, tgid, true, core::ptr::null)
        && let Some(rule) = CHAOS_SYS_RULES.get(acting)
    {
        // SAFETY: helper acting on the current task's process.
        unsafe { bpf_send_signal(rule.signal) };
        if rule.action == action::DELAY {
            let event = SysEvent {
                tgid,
                slot: acting,
                // SAFETY: helper without arguments.
                at_ns: unsafe { bpf_ktime_get_boot_ns() },
            };
            // The ring holds thousands of events and each stopped process adds one at most; were
            // it full, the process would stay stopped until the fault is recovered (recovery
            // continues every target).
            let _ = CHAOS_SYS_EVENTS.output::<SysEvent>(&event, 0);
        }
    }
    0
}

/// Errors, on the `__x64_sys_*` entry points the controller attached it to.
#[kprobe]
pub fn chaos_sys_kprobe(ctx: ProbeContext) -> u32 {
    // The entry point's only argument is the user's saved registers; orig_ax is the number.
    // SAFETY: a kernel pointer argument; the helper checks the reads through it.
    let user_regs = unsafe { (*ctx.regs).rdi } as *const u8;
    let user_reg = |offset: usize| {
        // SAFETY: as above.
        unsafe { bpf_probe_read_kernel(user_regs.wrapping_add(offset) as *const u64) }
            .unwrap_or(u64::MAX)
    };
    let nr = user_reg(PT_REGS_ORIG_AX);
    let Some(tgid) = current_tgid() else {
        return 0;
    };
    // Path rules on this program are armed only on calls whose first argument is a descriptor.
    let dentry = || path::fd_dentry(user_reg(PT_REGS_DI));
    if let Some(acting) = judge(nr as u32, via::KPROBE, tgid, true, dentry)
        && let Some(rule) = CHAOS_SYS_RULES.get(acting)
    {
        // Syscall entry points return a 64-bit long: the errno must be sign-extended.
        let rc = -(i64::from(rule.errno)) as u64;
        // SAFETY: helper on this kprobe's registers; the kernel allows it only on functions
        // marked for error injection.
        unsafe { bpf_override_return(ctx.regs, rc) };
    }
    0
}

/// Notes the children of followed processes.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn chaos_sys_fork(ctx: TracePointContext) -> u32 {
    let Some(tgid) = current_tgid() else {
        return 0;
    };
    // SAFETY: plain u32 keys.
    let bits = unsafe { CHAOS_SYS_TGID.get(tgid).copied().unwrap_or(0) }
        | unsafe { CHAOS_SYS_KIDS.get(tgid).copied().unwrap_or(0) };
    if bits == 0 {
        return 0;
    }
    // SAFETY: index 0 of a one-entry array.
    let follow = bits & CHAOS_SYS_FOLLOW.get(0).copied().unwrap_or(0);
    if follow == 0 {
        return 0;
    }
    let offset = fork_child_pid_offset();
    // SAFETY: reading a field of the tracepoint record at the offset its format file gives.
    if offset != 0
        && let Ok(child) = unsafe { ctx.read_at::<i32>(offset) }
    {
        let _ = CHAOS_SYS_NEW.insert(child as u32, follow, 0);
    }
    0
}

/// The caller's `comm`.
fn current_comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or([0; 16])
}

/// Errors from the cgroup socket hooks (connect, bind, UDP sendmsg, get/setsockopt): 0 refuses
/// the call with the errno set by `bpf_set_retval`, 1 lets it run.
fn sock_addr(nr: u32) -> i32 {
    let Some(tgid) = current_tgid() else {
        return 1;
    };
    // cgroup hooks do not get `bpf_get_current_comm`; rules by name are not armed here.
    match judge(nr, via::CGROUP, tgid, false, core::ptr::null)
        .and_then(|slot| CHAOS_SYS_RULES.get(slot))
    {
        Some(rule) => {
            // SAFETY: helper taking an int; the syscall returns it.
            unsafe { bpf_set_retval(-rule.errno) };
            0
        }
        None => 1,
    }
}

/// x86_64 syscall numbers of the calls the cgroup socket hooks serve. The UDP sendmsg hook is
/// reached from sendto, sendmsg and sendmmsg alike and cannot tell them apart: the controller
/// arms its rules on all three, and the hook judges them as sendmsg.
const NR_CONNECT: u32 = 42;
const NR_SENDMSG: u32 = 46;
const NR_BIND: u32 = 49;
const NR_SETSOCKOPT: u32 = 54;
const NR_GETSOCKOPT: u32 = 55;

/// connect(2) on IPv4.
#[cgroup_sock_addr(connect4)]
pub fn chaos_sys_connect4(_ctx: SockAddrContext) -> i32 {
    sock_addr(NR_CONNECT)
}

/// connect(2) on IPv6.
#[cgroup_sock_addr(connect6)]
pub fn chaos_sys_connect6(_ctx: SockAddrContext) -> i32 {
    sock_addr(NR_CONNECT)
}

/// bind(2) on IPv4.
#[cgroup_sock_addr(bind4)]
pub fn chaos_sys_bind4(_ctx: SockAddrContext) -> i32 {
    sock_addr(NR_BIND)
}

/// bind(2) on IPv6.
#[cgroup_sock_addr(bind6)]
pub fn chaos_sys_bind6(_ctx: SockAddrContext) -> i32 {
    sock_addr(NR_BIND)
}

/// sendto / sendmsg / sendmmsg on UDP over IPv4.
#[cgroup_sock_addr(sendmsg4)]
pub fn chaos_sys_sendmsg4(_ctx: SockAddrContext) -> i32 {
    sock_addr(NR_SENDMSG)
}

/// sendto / sendmsg / sendmmsg on UDP over IPv6.
#[cgroup_sock_addr(sendmsg6)]
pub fn chaos_sys_sendmsg6(_ctx: SockAddrContext) -> i32 {
    sock_addr(NR_SENDMSG)
}

/// The sockopt hooks' verdict. Letting an option through, a hook must leave an option value
/// larger than a page to the kernel (`optlen = 0`), or kernels before 6.5 fail the call with
/// EFAULT.
fn sockopt(ctx: &SockoptContext, nr: u32) -> i32 {
    let verdict = sock_addr(nr);
    if verdict == 1 {
        // SAFETY: the hook's context, whose optlen the program may lower.
        unsafe {
            if (*ctx.sockopt).optlen > 4096 {
                (*ctx.sockopt).optlen = 0;
            }
        }
    }
    verdict
}

/// setsockopt(2), before the kernel handles it.
#[cgroup_sockopt(setsockopt)]
pub fn chaos_sys_setsockopt(ctx: SockoptContext) -> i32 {
    sockopt(&ctx, NR_SETSOCKOPT)
}

/// getsockopt(2), after the kernel handled it (a refusal replaces its result).
#[cgroup_sockopt(getsockopt)]
pub fn chaos_sys_getsockopt(ctx: SockoptContext) -> i32 {
    sockopt(&ctx, NR_GETSOCKOPT)
}

const NR_READ: u32 = 0;
const NR_WRITE: u32 = 1;

/// read / write of a file under /proc/sys: judged as read or write, by the rules on the
/// sysctl's subtree.
#[cgroup_sysctl]
pub fn chaos_sys_sysctl(ctx: SysctlContext) -> i32 {
    // SAFETY: the hook's context.
    let nr = if unsafe { (*ctx.sysctl).write } != 0 {
        NR_WRITE
    } else {
        NR_READ
    };
    if CHAOS_SYS_HOOK.get(nr).copied().unwrap_or(0) == 0 {
        return 1;
    }
    let Some(call) = CHAOS_SYS_CALL.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; the helper writes at most its length, NUL-terminated
    // (a longer name is cut, and still compared by its start).
    unsafe {
        (*call).sysctl = [0; SYSCTL_NAME_LEN];
        bpf_sysctl_get_name(
            ctx.sysctl,
            (*call).sysctl.as_mut_ptr() as *mut _,
            SYSCTL_NAME_LEN as u64,
            0,
        );
    }
    let Some(tgid) = current_tgid() else {
        return 1;
    };
    match judge(nr, via::SYSCTL, tgid, false, core::ptr::null).and_then(|s| CHAOS_SYS_RULES.get(s))
    {
        Some(rule) => {
            // SAFETY: helper taking an int; the syscall returns it.
            unsafe { bpf_set_retval(-rule.errno) };
            0
        }
        None => 1,
    }
}

/// Whether sysctl `name` (NUL-padded words) is `rule`'s subtree or below it (`net/ipv4` covers
/// `net/ipv4` and `net/ipv4/tcp_mem`, not `net/ipv4x`): word compares at constant offsets with
/// masks the controller computed, no branches (Debian 6.1's verifier refused a byte loop's
/// variable offsets, then ran out of states on per-word branches). A function of its own (a
/// BPF subprogram), so its registers spill in its own frame, not the rule loop's.
#[inline(never)]
fn under_sysctl(rule: *const SysRule, name: *const u64) -> bool {
    let mut below = 0u64;
    let mut exact = 0u64;
    macro_rules! compare_words {
        ($($k:literal),*) => {$(
            // SAFETY: map values (the rule, this CPU's call), 8-byte aligned arrays of 8 words;
            // `$k` is a constant under 8. Volatile so that LLVM passes pointers (it turned
            // references into by-value vectors, which BPF calls cannot take).
            let (n, p, m, e) = unsafe {
                (
                    core::ptr::read_volatile(name.add($k)),
                    core::ptr::read_volatile(&raw const (*rule).sysctl[$k]),
                    core::ptr::read_volatile(&raw const (*rule).sysctl_mask[$k]),
                    core::ptr::read_volatile(&raw const (*rule).sysctl_exact[$k]),
                )
            };
            below |= (n ^ p) & m;
            exact |= n ^ e;
        )*};
    }
    compare_words!(0, 1, 2, 3, 4, 5, 6, 7);
    // For all of /proc/sys the mask is empty: every name is below.
    below == 0 || exact == 0
}

/// The slot of the rule that program `via` acts on for this call, if any. `with_comm`: the
/// program may read the caller's `comm` (cgroup hooks may not); it is read only once some rule
/// is armed on the call. `dentry`: the file the call works on (null if none), asked only when
/// a rule armed on the call filters by path.
fn judge(
    nr: u32,
    via: u32,
    tgid: u32,
    with_comm: bool,
    dentry: impl FnOnce() -> *const u8,
) -> Option<u32> {
    let slots = CHAOS_SYS_HOOK.get(nr).copied().unwrap_or(0);
    if slots == 0 {
        return None;
    }
    let rules = |k: u32| slots & CHAOS_SYS_KIND.get(k).copied().unwrap_or(0);
    let (tgid_rules, cgroup_rules, comm_rules) =
        (rules(kind::TGID), rules(kind::CGROUP), rules(kind::COMM));
    // Only the selectors some rule on this call uses are looked up.
    let mut by_tgid = 0;
    if tgid_rules != 0
        && CHAOS_SYS_TGIDH
            .get(tgid_hint_index(tgid))
            .is_none_or(|hint| *hint & tgid_rules != 0)
    {
        // SAFETY: plain u32 keys.
        by_tgid = unsafe { CHAOS_SYS_TGID.get(tgid).copied().unwrap_or(0) };
        if CHAOS_SYS_FOLLOW
            .get(0)
            .is_some_and(|f| *f & tgid_rules != 0)
        {
            // SAFETY: as above.
            by_tgid |= unsafe { CHAOS_SYS_KIDS.get(tgid).copied().unwrap_or(0) };
        }
    }
    let mut by_cgroup = 0;
    if cgroup_rules != 0 {
        let mut level = 0;
        while level <= MAX_SYS_CGROUP_DEPTH {
            // SAFETY: helper without pointers; 0 past the task's own level.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            if id == 0 {
                break;
            }
            // SAFETY: plain u64 key.
            by_cgroup |= unsafe { CHAOS_SYS_CGRP.get(id) }.copied().unwrap_or(0);
            level += 1;
        }
    }
    // The rules whose selector admits the caller (rules by name compare it in the loop; a rule
    // of no kind would be judged on every call).
    let candidates = (by_tgid & tgid_rules)
        | (by_cgroup & cgroup_rules)
        | comm_rules
        | (slots & !(tgid_rules | cgroup_rules | comm_rules));
    if candidates == 0 {
        return None;
    }
    let path_slots = candidates & path::path_rules();
    let by_path = if path_slots != 0 {
        path::bits(dentry(), path_slots)
    } else {
        0
    };
    let call = CHAOS_SYS_CALL.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch value; nothing else runs on this CPU meanwhile.
    let c = unsafe { &mut *call };
    c.slots = candidates;
    c.via = via;
    c.tgid = tgid;
    c.by_tgid = by_tgid;
    c.by_cgroup = by_cgroup;
    c.by_path = by_path;
    c.comm = if with_comm && comm_rules != 0 {
        current_comm()
    } else {
        [0; 16]
    };
    // SAFETY: helper without arguments.
    c.now = unsafe { bpf_ktime_get_boot_ns() };
    c.acting = u32::MAX;
    // SAFETY: the callback takes no context; it works on this CPU's scratch value.
    unsafe {
        bpf_loop(
            MAX_SYS_RULES + 1,
            judge_next as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    (c.acting != u32::MAX).then_some(c.acting)
}

/// `bpf_loop` callback: judges the lowest slot left; 1 (stop) when none is left or a rule acts.
extern "C" fn judge_next(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(call) = CHAOS_SYS_CALL.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value, filled by `judge`.
    let c = unsafe { &mut *call };
    if c.slots == 0 {
        return 1;
    }
    let slot = lowest_bit(c.slots);
    c.slots &= c.slots - 1;
    if acts(slot, c) {
        c.acting = slot;
        return 1;
    }
    0
}

/// Whether rule `slot` acts on the call.
fn acts(slot: u32, c: &Call) -> bool {
    let Some(rule) = CHAOS_SYS_RULES.get(slot) else {
        return false;
    };
    if rule.via != c.via {
        return false;
    }
    let counters = CHAOS_SYS_COUNT.get_ptr_mut(slot);
    let count = |f: fn(&mut SysCounters)| {
        if let Some(p) = counters {
            // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
            f(unsafe { &mut *p });
        }
    };
    count(|n| n.seen += 1);
    let bit = 1u64 << slot;
    let m = rule.matches;
    if c.now >= rule.deadline_ns
        || (m & matches::TGID != 0 && c.by_tgid & bit == 0)
        || (m & matches::CGROUP != 0 && c.by_cgroup & bit == 0)
        || (m & matches::COMM != 0 && c.comm != rule.comm)
        || (m & matches::PATH != 0 && c.by_path & bit == 0)
        || (m & matches::SYSCTL != 0 && !under_sysctl(rule, c.sysctl.as_ptr() as *const u64))
    {
        return false;
    }
    count(|n| n.matched += 1);
    let Some(state) = CHAOS_SYS_STATE.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: map value pointer; its fields are only ever updated with atomic adds (BPF has
    // fetch-and-add; the target lacks Rust's atomic types). SeqCst, not Relaxed: LLVM 22 lowers
    // a relaxed add to the BPF add without fetch even when the old value is used, and the
    // "old value" is then the addend (measured: every-N never fired).
    let fetch_add =
        |field: *mut u64| unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(field, 1) };
    // SAFETY: as above.
    let index = fetch_add(unsafe { &raw mut (*state).selected }) + 1;
    if index <= rule.after || (index - rule.after - 1) % rule.every.max(1) != 0 {
        return false;
    }
    // SAFETY: helper without arguments.
    let roll = u64::from(unsafe { bpf_get_prandom_u32() });
    if rule.threshold < PROBABILITY_ONE && roll >= rule.threshold {
        return false;
    }
    // SAFETY: as above.
    if fetch_add(unsafe { &raw mut (*state).acted }) >= rule.max_count {
        return false;
    }
    count(|n| n.acted += 1);
    true
}
