//! Syscall fault rules, judged by the programs on syscall entry (a raw tracepoint on
//! `sys_enter` for signals, kprobes with `bpf_override_return` on `__x64_sys_*` for errors).
//!
//! A call is checked against the rule slots set in [`SYS_HOOK_MAP`] for its syscall number. Each
//! rule selects its target (process set, cgroup or command name), then counts the selected call
//! (after-N, every-N), rolls its probability, honours its maximum count and its in-kernel
//! deadline, and acts.

/// Maximum number of syscall rules armed at once (one bit each in a u64).
pub const MAX_SYS_RULES: u32 = 64;

/// Syscall numbers covered by [`SYS_HOOK_MAP`] (x86_64 numbers are below 512).
pub const MAX_SYSCALL_NR: u32 = 512;

/// Name of the array map of [`SysRule`]s, indexed by rule slot.
pub const SYS_RULES_MAP: &str = "CHAOS_SYS_RULES";
/// Name of the per-CPU array map of [`SysCounters`], indexed by rule slot.
pub const SYS_COUNTERS_MAP: &str = "CHAOS_SYS_COUNT";
/// Name of the array map of [`SysState`], indexed by rule slot (updated atomically).
pub const SYS_STATE_MAP: &str = "CHAOS_SYS_STATE";
/// Name of the array map from syscall number to the bitmask of rule slots armed on it.
pub const SYS_HOOK_MAP: &str = "CHAOS_SYS_HOOK";
/// Name of the hash map from process id (tgid) to the bitmask of rule slots that target it.
pub const SYS_TGID_MAP: &str = "CHAOS_SYS_TGID";
/// Name of the hash map from cgroup v2 id to the bitmask of rule slots that target it (and the
/// cgroups below it).
pub const SYS_CGROUP_MAP: &str = "CHAOS_SYS_CGRP";
/// Name of the hash map from process id to the rule slots that follow it because a followed
/// process started it (written by the kernel).
pub const SYS_KIDS_MAP: &str = "CHAOS_SYS_KIDS";
/// Name of the array map of process id hints: entry [`tgid_hint_index`]`(tgid)` holds the rule
/// slots that may target a process whose id falls there (those of [`SYS_TGID_MAP`] and
/// [`SYS_KIDS_MAP`]). A call whose entry holds none of its rules skips their hash lookups, which
/// are most of what a rule costs the processes it does not target. Bits are set before the
/// entries they stand for and cleared only for rules no longer armed: a stale bit costs a
/// lookup, never a missed process.
pub const SYS_TGID_HINT_MAP: &str = "CHAOS_SYS_TGIDH";

/// Entries of [`SYS_TGID_HINT_MAP`] (a power of two).
pub const SYS_TGID_HINTS: u32 = 16384;

/// The [`SYS_TGID_HINT_MAP`] entry of process id `tgid`.
pub const fn tgid_hint_index(tgid: u32) -> u32 {
    tgid & (SYS_TGID_HINTS - 1)
}

/// Name of the hash map from new task id to the rule slots following its parent, until its first
/// syscall shows whether it is a process or a thread (written by the kernel).
pub const SYS_NEW_MAP: &str = "CHAOS_SYS_NEW";

/// Name of the one-entry array map holding the bitmask of rule slots that follow their targets'
/// children ([`matches::FOLLOW`]).
pub const SYS_FOLLOW_MAP: &str = "CHAOS_SYS_FOLLOW";

/// Name of the hash map from [`SysPathKey`] (a directory, or the root of a mount below it) to
/// the rule slots whose path prefix it is.
pub const SYS_PATH_MAP: &str = "CHAOS_SYS_PATH";

/// Name of the one-entry array map holding the bitmask of rule slots that filter by path
/// ([`matches::PATH`]).
pub const SYS_PATHS_MAP: &str = "CHAOS_SYS_PATHS";

/// Directory levels a path filter walks up from a file before giving up.
pub const MAX_PATH_DEPTH: u32 = 48;

/// Globals set at load time to offsets into kernel structures, read from the kernel's BTF
/// (the layouts differ between kernels; the programs read them with `bpf_probe_read_kernel`).
/// 0 everywhere when BTF is missing: path rules are then refused before arming.
pub mod offsets {
    /// `struct file` -> `f_path.dentry`.
    pub const FILE_DENTRY: &str = "CHAOS_OFF_FILE_DENTRY";
    /// `struct dentry` -> `d_parent`.
    pub const DENTRY_PARENT: &str = "CHAOS_OFF_DENTRY_PARENT";
    /// `struct dentry` -> `d_inode`.
    pub const DENTRY_INODE: &str = "CHAOS_OFF_DENTRY_INODE";
    /// `struct inode` -> `i_ino`.
    pub const INODE_INO: &str = "CHAOS_OFF_INODE_INO";
    /// `struct inode` -> `i_sb`.
    pub const INODE_SB: &str = "CHAOS_OFF_INODE_SB";
    /// `struct super_block` -> `s_dev`.
    pub const SB_DEV: &str = "CHAOS_OFF_SB_DEV";
    /// `struct task_struct` -> `files`.
    pub const TASK_FILES: &str = "CHAOS_OFF_TASK_FILES";
    /// `struct files_struct` -> `fdt`.
    pub const FILES_FDT: &str = "CHAOS_OFF_FILES_FDT";
    /// `struct fdtable` -> `max_fds`.
    pub const FDT_MAX_FDS: &str = "CHAOS_OFF_FDT_MAX_FDS";
    /// `struct fdtable` -> `fd`.
    pub const FDT_FD: &str = "CHAOS_OFF_FDT_FD";
}

/// Name of the array map of the rule slots by how they select their target: index
/// [`kind::TGID`], [`kind::CGROUP`], [`kind::COMM`]. A call is judged only by the rules whose
/// selector admits the caller, so a process no rule targets pays lookups, not the rule loop.
pub const SYS_KIND_MAP: &str = "CHAOS_SYS_KIND";

/// Indexes of [`SYS_KIND_MAP`].
pub mod kind {
    /// Rules selecting by process ([`super::matches::TGID`]).
    pub const TGID: u32 = 0;
    /// Rules selecting by cgroup ([`super::matches::CGROUP`]).
    pub const CGROUP: u32 = 1;
    /// Rules selecting by command name ([`super::matches::COMM`]).
    pub const COMM: u32 = 2;
    /// Entries.
    pub const COUNT: u32 = 3;
}

/// Name of the global set at load time to the offset of `child_pid` in the
/// `sched_process_fork` record (from the tracepoint's format file).
pub const FORK_CHILD_PID_OFFSET_GLOBAL: &str = "CHAOS_FORK_CHILD_PID_OFFSET";

/// Names of the globals set at load time to the device (as the kernel encodes it) and inode of
/// the controller's pid namespace when it is not the initial one: rules then name processes as
/// that namespace does and reach no process outside it. Both 0 in the initial namespace.
pub const PIDNS_DEV_GLOBAL: &str = "CHAOS_PIDNS_DEV";
/// See [`PIDNS_DEV_GLOBAL`].
pub const PIDNS_INO_GLOBAL: &str = "CHAOS_PIDNS_INO";

/// The raw tracepoint program on `sys_enter` (signals, followed children).
pub const PROG_SYS_ENTER: &str = "chaos_sys_enter";
/// The kprobe program on `__x64_sys_*` entry points (errors, with `bpf_override_return`).
pub const PROG_SYS_KPROBE: &str = "chaos_sys_kprobe";
/// The `cgroup/connect4` program (connect errors, with `bpf_set_retval`).
pub const PROG_SYS_CONNECT4: &str = "chaos_sys_connect4";
/// The `cgroup/connect6` program.
pub const PROG_SYS_CONNECT6: &str = "chaos_sys_connect6";
/// The `cgroup/bind4` program (bind errors).
pub const PROG_SYS_BIND4: &str = "chaos_sys_bind4";
/// The `cgroup/bind6` program.
pub const PROG_SYS_BIND6: &str = "chaos_sys_bind6";
/// The `cgroup/sendmsg4` program (UDP sendto / sendmsg / sendmmsg errors).
pub const PROG_SYS_SENDMSG4: &str = "chaos_sys_sendmsg4";
/// The `cgroup/sendmsg6` program.
pub const PROG_SYS_SENDMSG6: &str = "chaos_sys_sendmsg6";
/// The `cgroup/setsockopt` program (setsockopt errors).
pub const PROG_SYS_SETSOCKOPT: &str = "chaos_sys_setsockopt";
/// The `cgroup/getsockopt` program (getsockopt errors).
pub const PROG_SYS_GETSOCKOPT: &str = "chaos_sys_getsockopt";
/// The `cgroup/sysctl` program (read / write errors on /proc/sys).
pub const PROG_SYS_SYSCTL: &str = "chaos_sys_sysctl";
/// The tracepoint program on `sched_process_fork` that adds children of followed processes.
pub const PROG_SYS_FORK: &str = "chaos_sys_fork";

/// BPF LSM programs (errors where the hooks reach), by hook name: the program for hook `h` is
/// `chaos_lsm_h`. Each knows the syscall it runs in from the task's saved registers.
pub const LSM_HOOKS: &[&str] = &[
    "file_open",
    "file_permission",
    "mmap_file",
    "socket_create",
    "socket_connect",
    "socket_bind",
    "socket_sendmsg",
    "socket_recvmsg",
    "task_alloc",
    "inode_unlink",
    "inode_mkdir",
];

/// cgroup levels below the root that a rule's cgroup filter looks through.
pub const MAX_SYS_CGROUP_DEPTH: u32 = 16;

/// What a selected call suffers.
pub mod action {
    /// Slot unused.
    pub const NONE: u32 = 0;
    /// Return `-errno` without running the call (kprobe override).
    pub const FAIL: u32 = 1;
    /// Send `signal` to the calling thread's process (raw tracepoint).
    pub const SIGNAL: u32 = 2;
    /// Stop the calling process (SIGSTOP, raw tracepoint) and report it in
    /// [`super::SYS_EVENTS_MAP`]: the controller's keeper continues it `delay_ns` later.
    pub const DELAY: u32 = 3;
}

/// Name of the ring buffer of [`SysEvent`]s (processes a delay rule stopped).
pub const SYS_EVENTS_MAP: &str = "CHAOS_SYS_EVENTS";

/// A process stopped by a delay rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysEvent {
    /// The stopped process.
    pub tgid: u32,
    /// The rule's slot.
    pub slot: u32,
    /// When (`CLOCK_BOOTTIME` ns).
    pub at_ns: u64,
}

/// Which program acts on a rule ([`SysRule::via`]): a call can pass several of ours.
pub mod via {
    /// The `sys_enter` raw tracepoint (signals).
    pub const TRACEPOINT: u32 = 1;
    /// A kprobe on the syscall entry point (errors).
    pub const KPROBE: u32 = 2;
    /// A cgroup socket-address hook (connect, bind errors).
    pub const CGROUP: u32 = 3;
    /// A BPF LSM hook (errors).
    pub const LSM: u32 = 4;
    /// The cgroup sysctl hook (read / write errors under /proc/sys).
    pub const SYSCTL: u32 = 5;
}

/// Filter bits for [`SysRule::matches`].
pub mod matches {
    /// The caller's process must be in [`super::SYS_TGID_MAP`] with the rule's bit.
    pub const TGID: u32 = 1;
    /// The caller's cgroup (or an ancestor) must be in [`super::SYS_CGROUP_MAP`] with the
    /// rule's bit.
    pub const CGROUP: u32 = 2;
    /// The caller's `comm` must equal [`super::SysRule::comm`].
    pub const COMM: u32 = 4;
    /// Children the target starts are added to [`super::SYS_TGID_MAP`] (with [`TGID`]).
    pub const FOLLOW: u32 = 8;
    /// The call's file must lie under one of the rule's [`super::SYS_PATH_MAP`] entries.
    pub const PATH: u32 = 16;
    /// The sysctl read or written must lie under [`super::SysRule::sysctl`] (cgroup sysctl
    /// hook).
    pub const SYSCTL: u32 = 32;
}

/// Longest sysctl subtree name a rule holds, and the name buffer of the sysctl hook.
pub const SYSCTL_NAME_LEN: usize = 64;
/// [`SYSCTL_NAME_LEN`] in 8-byte words.
pub const SYSCTL_WORDS: usize = SYSCTL_NAME_LEN / 8;

/// The subtree words, mask and exact-name words of [`SysRule`] for sysctl subtree `name`
/// (relative to /proc/sys, without a trailing `/`; at most [`SYSCTL_NAME_LEN`] - 1 bytes).
pub fn sysctl_words(
    name: &[u8],
) -> (
    [u64; SYSCTL_WORDS],
    [u64; SYSCTL_WORDS],
    [u64; SYSCTL_WORDS],
) {
    let mut below = [0u8; SYSCTL_NAME_LEN];
    let mut mask = [0u8; SYSCTL_NAME_LEN];
    let mut exact = [0u8; SYSCTL_NAME_LEN];
    let n = name.len().min(SYSCTL_NAME_LEN - 1);
    if n > 0 {
        below[..n].copy_from_slice(&name[..n]);
        below[n] = b'/';
        mask[..=n].fill(0xff);
        exact[..n].copy_from_slice(&name[..n]);
    }
    let words = |b: &[u8; SYSCTL_NAME_LEN]| {
        let mut w = [0u64; SYSCTL_WORDS];
        for (k, word) in w.iter_mut().enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&b[8 * k..8 * k + 8]);
            *word = u64::from_le_bytes(bytes);
        }
        w
    };
    (words(&below), words(&mask), words(&exact))
}

/// A directory a path filter looks for among a file's ancestors: the kernel's `s_dev` of its
/// file system (`major << 20 | minor`) and its inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SysPathKey {
    /// `super_block.s_dev`, widened.
    pub dev: u64,
    /// `inode.i_ino`.
    pub ino: u64,
}

/// One armed syscall fault.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRule {
    /// One of [`action`]'s values; [`action::NONE`] marks a free slot.
    pub action: u32,
    /// [`matches`] bits.
    pub matches: u32,
    /// Error returned for [`action::FAIL`] (positive).
    pub errno: i32,
    /// Signal sent for [`action::SIGNAL`].
    pub signal: u32,
    /// The [`via`] program that acts on it.
    pub via: u32,
    /// Bytes of [`SysRule::sysctl`] in use.
    pub sysctl_len: u32,
    /// Command name for [`matches::COMM`], NUL-padded.
    pub comm: [u8; 16],
    /// For [`matches::SYSCTL`]: the sysctl subtree relative to /proc/sys with a trailing `/`
    /// (`net/ipv4/`), NUL-padded, as little-endian words. Empty for all of /proc/sys.
    pub sysctl: [u64; SYSCTL_WORDS],
    /// Which bytes of [`SysRule::sysctl`] a name must share to lie below the subtree.
    pub sysctl_mask: [u64; SYSCTL_WORDS],
    /// The subtree itself (`net/ipv4`), NUL-padded: a name equal to it is the subtree.
    pub sysctl_exact: [u64; SYSCTL_WORDS],
    /// Probability threshold on the `PROBABILITY_ONE` scale.
    pub threshold: u64,
    /// Selected calls let through first.
    pub after: u64,
    /// Act on every Nth selected call after those (1 = each).
    pub every: u64,
    /// Act at most this many times (`u64::MAX`: no limit).
    pub max_count: u64,
    /// `CLOCK_BOOTTIME` ns after which the rule no longer acts: the in-kernel deadline.
    pub deadline_ns: u64,
    /// How long a process stopped by an [`action::DELAY`] rule stays stopped.
    pub delay_ns: u64,
}

impl SysRule {
    /// A free slot.
    pub const EMPTY: SysRule = SysRule {
        action: action::NONE,
        matches: 0,
        errno: 0,
        signal: 0,
        via: 0,
        sysctl_len: 0,
        comm: [0; 16],
        sysctl: [0; SYSCTL_WORDS],
        sysctl_mask: [0; SYSCTL_WORDS],
        sysctl_exact: [0; SYSCTL_WORDS],
        threshold: 0,
        after: 0,
        every: 1,
        max_count: u64::MAX,
        deadline_ns: 0,
        delay_ns: 0,
    };
}

/// Per-rule state shared by all CPUs, updated with atomic adds so after-N, every-N and the
/// maximum count are exact.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysState {
    /// Selected calls so far.
    pub selected: u64,
    /// Calls acted on so far (may exceed the maximum by the calls refused for it).
    pub acted: u64,
}

/// Per-rule counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysCounters {
    /// Calls of its syscalls by callers its process or cgroup selector admits (every caller for
    /// a rule by command name), which the rule then examined.
    pub seen: u64,
    /// Calls of its target inside the deadline.
    pub matched: u64,
    /// Calls it acted on.
    pub acted: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): plain `#[repr(C)]` data without padding holes or pointers.
    unsafe impl aya::Pod for super::SysRule {}
    unsafe impl aya::Pod for super::SysState {}
    unsafe impl aya::Pod for super::SysCounters {}
    unsafe impl aya::Pod for super::SysPathKey {}
    unsafe impl aya::Pod for super::SysEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's comparison (`under_sysctl` in chaos-ebpf), on words.
    fn under(subtree: &str, name: &str) -> bool {
        let (p, m, e) = sysctl_words(subtree.as_bytes());
        let mut bytes = [0u8; SYSCTL_NAME_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        // The name as words, as the hook's buffer holds it.
        let mut n = [0u64; SYSCTL_WORDS];
        for (k, word) in n.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[8 * k..8 * k + 8]);
            *word = u64::from_le_bytes(b);
        }
        let below = (0..SYSCTL_WORDS).fold(0, |a, k| a | ((n[k] ^ p[k]) & m[k]));
        let exact = (0..SYSCTL_WORDS).fold(0, |a, k| a | (n[k] ^ e[k]));
        below == 0 || exact == 0
    }

    #[test]
    fn sysctl_subtrees_match_whole_components() {
        assert!(under("net/ipv4", "net/ipv4"));
        assert!(under("net/ipv4", "net/ipv4/tcp_mem"));
        assert!(under("net/ipv4", "net/ipv4/conf/all/forwarding"));
        assert!(!under("net/ipv4", "net/ipv4x"));
        assert!(!under("net/ipv4", "net/ipv"));
        assert!(!under("net/ipv4", "net/core/somaxconn"));
        assert!(under("", "kernel/hostname"));
        // 62 bytes: the slash is the 63rd, the last the mask covers.
        let long = "abcdefghij/abcdefghij/abcdefghij/abcdefghij/abcdefghij/abcdefg";
        assert_eq!(long.len(), 62);
        assert!(under(long, long));
        assert!(!under(
            long,
            "abcdefghij/abcdefghij/abcdefghij/abcdefghij/abcdefghij/abcdefgh"
        ));
    }
}
