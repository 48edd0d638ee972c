//! The delay keeper: a `chaos keep-delays` process that continues the processes a delay rule
//! stopped (`SIGSTOP` from `sys_enter`), each `delay_ns` after the kernel reported the stop in
//! `CHAOS_SYS_EVENTS`. One keeper serves every delay rule (a ring buffer has one reader); it is
//! started by the first delay fault armed and exits, continuing whatever it still holds, once no
//! delay rule is live. Its pid is in `delay-keeper.pid` in the state directory.
//!
//! Were the keeper killed, the stopped processes would stay stopped until the fault is
//! recovered: recovery (and `chaos recover --all`) continues every target of a delay fault.

use std::{
    collections::BTreeMap,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use aya::maps::{Array, Map, MapData, RingBuf};
use chaos_common::syscall::{SYS_EVENTS_MAP, SYS_RULES_MAP, SysEvent, SysRule, action};

use crate::{
    ebpf,
    error::{Error, Result},
    store::Store,
};

/// The hidden subcommand that runs [`run`].
pub const SUBCOMMAND: &str = "keep-delays";

/// Longest sleep between looks at the rules (how late the keeper notices a recovery).
const IDLE: Duration = Duration::from_millis(100);

fn pid_file(store: &Store) -> PathBuf {
    store.dir().join("delay-keeper.pid")
}

/// The live delay keeper's pid, if one runs.
pub fn running(store: &Store) -> Option<u32> {
    running_as(&pid_file(store), SUBCOMMAND)
}

/// Removes the pid file of a delay keeper that no longer runs (killed: it could not remove
/// it), so that it does not keep the state directory. With the store lock held.
pub fn forget_if_dead(store: &Store) {
    forget_dead(&pid_file(store), SUBCOMMAND);
}

/// Removes `pid_file` unless it names a live `chaos SUBCOMMAND`.
pub(crate) fn forget_dead(pid_file: &Path, subcommand: &str) {
    if running_as(pid_file, subcommand).is_none() {
        let _ = std::fs::remove_file(pid_file);
    }
}

/// The pid in `pid_file` if that process is a live `chaos SUBCOMMAND`.
pub(crate) fn running_as(pid_file: &Path, subcommand: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == subcommand.as_bytes())
        .then_some(pid)
}

/// Starts the delay keeper unless one runs. It is the `chaos` binary (this one, `$CHAOS_BIN`,
/// or the `chaos` beside this executable), in a session of its own so it outlives its caller.
pub fn ensure_running(store: &Store) -> Result<()> {
    if running(store).is_some() {
        return Ok(());
    }
    spawn(
        store,
        SUBCOMMAND,
        &pid_file(store),
        "delay a running process",
    )
}

/// Starts `chaos SUBCOMMAND` detached, its pid written to `pid_file`; `what` names what needs it.
pub(crate) fn spawn(store: &Store, subcommand: &str, pid_file: &Path, what: &str) -> Result<()> {
    let binary = chaos_binary().ok_or_else(|| Error::Unsupported {
        what: what.into(),
        why: "its keeper is the chaos binary, which was not found: set CHAOS_BIN".into(),
    })?;
    let mut command = Command::new(&binary);
    command
        .arg(subcommand)
        .env("CHAOS_STATE_DIR", store.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| Error::io(format!("starting {} {subcommand}", binary.display()), e))?;
    std::fs::write(pid_file, child.id().to_string())
        .map_err(|e| Error::io(format!("writing {}", pid_file.display()), e))
}

fn chaos_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_name().is_some_and(|n| n == "chaos") {
        return Some(exe);
    }
    if let Some(bin) = std::env::var_os("CHAOS_BIN").map(PathBuf::from)
        && bin.is_file()
    {
        return Some(bin);
    }
    exe.parent()
        .map(|d| d.join("chaos"))
        .filter(|p| p.is_file())
}

/// The keeper's loop: reads stop events, continues each process `delay_ns` after its stop,
/// and returns once no delay rule is live and nothing is held.
pub fn run(store: &Store) -> Result<()> {
    let result = keep(store);
    if result.is_err()
        && let Ok(_lock) = store.lock()
    {
        forget(store);
    }
    result
}

/// Removes the pid file if it is ours (a newer keeper may have replaced it), and the state
/// directory if that leaves it empty. With the store lock held.
fn forget(store: &Store) {
    if running(store).is_none_or(|pid| pid == std::process::id()) {
        let _ = std::fs::remove_file(pid_file(store));
    }
    let _ = store.remove_if_empty();
}

/// The delay rules in the rules map, by slot (none once the maps are unpinned).
fn delay_rules() -> Result<Vec<(u32, SysRule)>> {
    let rules: Option<Array<MapData, SysRule>> = ebpf::typed_map(SYS_RULES_MAP, Map::Array)?;
    Ok(rules
        .iter()
        .flat_map(|r| r.iter().enumerate())
        .filter_map(|(slot, r)| r.ok().map(|r| (slot as u32, r)))
        .filter(|(_, r)| r.action == action::DELAY)
        .collect())
}

/// Whether any of `delays` still acts.
fn any_live(delays: &[(u32, SysRule)]) -> bool {
    let now = crate::clock::boot_ns();
    delays.iter().any(|(_, r)| now < r.deadline_ns) && !TERM.load(Ordering::SeqCst)
}

fn keep(store: &Store) -> Result<()> {
    let missing = |name: &str| Error::Store {
        path: Path::new(ebpf::MAP_PIN_DIR).join(name),
        problem: "pinned map missing: no syscall fault is armed".into(),
    };
    let mut ring = RingBuf::try_from(Map::RingBuf(
        ebpf::pinned_map(SYS_EVENTS_MAP)?.ok_or_else(|| missing(SYS_EVENTS_MAP))?,
    ))
    .map_err(|e| Error::bpf("opening the delay event ring", e))?;
    install_sigterm();
    // Process -> when to continue it (boot ns).
    let mut held: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        let delays = delay_rules()?;
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<SysEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a SysEvent; read unaligned from the ring's bytes.
            let event: SysEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            // A rule already gone: continue at once.
            let delay = delays
                .iter()
                .find(|(slot, _)| *slot == event.slot)
                .map_or(0, |(_, r)| r.delay_ns);
            let due = event.at_ns.saturating_add(delay);
            let entry = held.entry(event.tgid).or_insert(due);
            *entry = (*entry).max(due);
        }
        let now = crate::clock::boot_ns();
        let live = any_live(&delays);
        held.retain(|tgid, due| {
            if *due <= now || !live {
                // SAFETY: kill(2) with a pid the kernel reported stopped; gone is ESRCH.
                unsafe { libc::kill(*tgid as i32, libc::SIGCONT) };
                false
            } else {
                true
            }
        });
        if !live && held.is_empty() {
            // Decided under the store lock, which arming holds while it writes a rule and looks
            // for a keeper: a delay fault armed meanwhile is seen here, or finds no keeper and
            // starts one.
            let _lock = store.lock()?;
            if !any_live(&delay_rules()?) {
                forget(store);
                return Ok(());
            }
            continue;
        }
        let next = held.values().min().map_or(IDLE, |due| {
            Duration::from_nanos(due.saturating_sub(now)).min(IDLE)
        });
        let mut fds = [libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll(2) on one descriptor this function owns.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, next.as_millis().max(1) as i32) };
    }
}

/// Set by SIGTERM: continue what is held, and exit.
static TERM: AtomicBool = AtomicBool::new(false);

fn install_sigterm() {
    extern "C" fn on_term(_: libc::c_int) {
        TERM.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
}
