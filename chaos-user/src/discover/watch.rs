//! The kernel side of a discovery: loads `chaos_disc_enter`, `chaos_disc_exit` and
//! `chaos_disc_fork`, tells them which processes to watch, drains their ring buffer into a
//! [`Tracker`], and detaches them. The links are the process's own (not pinned): if `chaos
//! discover` dies, the kernel drops them with it. Loading the object pins the injector's shared
//! maps; they are removed at the end when nothing else of the injector is there (the same rule
//! as `chaos recover`).

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use chaos_common::{
    discover::{
        DISC_EVENTS_MAP, DISC_FDS_MAP, DISC_LOST_MAP, DISC_WATCH_MAP, DiscEvent, DiscFdCounts,
        DiscFdKey,
    },
    syscall::FORK_CHILD_PID_OFFSET_GLOBAL,
};

use super::{
    procfs::{self, Proto, SocketLine},
    tracker::{Resolve, Tracker},
};
use crate::{
    backend, ebpf,
    error::{Error, Result},
    store::Store,
};

/// What the watch collected.
#[derive(Debug, Default)]
pub struct Collected {
    /// The events, digested.
    pub tracker: Tracker,
    /// Every socket of the watched processes seen by the periodic `/proc` reads.
    pub sockets: BTreeSet<(Proto, SocketLineKey)>,
    /// Every process watched at some point.
    pub processes: BTreeSet<u32>,
    /// Events lost to a full ring buffer.
    pub lost: u64,
    /// How long it watched.
    pub elapsed: Duration,
}

/// A socket line without its inode (the same connection seen at several reads is one).
pub type SocketLineKey = (std::net::SocketAddr, std::net::SocketAddr, u8);

/// Resolution through `/proc`; `root` is the watched service's main process.
struct Proc {
    root: u32,
}

impl Resolve for Proc {
    fn fd(&self, tgid: u32, fd: i32) -> Option<PathBuf> {
        procfs::fd_path(tgid, fd)
    }
    fn cwd(&self, tgid: u32) -> Option<PathBuf> {
        // A short-lived child (Redis's rewrite, a shell) may be gone when its open is read:
        // children start in their parent's directory, and rarely leave it.
        procfs::cwd(tgid).or_else(|| procfs::cwd(self.root))
    }
    fn real(&self, path: &std::path::Path) -> Option<PathBuf> {
        // The file itself when it is still there (a link to a file is opened as its target),
        // else its directory resolved (the file was removed since).
        std::fs::canonicalize(path).ok().or_else(|| {
            let dir = std::fs::canonicalize(path.parent()?).ok()?;
            Some(dir.join(path.file_name()?))
        })
    }
}

/// How often the sockets are read from `/proc`, and the ring drained at the least.
const SOCKET_READS: Duration = Duration::from_millis(250);
const DRAIN: Duration = Duration::from_millis(10);

/// Watches `pid` and its descendants for `length`, or until `stop` is set.
pub fn watch(pid: u32, length: Duration, stop: &AtomicBool) -> Result<Collected> {
    let store = Store::open_default()?;
    let mut bpf = {
        let _lock = store.lock()?;
        let loaded = load();
        if loaded.is_err() {
            release(&store);
        }
        loaded?
    };
    let result = run(&mut bpf, pid, length, stop);
    drop(bpf);
    let _lock = store.lock();
    release(&store);
    result
}

/// With nothing else of the injector armed, attached or watched, removes the pins and the state
/// directory that loading made.
fn release(store: &Store) {
    if let Err(e) = crate::iostat::release_locked(store) {
        tracing::warn!("cleaning up after the discovery: {e}");
    }
}

/// Loads the object and attaches the three programs.
fn load() -> Result<Ebpf> {
    let offset = backend::syscall::fork_child_pid_offset()?;
    let mut bpf = ebpf::load(&[(FORK_CHILD_PID_OFFSET_GLOBAL, offset)])?;
    for (name, tracepoint) in [
        ("chaos_disc_enter", "sys_enter"),
        ("chaos_disc_exit", "sys_exit"),
    ] {
        let p: &mut RawTracePoint = backend::load_program(&mut bpf, name)?;
        p.attach(tracepoint)
            .map_err(|e| Error::bpf(format!("attaching {name} to {tracepoint}"), e))?;
    }
    let p: &mut TracePoint = backend::load_program(&mut bpf, "chaos_disc_fork")?;
    p.attach("sched", "sched_process_fork")
        .map_err(|e| Error::bpf("attaching chaos_disc_fork to sched_process_fork", e))?;
    Ok(bpf)
}

fn map_error(what: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::bpf(format!("using map {what}"), e)
}

/// Takes map `name` of `bpf`, as its type.
fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    bpf: &mut Ebpf,
    name: &'static str,
) -> Result<T> {
    let map = bpf.take_map(name).ok_or_else(|| {
        Error::bpf(
            format!("finding map {name}"),
            aya::maps::MapError::InvalidName {
                name: name.to_owned(),
            },
        )
    })?;
    T::try_from(map).map_err(map_error(name))
}

fn run(bpf: &mut Ebpf, pid: u32, length: Duration, stop: &AtomicBool) -> Result<Collected> {
    let mut watch: HashMap<MapData, u32, u32> = take(bpf, DISC_WATCH_MAP)?;
    let mut ring: RingBuf<MapData> = take(bpf, DISC_EVENTS_MAP)?;
    let fds: HashMap<MapData, DiscFdKey, DiscFdCounts> = take(bpf, DISC_FDS_MAP)?;
    let lost: PerCpuArray<MapData, u64> = take(bpf, DISC_LOST_MAP)?;

    let proc = Proc { root: pid };
    let mut out = Collected::default();
    // The target and the processes it already started; those born from now on are added by
    // the kernel at their first syscall.
    out.processes.insert(pid);
    out.processes.extend(procfs::descendants(pid));
    for p in &out.processes {
        watch.insert(p, 1, 0).map_err(map_error(DISC_WATCH_MAP))?;
    }
    let started = Instant::now();
    let mut next_read = started;
    loop {
        drain(&mut ring, &mut out, &proc);
        let now = Instant::now();
        if now >= next_read {
            read_sockets(&mut out);
            next_read = now + SOCKET_READS;
        }
        if now.duration_since(started) >= length || stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(DRAIN);
    }
    out.elapsed = started.elapsed();
    // Stop the kernel side before the last reads, so they are final (a process born after
    // this is not followed any more).
    drain(&mut ring, &mut out, &proc);
    for p in out.processes.clone() {
        let _ = watch.remove(&p);
    }
    drain(&mut ring, &mut out, &proc);
    for entry in fds.iter() {
        let (k, c) = entry.map_err(map_error(DISC_FDS_MAP))?;
        out.tracker
            .open_counts(k.tgid, k.fd as i32, c.writes, c.syncs, &proc);
    }
    out.lost = lost
        .get(&0, 0)
        .map_err(map_error(DISC_LOST_MAP))?
        .iter()
        .sum();
    Ok(out)
}

/// Takes every event waiting in the ring; the processes born meanwhile join the watched.
fn drain(ring: &mut RingBuf<MapData>, out: &mut Collected, proc: &Proc) {
    while let Some(item) = ring.next() {
        if item.len() >= std::mem::size_of::<DiscEvent>() {
            // SAFETY: the kernel wrote a whole DiscEvent; read unaligned from its bytes.
            let e: DiscEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            out.tracker.event(&e, proc);
        }
    }
    out.processes
        .extend(out.tracker.new_processes.iter().copied());
}

/// Reads the sockets of the watched processes still alive.
fn read_sockets(out: &mut Collected) {
    let alive: BTreeSet<u32> = out
        .processes
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    for (
        proto,
        SocketLine {
            local,
            remote,
            state,
            ..
        },
    ) in procfs::sockets_of(&alive)
    {
        out.sockets.insert((proto, (local, remote, state)));
    }
}
