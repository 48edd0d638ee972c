//! `chaos discover`: watches what a process and its descendants do with files, sockets and
//! DNS, and tells the controller through a ring buffer (`chaos_common::discover`). Observation
//! only: every program returns 0 and changes nothing.
//!
//! - `chaos_disc_enter` (raw tracepoint `sys_enter`): writes and syncs counted per descriptor
//!   (an event for the first of each), connect, bind and DNS datagrams sent, descriptors closed;
//!   the arguments of opens kept for the exit.
//! - `chaos_disc_exit` (raw tracepoint `sys_exit`): a successful open sent with its descriptor
//!   and path, a descriptor copy with both descriptors.
//! - `chaos_disc_fork` (tracepoint `sched/sched_process_fork`): the children of watched
//!   processes noted; their first syscall tells a process from a thread.
//!
//! A syscall of a process not watched costs one hash lookup (and one more for a task born of a
//! watched one, until its first call).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use chaos_common::discover::{
    DISC_MAX_FDS, DISC_MAX_WATCHED, DiscEvent, DiscFdCounts, DiscFdKey, kind,
};

use crate::syscall::current_tgid;

/// Processes watched (tgid -> 1), written by the controller and by `chaos_disc_enter` for
/// new processes.
#[map(name = "CHAOS_DISC_WATCH")]
static CHAOS_DISC_WATCH: HashMap<u32, u32> = HashMap::with_max_entries(DISC_MAX_WATCHED, 0);

/// New task id (in the initial namespace) of a watched parent, until its first syscall.
#[map(name = "CHAOS_DISC_NEW")]
static CHAOS_DISC_NEW: HashMap<u32, u32> = HashMap::with_max_entries(DISC_MAX_WATCHED, 0);

/// Descriptors written or synced since they were opened.
#[map(name = "CHAOS_DISC_FDS")]
static CHAOS_DISC_FDS: HashMap<DiscFdKey, DiscFdCounts> =
    HashMap::with_max_entries(DISC_MAX_FDS, 0);

/// An open in progress, by task id: what `chaos_disc_exit` needs to report it.
#[map(name = "CHAOS_DISC_OPENS")]
static CHAOS_DISC_OPENS: HashMap<u32, PendingOpen> = HashMap::with_max_entries(4096, 0);

/// The events.
#[map(name = "CHAOS_DISC_EVENTS")]
static CHAOS_DISC_EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Events the full ring buffer refused.
#[map(name = "CHAOS_DISC_LOST")]
static CHAOS_DISC_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The arguments of an open (or of a descriptor copy: `flags` [`DUP_MARK`], `dirfd` the
/// descriptor copied), from entry to exit.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingOpen {
    path: u64,
    flags: u32,
    dirfd: i32,
}

/// x86_64 syscall numbers watched.
mod nr {
    pub const WRITE: u64 = 1;
    pub const OPEN: u64 = 2;
    pub const CLOSE: u64 = 3;
    pub const PWRITE64: u64 = 18;
    pub const WRITEV: u64 = 20;
    pub const DUP: u64 = 32;
    pub const DUP2: u64 = 33;
    pub const CONNECT: u64 = 42;
    pub const SENDTO: u64 = 44;
    pub const BIND: u64 = 49;
    pub const FCNTL: u64 = 72;
    pub const FSYNC: u64 = 74;
    pub const FDATASYNC: u64 = 75;
    pub const CREAT: u64 = 85;
    pub const OPENAT: u64 = 257;
    pub const SYNC_FILE_RANGE: u64 = 277;
    pub const DUP3: u64 = 292;
    pub const PWRITEV: u64 = 296;
    pub const PWRITEV2: u64 = 328;
    pub const OPENAT2: u64 = 437;
}

/// fcntl commands that copy a descriptor: `F_DUPFD`, `F_DUPFD_CLOEXEC`.
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;
/// `PendingOpen::flags` of a descriptor copy (no open has all bits set).
const DUP_MARK: u32 = u32::MAX;

/// `AT_FDCWD`: a path relative to the working directory.
const AT_FDCWD: i32 = -100;
/// `O_WRONLY | O_CREAT | O_TRUNC`, what creat(2) opens with.
const CREAT_FLAGS: u32 = 0o1 | 0o100 | 0o1000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Offsets in x86_64 `struct pt_regs` of the syscall arguments (di, si, dx, r10, r8) and the
/// number (orig_ax).
const REG_ARGS: [usize; 5] = [14 * 8, 13 * 8, 12 * 8, 7 * 8, 9 * 8];
const REG_ORIG_AX: usize = 15 * 8;

/// Register `offset` of the saved user registers `regs`.
fn reg(regs: *const u8, offset: usize) -> u64 {
    // SAFETY: the helper checks the address.
    unsafe { bpf_probe_read_kernel(regs.wrapping_add(offset) as *const u64) }.unwrap_or(0)
}

/// The watched process making this call, or `None`. Settles a new task of a watched parent at
/// its first syscall: a process of its own if its tgid is its id, a thread otherwise.
fn watched() -> Option<u32> {
    let tgid = current_tgid()?;
    // SAFETY: plain u32 key.
    if unsafe { CHAOS_DISC_WATCH.get(tgid) }.is_some() {
        return Some(tgid);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (host_tgid, host_tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // SAFETY: plain u32 key.
    unsafe { CHAOS_DISC_NEW.get(host_tid) }?;
    let _ = CHAOS_DISC_NEW.remove(host_tid);
    if host_tgid != host_tid {
        return None;
    }
    let _ = CHAOS_DISC_WATCH.insert(tgid, 1, 0);
    send(kind::NEW_PROCESS, tgid, |_| {});
    Some(tgid)
}

/// Sends one event of `kind` for `tgid`, filled in by `fill` (its other fields are zero).
fn send(kind: u32, tgid: u32, fill: impl FnOnce(&mut DiscEvent)) {
    match CHAOS_DISC_EVENTS.reserve::<DiscEvent>(0) {
        Some(mut entry) => {
            let event = entry.as_mut_ptr();
            // SAFETY: the reserved entry is ours and sized for a DiscEvent; every byte is set
            // before it is submitted.
            unsafe {
                core::ptr::write_bytes(event, 0, 1);
                (*event).kind = kind;
                (*event).tgid = tgid;
                fill(&mut *event);
            }
            entry.submit(0);
        }
        None => {
            if let Some(lost) = CHAOS_DISC_LOST.get_ptr_mut(0) {
                // SAFETY: this CPU's slot.
                unsafe { *lost += 1 };
            }
        }
    }
}

/// Counts a write or a sync of `fd`; the first of each since the open is sent.
fn count(tgid: u32, fd: u64, sync: bool) {
    let key = DiscFdKey {
        tgid,
        fd: fd as u32,
    };
    let first = match CHAOS_DISC_FDS.get_ptr_mut(key) {
        Some(c) => {
            // SAFETY: a map value; the counts are statistics, a lost increment between two
            // CPUs writing one descriptor at once is of no consequence.
            unsafe {
                let n = if sync {
                    &mut (*c).syncs
                } else {
                    &mut (*c).writes
                };
                *n += 1;
                *n == 1
            }
        }
        None => {
            let counts = DiscFdCounts {
                writes: u64::from(!sync),
                syncs: u64::from(sync),
            };
            let _ = CHAOS_DISC_FDS.insert(key, counts, 0);
            true
        }
    };
    if first {
        let k = if sync { kind::SYNC } else { kind::WRITE };
        send(k, tgid, |e| e.fd = fd as i32);
    }
}

/// Sends the counts of `fd` and forgets them (closed, or about to mean another file).
fn done(tgid: u32, fd: u32) {
    let key = DiscFdKey { tgid, fd };
    // SAFETY: plain key.
    if let Some(c) = unsafe { CHAOS_DISC_FDS.get(key) }.copied() {
        let _ = CHAOS_DISC_FDS.remove(key);
        send(kind::DONE, tgid, |e| {
            e.fd = fd as i32;
            e.writes = c.writes;
            e.syncs = c.syncs;
        });
    }
}

/// Reads a `sockaddr_in` or `sockaddr_in6` from user memory into the event.
fn sockaddr(e: &mut DiscEvent, addr: u64) {
    let p = addr as *const u8;
    // SAFETY: user memory read by the helper, which checks the address.
    let family: u16 = unsafe { bpf_probe_read_user(p as *const u16) }.unwrap_or(0);
    // SAFETY: as above.
    let port: u16 = unsafe { bpf_probe_read_user(p.wrapping_add(2) as *const u16) }.unwrap_or(0);
    e.family = family;
    e.port = u16::from_be(port);
    match family {
        AF_INET => {
            // SAFETY: as above.
            let a: [u8; 4] = unsafe { bpf_probe_read_user(p.wrapping_add(4) as *const [u8; 4]) }
                .unwrap_or([0; 4]);
            e.addr[..4].copy_from_slice(&a);
        }
        AF_INET6 => {
            // SAFETY: as above.
            e.addr = unsafe { bpf_probe_read_user(p.wrapping_add(8) as *const [u8; 16]) }
                .unwrap_or([0; 16]);
        }
        _ => {}
    }
}

/// The destination port of a user `sockaddr` (0 if unreadable).
fn sockaddr_port(addr: u64) -> u16 {
    // SAFETY: user memory read by the helper.
    u16::from_be(unsafe { bpf_probe_read_user((addr + 2) as *const u16) }.unwrap_or(0))
}

/// Writes, syncs, connects, binds, DNS queries and closes of watched processes; the arguments
/// of their opens.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn chaos_disc_enter(ctx: RawTracePointContext) -> i32 {
    let Some(tgid) = watched() else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    let nr: u64 = ctx.arg(1);
    let arg = |i: usize| reg(regs, REG_ARGS[i]);
    match nr {
        nr::WRITE | nr::PWRITE64 | nr::WRITEV | nr::PWRITEV | nr::PWRITEV2 => {
            count(tgid, arg(0), false);
        }
        nr::FSYNC | nr::FDATASYNC | nr::SYNC_FILE_RANGE => count(tgid, arg(0), true),
        nr::CLOSE => done(tgid, arg(0) as u32),
        nr::OPEN | nr::CREAT | nr::OPENAT | nr::OPENAT2 => {
            let pending = match nr {
                nr::OPEN => PendingOpen {
                    path: arg(0),
                    flags: arg(1) as u32,
                    dirfd: AT_FDCWD,
                },
                nr::CREAT => PendingOpen {
                    path: arg(0),
                    flags: CREAT_FLAGS,
                    dirfd: AT_FDCWD,
                },
                nr::OPENAT => PendingOpen {
                    path: arg(1),
                    flags: arg(2) as u32,
                    dirfd: arg(0) as i32,
                },
                // openat2: the flags are the first field of `struct open_how`.
                _ => PendingOpen {
                    path: arg(1),
                    // SAFETY: user memory read by the helper.
                    flags: unsafe { bpf_probe_read_user(arg(2) as *const u64) }.unwrap_or(0) as u32,
                    dirfd: arg(0) as i32,
                },
            };
            let tid = bpf_get_current_pid_tgid() as u32;
            let _ = CHAOS_DISC_OPENS.insert(tid, pending, 0);
        }
        nr::DUP | nr::DUP2 | nr::DUP3 | nr::FCNTL => {
            if nr != nr::FCNTL || matches!(arg(1), F_DUPFD | F_DUPFD_CLOEXEC) {
                let copy = PendingOpen {
                    path: 0,
                    flags: DUP_MARK,
                    dirfd: arg(0) as i32,
                };
                let tid = bpf_get_current_pid_tgid() as u32;
                let _ = CHAOS_DISC_OPENS.insert(tid, copy, 0);
            }
        }
        nr::CONNECT | nr::BIND => {
            let (fd, addr) = (arg(0), arg(1));
            let k = if nr == nr::CONNECT {
                kind::CONNECT
            } else {
                kind::BIND
            };
            send(k, tgid, |e| {
                e.fd = fd as i32;
                sockaddr(e, addr);
            });
        }
        nr::SENDTO => {
            // sendto(fd, buf, len, flags, addr, addrlen): only datagrams to port 53 (DNS).
            let (fd, addr) = (arg(0), arg(4));
            if addr != 0 && sockaddr_port(addr) == 53 {
                send(kind::DNS, tgid, |e| {
                    e.fd = fd as i32;
                    sockaddr(e, addr);
                });
            }
        }
        _ => {}
    }
    0
}

/// Successful opens of watched processes, with their descriptor and path.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn chaos_disc_exit(ctx: RawTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain key.
    let Some(open) = (unsafe { CHAOS_DISC_OPENS.get(tid) }).copied() else {
        return 0;
    };
    let _ = CHAOS_DISC_OPENS.remove(tid);
    let regs: *const u8 = ctx.arg(0);
    let nr = reg(regs, REG_ORIG_AX);
    let ret: i64 = ctx.arg(1);
    let opened = matches!(nr, nr::OPEN | nr::CREAT | nr::OPENAT | nr::OPENAT2);
    let copied = matches!(nr, nr::DUP | nr::DUP2 | nr::DUP3 | nr::FCNTL);
    if !(opened || copied) || ret < 0 {
        return 0;
    }
    let Some(tgid) = current_tgid() else {
        return 0;
    };
    // A descriptor number reused without a close seen (dup2 over an open one, close_range):
    // its old file's counts go first.
    done(tgid, ret as u32);
    if copied {
        send(kind::DUP, tgid, |e| {
            e.fd = ret as i32;
            e.dirfd = open.dirfd;
        });
        return 0;
    }
    send(kind::OPEN, tgid, |e| {
        e.fd = ret as i32;
        e.flags = open.flags;
        e.dirfd = open.dirfd;
        // SAFETY: user memory read by the helper into the event's buffer, NUL-terminated.
        let _ = unsafe { bpf_probe_read_user_str_bytes(open.path as *const u8, &mut e.path) };
    });
    0
}

/// Notes the children of watched processes.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn chaos_disc_fork(ctx: TracePointContext) -> u32 {
    let Some(tgid) = current_tgid() else {
        return 0;
    };
    // SAFETY: plain u32 key.
    if unsafe { CHAOS_DISC_WATCH.get(tgid) }.is_none() {
        return 0;
    }
    // The syscall family's global, set by the same loader.
    let offset = crate::syscall::fork_child_pid_offset();
    // SAFETY: reading a field of the tracepoint record at the offset its format file gives.
    if offset != 0
        && let Ok(child) = unsafe { ctx.read_at::<i32>(offset) }
    {
        let _ = CHAOS_DISC_NEW.insert(child as u32, 1, 0);
    }
    0
}
