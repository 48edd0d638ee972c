//! The state store: what is armed, written before anything touches the kernel and marked
//! recovered once it is undone, so that `chaos recover --all` can clean up after any crash.
//!
//! One SQLite database, `chaos.db`, in the state directory (`/run/chaos`, or
//! `$CHAOS_STATE_DIR`): a table per kind of record (faults, attachments, I/O measurement
//! watches), each row the record as JSON beside the columns it is looked up by. The database
//! uses a rollback journal (`journal_mode=DELETE`): a writer killed mid-transaction leaves a hot
//! journal that the next reader rolls back, so a record is either wholly there or not at all.
//! It never calls `fsync` (`synchronous=OFF`): the journal and the pages are in the kernel's
//! page cache when a write returns, which every later process reads, and that is what a killed
//! `chaos` needs. A sync would only carry the records past a power loss or a kernel crash, but
//! what they describe (programs, maps, qdiscs, cgroup limits) dies with the boot, and `/run` is
//! a tmpfs on most hosts anyway. Not syncing also keeps `chaos` free of its own faults: an I/O
//! hang on the disk under `/run`, or failed fsyncs, would otherwise stop the very writes that
//! recover them. It saves a millisecond or more per write where `/run` is on a disk (four
//! fsyncs per transaction). (A fill fault's files do outlive a reboot: after a power loss,
//! delete the `.chaos-fill-*` files by hand if `recover --all` no longer knows them.)
//!
//! The schema is versioned (`PRAGMA user_version`); a database of an unknown version, or one
//! that is not SQLite, is refused, and `recover --all` moves it aside (see
//! [`Store::purge_unreadable`]).
//!
//! An exclusive `flock` on `.lock` still serialises every `chaos` process that changes state:
//! arming is many steps (a record, maps, attachments, the record again) that must not
//! interleave with another process's, which a transaction per step does not give.
//!
//! A recovered fault is kept as a row in state `recovered` (when, by whom, its last counters)
//! rather than deleted, so that the daemon can still answer for it. That history lives only as
//! long as someone may ask: when nothing is armed any more, [`Store::remove_if_empty`] removes
//! the database and the directory (a clean machine shows no trace of the injector) unless a
//! running daemon armed or recovered one of the rows; such a daemon drops its history when it
//! exits ([`Store::release`]). History is also cut to the latest [`HISTORY_KEPT`] faults.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    error::{Error, IoContext, Result},
    plan::{CgroupTarget, Interface},
    spec::{Direction, FaultSpec},
    strategy::Strategy,
};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/chaos";

/// The database's file name in the state directory.
pub const DB_FILE: &str = "chaos.db";

/// The schema this version writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How many recovered faults the store keeps at most (the oldest go first).
pub const HISTORY_KEPT: usize = 1000;

/// How long a connection waits for another process's write before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a fault is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultState {
    /// Recorded, being armed: a crash here leaves a record that recovery undoes.
    Arming,
    /// Fully armed.
    Armed,
    /// Recovered: kept for the record, acts no more.
    Recovered,
}

impl FaultState {
    fn as_str(self) -> &'static str {
        match self {
            FaultState::Arming => "arming",
            FaultState::Armed => "armed",
            FaultState::Recovered => "recovered",
        }
    }
}

/// What kind of program armed a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    /// A library user of [`crate::Injector`] (the default).
    Library,
    /// The `chaos` command line.
    Cli,
    /// `chaos serve`.
    Daemon,
}

/// Who armed (or recovered) a fault: a kind of program and its process, named by pid and start
/// time so that a reused pid is not taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The kind of program.
    pub kind: OwnerKind,
    /// Its process id.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

/// This process's [`OwnerKind`], as [`Owner::set_process_kind`] set it.
static PROCESS_KIND: AtomicU8 = AtomicU8::new(0);

impl Owner {
    /// Declares what kind of program this process is (the CLI and `chaos serve` do, at start);
    /// faults it arms from then on are recorded as this kind's.
    pub fn set_process_kind(kind: OwnerKind) {
        PROCESS_KIND.store(kind as u8, Ordering::Relaxed);
    }

    /// This process.
    pub fn current() -> Owner {
        static START: OnceLock<u64> = OnceLock::new();
        let kind = match PROCESS_KIND.load(Ordering::Relaxed) {
            1 => OwnerKind::Cli,
            2 => OwnerKind::Daemon,
            _ => OwnerKind::Library,
        };
        let pid = std::process::id();
        Owner {
            kind,
            pid,
            start_ticks: *START.get_or_init(|| process_start(pid).unwrap_or(0)),
        }
    }

    /// Whether its process still runs (a zombie does not).
    pub fn is_alive(&self) -> bool {
        process_start(self.pid) == Some(self.start_ticks)
    }

    /// Whether it is a `chaos serve` that still runs.
    pub fn is_live_daemon(&self) -> bool {
        self.kind == OwnerKind::Daemon && self.is_alive()
    }
}

/// A running (not zombie) process's start time in clock ticks after boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last
    // `)`, at field 3 (state).
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// An armed (or arming) fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Fault id, as printed by `chaos inject`.
    pub id: String,
    /// What was asked.
    pub spec: FaultSpec,
    /// How it is made.
    pub strategy: Strategy,
    /// Arming, armed or recovered.
    pub state: FaultState,
    /// Wall-clock time it was armed, ms since the epoch.
    pub created_unix_ms: u64,
    /// Wall-clock deadline, ms since the epoch (for people).
    pub deadline_unix_ms: u64,
    /// `CLOCK_BOOTTIME` deadline in ns, as the kernel checks it.
    pub deadline_boot_ns: u64,
    /// The network backend's share of the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetArmed>,
    /// The syscall backend's share of the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<SysArmed>,
    /// The block I/O or disk backend's share of the fault. Written before the backend touches
    /// anything (while `Arming`), so recovery can undo a half-made fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockArmed>,
    /// Who armed it (absent from records of versions that did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// When it was recovered, ms since the epoch (state `recovered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_unix_ms: Option<u64>,
    /// Who recovered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_by: Option<Owner>,
    /// Its counters as they were just before it was recovered, where it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_counters: Option<crate::injector::Counters>,
}

impl FaultRecord {
    /// Whether a running daemon armed or recovered it (and so may be asked about it).
    fn held_by_live_daemon(&self) -> bool {
        self.owner.is_some_and(|o| o.is_live_daemon())
            || self.recovered_by.is_some_and(|o| o.is_live_daemon())
    }
}

/// A block I/O or disk fault's state: what recovery undoes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BlockArmed {
    /// An error rule in the block layer's maps.
    Bio(crate::backend::io::BioArmed),
    /// Limits on a cgroup (and a process moved into a cgroup of its own).
    Throttle(crate::backend::throttle::ThrottleArmed),
    /// Files that take space.
    Fill(crate::backend::disk_fill::FillArmed),
}

/// Where a network fault lives in the BPF maps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetArmed {
    /// Rule slot in `CHAOS_NET_RULES`.
    pub slot: u32,
    /// Attachments (interface + direction) whose slot mask has this rule's bit.
    pub attachments: Vec<u32>,
    /// The rule's `matches` bits: what its attachments must look up for it.
    #[serde(default)]
    pub needs: u32,
    /// Address prefixes the rule selects or excludes, with their `CidrKey` kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<(u8, ipnet::IpNet)>,
    /// cgroup v2 ids the rule selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<u64>,
    /// Socket cookies the rule selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<u64>,
    /// Interface indexes the rule is limited to (rules the cgroup ingress hook judges).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ifindexes: Vec<u32>,
    /// Protocol classes the rule accepts (`chaos_common::net::proto_class`).
    #[serde(default = "all_protos")]
    pub protos: u32,
    /// Destination ports it accepts; `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dports: Option<(u16, u16)>,
    /// Source ports it accepts; `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sports: Option<(u16, u16)>,
    /// fq roots, netem band and ifb the rule relies on.
    #[serde(default)]
    pub shaping: crate::backend::shaping::Shaped,
}

/// Where a syscall fault lives in the BPF maps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SysArmed {
    /// Rule slot in `CHAOS_SYS_RULES`.
    pub slot: u32,
    /// Attachments the rule needs (sys_enter, kprobes, fork).
    pub attachments: Vec<u32>,
    /// Syscall numbers it is armed on.
    pub syscalls: Vec<u32>,
    /// Process ids it targets (`--pid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tgids: Vec<u32>,
    /// cgroup v2 ids it targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<u64>,
    /// Whom it targets, to continue what a `stop` fault stopped when it is recovered.
    pub target: crate::plan::SyscallTarget,
    /// The signal it sends, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// (file system, inode) of its path prefix and of the mount roots below it, as
    /// `CHAOS_SYS_PATH` keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<(u64, u64)>,
}

fn all_protos() -> u32 {
    chaos_common::net::proto_class::ALL
}

/// One program instance attached to one hook.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attachment {
    /// Attachment id: the key of `CHAOS_NET_ATTACH`, and the program instance's global.
    pub id: u32,
    /// Where it runs.
    pub hook: Hook,
    /// How it is attached, to undo it.
    pub link: AttachLink,
}

/// Where a network program instance runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hook", rename_all = "kebab-case")]
pub enum Hook {
    /// TC on one interface, one direction.
    Tc {
        /// The interface.
        interface: Interface,
        /// Egress or ingress (never both).
        direction: Direction,
    },
    /// `cgroup_skb/ingress` on a cgroup: inbound packets of its sockets and its sub-cgroups'.
    CgroupIngress {
        /// The cgroup.
        cgroup: CgroupTarget,
    },
    /// The raw tracepoint `sys_enter` (syscall signals, followed children).
    SysEnter,
    /// The tracepoint `sched/sched_process_fork` (children of followed processes).
    SysFork,
    /// A kprobe with `bpf_override_return` on a syscall entry point (syscall errors).
    SysKprobe {
        /// The kernel function, e.g. `__x64_sys_fsync`.
        function: String,
    },
    /// The kprobe on `should_fail_bio` (block I/O errors).
    BioFail,
    /// A BPF LSM hook (syscall errors).
    SysLsm {
        /// The security hook, e.g. `file_open`.
        lsm_hook: String,
    },
    /// A cgroup socket-address hook (connect, bind errors).
    SysSockAddr {
        /// The cgroup.
        cgroup: CgroupTarget,
        /// The program, e.g. `chaos_sys_connect4`.
        program: String,
    },
    /// The raw tracepoint `block_rq_issue` (block I/O measurement: a request's start).
    BlockIssue,
    /// The raw tracepoint `block_rq_complete` (block I/O measurement: its end).
    BlockComplete,
}

/// How a program is attached.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AttachLink {
    /// A TCX link pinned on bpffs.
    Tcx {
        /// The pin.
        pin: PathBuf,
        /// Whether the shared program instance runs there (registered under the interface's
        /// index in `CHAOS_NET_IFATT`, cleared on detach) rather than one loaded for it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shared: bool,
    },
    /// A filter on a clsact qdisc.
    Clsact {
        /// Filter priority.
        priority: u16,
        /// Filter handle.
        handle: u32,
        /// Whether we added the clsact qdisc (and so remove it when its last filter goes).
        created_qdisc: bool,
        /// As for [`AttachLink::Tcx`].
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shared: bool,
        /// Whether it is to be handed over to a TCX link once its faults are armed
        /// ([`crate::strategy::Attach::ClsactThenTcx`]); cleared if the handover failed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hand_over: bool,
    },
    /// A BPF link pinned on bpffs (cgroup, tracepoint, kprobe links).
    Link {
        /// The pin.
        pin: PathBuf,
    },
}

/// The state directory and its database.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    /// The connection last made, shared by clones: opening one (file, pragmas, schema) costs
    /// more than most of the statements run on it, and arming runs a dozen.
    cached: Arc<Mutex<Option<Cached>>>,
}

/// A connection, with the identity of the database file it was opened on: the file may be
/// removed (the last fault recovered) or moved aside between two calls, and a connection to
/// the old file must not go on.
#[derive(Debug)]
struct Cached {
    conn: Connection,
    file: (u64, u64),
}

/// Held while a process changes state; dropping it unlocks.
///
/// Taking the lock makes the state directory; dropping it removes the directory again when
/// the lock file is all it holds. So a holder that found nothing to do (a fault another
/// recovered meanwhile, a handover after the last recovery) leaves no trace, whatever it was.
pub struct StoreLock {
    lock: Flock<File>,
    dir: PathBuf,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let path = self.dir.join(".lock");
        let only_the_lock = fs::read_dir(&self.dir)
            .is_ok_and(|mut entries| entries.all(|e| e.is_ok_and(|e| e.file_name() == ".lock")));
        if !only_the_lock {
            return;
        }
        // Only our own file: after `remove_if_empty` another process may have made a new
        // directory and lock while we still hold this one. Removed under the lock, a waiter on
        // it sees that its file is gone and takes the current one (`lock_file`).
        if is_file_at(&self.lock, &path).unwrap_or(false) {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// The tables, each keyed by its record's id, with the record as JSON.
const TABLES: [&str; 3] = ["faults", "attachments", "watches"];

const SCHEMA: &str = "
    CREATE TABLE faults (
        id TEXT PRIMARY KEY NOT NULL,
        state TEXT NOT NULL,
        created_unix_ms INTEGER NOT NULL,
        recovered_unix_ms INTEGER,
        record TEXT NOT NULL
    );
    CREATE INDEX faults_by_state ON faults (state, created_unix_ms);
    CREATE TABLE attachments (id INTEGER PRIMARY KEY NOT NULL, record TEXT NOT NULL);
    CREATE TABLE watches (id TEXT PRIMARY KEY NOT NULL, record TEXT NOT NULL);
";

impl Store {
    /// The store at `$CHAOS_STATE_DIR` or [`DEFAULT_STATE_DIR`].
    pub fn open_default() -> Result<Store> {
        let dir = std::env::var_os("CHAOS_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Store::open(dir)
    }

    /// Where the probe's answer is cached: beside the state directory, not in it, so that it
    /// does not keep the directory (whose presence means "chaos has state here").
    pub fn probe_cache(&self) -> PathBuf {
        self.dir.with_extension("probe.json")
    }

    /// The store at `dir`. The directory and database are made when first written, and
    /// removed again by [`Store::remove_if_empty`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store> {
        Ok(Store {
            dir: dir.into(),
            cached: Arc::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    /// Takes the exclusive lock.
    pub fn lock(&self) -> Result<StoreLock> {
        Ok(self.lock_file(true)?.expect("made when asked to create"))
    }

    /// Takes the exclusive lock if the state directory exists; `None`, making nothing, when it
    /// does not: for work that has nothing to do without state and must not leave a directory
    /// behind (a handover that runs after the last fault was recovered).
    pub fn lock_existing(&self) -> Result<Option<StoreLock>> {
        self.lock_file(false)
    }

    fn lock_file(&self, create: bool) -> Result<Option<StoreLock>> {
        let path = self.dir.join(".lock");
        loop {
            if create {
                fs::create_dir_all(&self.dir)
                    .ctx(|| format!("creating state directory {}", self.dir.display()))?;
            }
            let file = match File::options()
                .create(create)
                .truncate(false)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
                // The directory was removed since (see below): make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
            };
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| Error::io(format!("locking {}", path.display()), e.into()))?;
            // The holder that recovered the last fault removed the lock file
            // (`remove_if_empty`) while we waited on it: a lock on a removed file excludes
            // nobody (the next caller creates a new one), so take the current file's instead.
            if is_file_at(&lock, &path).ctx(|| format!("looking at {}", path.display()))? {
                return Ok(Some(StoreLock {
                    lock,
                    dir: self.dir.clone(),
                }));
            }
        }
    }

    fn db_err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: self.db_path(),
            problem: e.to_string(),
        }
    }

    /// Runs `f` on a connection to the database; `None` when there is none (nothing recorded)
    /// and `create` is false. The connection is kept for the next call while the database file
    /// stays the same one (same device and inode: were it removed, or moved aside, and made
    /// again, the kept connection would go on with the old file).
    fn with_conn<R>(
        &self,
        create: bool,
        f: impl FnOnce(&Connection) -> Result<R>,
    ) -> Result<Option<R>> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.db_path();
        let now = file_id(&path);
        if cached.as_ref().is_none_or(|c| Some(c.file) != now) {
            *cached = None;
            // The identity before and after opening must agree, so that it is the opened file's.
            loop {
                let before = file_id(&path);
                let Some(conn) = self.connect(create)? else {
                    return Ok(None);
                };
                let after = file_id(&path);
                if let Some(file) = after.filter(|_| before == after) {
                    *cached = Some(Cached { conn, file });
                    break;
                }
            }
        }
        let c = cached.as_ref().expect("made above");
        f(&c.conn).map(Some)
    }

    /// Drops the kept connection: before the database file is removed or moved aside.
    fn forget_connection(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A new connection to the database; `None` when there is none (nothing recorded) and
    /// `create` is false.
    fn connect(&self, create: bool) -> Result<Option<Connection>> {
        let path = self.db_path();
        if create {
            fs::create_dir_all(&self.dir)
                .ctx(|| format!("creating state directory {}", self.dir.display()))?;
        } else if !path.exists() {
            return Ok(None);
        }
        // Read-write even to read: a reader rolls back what a killed writer left in the journal.
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = match Connection::open_with_flags(&path, flags) {
            Ok(c) => c,
            // Removed since we looked.
            Err(_) if !create && !path.exists() => return Ok(None),
            Err(e) => return Err(self.db_err(e)),
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.db_err(e))?;
        conn.pragma_update(None, "synchronous", "OFF")
            .map_err(|e| self.db_err(e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .map_err(|e| self.db_err(e))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(self.db_err(format!("journal mode {mode} instead of delete")));
        }
        match self.version(&conn)? {
            SCHEMA_VERSION => Ok(Some(conn)),
            // Just made (by us, or by a writer that has not yet committed its schema).
            0 if !create => Ok(None),
            0 => {
                conn.execute_batch("BEGIN IMMEDIATE")
                    .map_err(|e| self.db_err(e))?;
                let made = match self.version(&conn)? {
                    0 => conn
                        .execute_batch(SCHEMA)
                        .and_then(|()| conn.pragma_update(None, "user_version", SCHEMA_VERSION))
                        .and_then(|()| conn.execute_batch("COMMIT"))
                        .map_err(|e| self.db_err(e)),
                    SCHEMA_VERSION => conn.execute_batch("COMMIT").map_err(|e| self.db_err(e)),
                    v => Err(self.foreign(v)),
                };
                if made.is_err() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                made.map(|()| Some(conn))
            }
            v => Err(self.foreign(v)),
        }
    }

    fn version(&self, conn: &Connection) -> Result<i64> {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.db_err(e))
    }

    fn foreign(&self, version: i64) -> Error {
        self.db_err(format!(
            "schema version {version}, where this chaos reads {SCHEMA_VERSION}: written by \
             another version (chaos recover --all moves it aside)"
        ))
    }

    /// The `record` column of the rows of `sql` (which selects `id, record`), decoded.
    fn query<T: DeserializeOwned>(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<T>> {
        let Some(rows) = self.with_conn(false, |conn| self.rows(conn, sql, args))? else {
            return Ok(Vec::new());
        };
        rows.into_iter()
            .map(|(id, json)| {
                serde_json::from_str(&json).map_err(|e| self.db_err(format!("record {id}: {e}")))
            })
            .collect()
    }

    /// The `(id, record)` rows of `sql`, as text.
    fn rows(
        &self,
        conn: &Connection,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<(String, String)>> {
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                let id: rusqlite::types::Value = r.get(0)?;
                let id = match id {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(s) => s,
                    other => format!("{other:?}"),
                };
                let record = match r.get::<_, rusqlite::types::Value>(1)? {
                    rusqlite::types::Value::Text(s) => s,
                    other => format!("{other:?}"),
                };
                Ok((id, record))
            })
            .map_err(|e| self.db_err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.db_err(e))
    }

    fn execute(&self, sql: &str, args: impl rusqlite::Params) -> Result<()> {
        self.with_conn(true, |conn| {
            let mut stmt = conn.prepare_cached(sql).map_err(|e| self.db_err(e))?;
            stmt.execute(args).map_err(|e| self.db_err(e))
        })?
        .expect("made when asked to create");
        Ok(())
    }

    /// Deletes by id; nothing to do without a database.
    fn delete(&self, table: &str, id: &dyn rusqlite::ToSql) -> Result<()> {
        self.with_conn(false, |conn| {
            let mut stmt = conn
                .prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))
                .map_err(|e| self.db_err(e))?;
            stmt.execute([id]).map_err(|e| self.db_err(e))
        })?;
        Ok(())
    }

    /// Every live (arming or armed) fault record, oldest first.
    pub fn faults(&self) -> Result<Vec<FaultRecord>> {
        self.query(
            "SELECT id, record FROM faults WHERE state != 'recovered' \
             ORDER BY created_unix_ms, id",
            [],
        )
    }

    /// Recovered faults still kept, in the order they were recovered.
    pub fn history(&self) -> Result<Vec<FaultRecord>> {
        self.query(
            "SELECT id, record FROM faults WHERE state = 'recovered' \
             ORDER BY recovered_unix_ms, id",
            [],
        )
    }

    /// One live fault record.
    pub fn fault(&self, id: &str) -> Result<FaultRecord> {
        self.fault_any(id).and_then(|r| match r.state {
            FaultState::Recovered => Err(Error::NotFound(id.to_owned())),
            _ => Ok(r),
        })
    }

    /// One fault record, live or recovered (while its history is kept).
    pub fn fault_any(&self, id: &str) -> Result<FaultRecord> {
        self.query("SELECT id, record FROM faults WHERE id = ?1", [id])?
            .pop()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Writes (creates or replaces) a fault record.
    pub fn put_fault(&self, record: &FaultRecord) -> Result<()> {
        self.execute(
            "INSERT OR REPLACE INTO faults (id, state, created_unix_ms, recovered_unix_ms, record) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                record.id,
                record.state.as_str(),
                record.created_unix_ms as i64,
                record.recovered_unix_ms.map(|t| t as i64),
                serde_json::to_string(record).expect("state serialises"),
            ],
        )
    }

    /// Marks a live fault recovered (by this process, now, with its last `counters`), and
    /// forgets the oldest recovered faults past [`HISTORY_KEPT`].
    pub fn mark_recovered(
        &self,
        id: &str,
        counters: Option<crate::injector::Counters>,
    ) -> Result<()> {
        let mut record = self.fault(id)?;
        record.state = FaultState::Recovered;
        record.recovered_unix_ms = Some(crate::clock::unix_ms());
        record.recovered_by = Some(Owner::current());
        record.final_counters = counters;
        self.put_fault(&record)?;
        self.execute(
            "DELETE FROM faults WHERE state = 'recovered' AND id NOT IN \
             (SELECT id FROM faults WHERE state = 'recovered' \
              ORDER BY recovered_unix_ms DESC LIMIT ?1)",
            [HISTORY_KEPT as i64],
        )
    }

    /// Removes a fault record (one whose arming failed: nothing of it is left to remember).
    pub fn remove_fault(&self, id: &str) -> Result<()> {
        self.delete("faults", &id)
    }

    /// Every attachment.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        self.query("SELECT id, record FROM attachments ORDER BY id", [])
    }

    /// Writes an attachment.
    pub fn put_attachment(&self, a: &Attachment) -> Result<()> {
        self.execute(
            "INSERT OR REPLACE INTO attachments (id, record) VALUES (?1, ?2)",
            params![a.id, serde_json::to_string(a).expect("state serialises")],
        )
    }

    /// Removes an attachment.
    pub fn remove_attachment(&self, id: u32) -> Result<()> {
        self.delete("attachments", &id)
    }

    /// Every block I/O measurement watch.
    pub fn watches(&self) -> Result<Vec<crate::iostat::WatchRecord>> {
        self.query("SELECT id, record FROM watches ORDER BY id", [])
    }

    /// Writes a watch.
    pub fn put_watch(&self, w: &crate::iostat::WatchRecord) -> Result<()> {
        self.execute(
            "INSERT OR REPLACE INTO watches (id, record) VALUES (?1, ?2)",
            params![w.id, serde_json::to_string(w).expect("state serialises")],
        )
    }

    /// Removes a watch.
    pub fn remove_watch(&self, id: &str) -> Result<()> {
        self.delete("watches", &id)
    }

    /// Makes the store readable again whatever was left in it, and says what was given up:
    /// a database that is not one, or of another schema version, is moved aside (beside the
    /// state directory, as `<dir>.damaged-<ms>.db`); rows that cannot be read (damaged, or
    /// written by another version) are deleted, each reported with what it held; state files of
    /// versions before the database are read into it (or reported). `recover --all` calls it
    /// first, with the lock held, so that nothing unreadable stops the recovery of everything
    /// else; what the lost records named is found by its sweep of the kernel's state.
    pub fn purge_unreadable(&self) -> Result<Vec<String>> {
        // Checked on a connection of its own, which the file may be moved aside under.
        self.forget_connection();
        let mut purged = Vec::new();
        let checked = self.connect(false).and_then(|conn| match conn {
            Some(conn) => {
                let check: String = conn
                    .query_row("PRAGMA quick_check", [], |r| r.get(0))
                    .map_err(|e| self.db_err(e))?;
                if check != "ok" {
                    return Err(self.db_err(format!("damaged: {check}")));
                }
                Ok(Some(conn))
            }
            None => Ok(None),
        });
        match checked {
            Ok(Some(conn)) => {
                for table in TABLES {
                    let rows = self.rows(&conn, &format!("SELECT id, record FROM {table}"), [])?;
                    for (id, json) in rows {
                        let read = match table {
                            "faults" => serde_json::from_str::<FaultRecord>(&json).map(drop),
                            "attachments" => serde_json::from_str::<Attachment>(&json).map(drop),
                            _ => {
                                serde_json::from_str::<crate::iostat::WatchRecord>(&json).map(drop)
                            }
                        };
                        if let Err(e) = read {
                            conn.execute(
                                &format!("DELETE FROM {table} WHERE CAST(id AS TEXT) = ?1"),
                                [&id],
                            )
                            .map_err(|e| self.db_err(e))?;
                            purged.push(format!(
                                "{}: {table} row {id}: {e}; it held: {json}",
                                self.db_path().display()
                            ));
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                let aside = self
                    .dir
                    .with_extension(format!("damaged-{}.db", crate::clock::unix_ms()));
                let db = self.db_path();
                fs::rename(&db, &aside)
                    .ctx(|| format!("moving {} aside to {}", db.display(), aside.display()))?;
                // Its journal goes with it: it belongs to that file.
                let journal = journal_of(&db);
                if journal.exists() {
                    let _ = fs::rename(&journal, journal_of(&aside));
                }
                purged.push(format!("{e}; moved to {}", aside.display()));
            }
        }
        purged.extend(self.import_legacy()?);
        Ok(purged)
    }

    /// Reads the one-JSON-file-per-record state of versions before the database into it, and
    /// removes the files; returns what could not be read.
    fn import_legacy(&self) -> Result<Vec<String>> {
        let mut unreadable = Vec::new();
        for table in TABLES {
            let dir = self.dir.join(table);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                if path.extension().is_some_and(|e| e == "json") {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    let put = match table {
                        "faults" => read_json(&path, &text).and_then(|r| self.put_fault(&r)),
                        "attachments" => {
                            read_json(&path, &text).and_then(|a| self.put_attachment(&a))
                        }
                        _ => read_json(&path, &text).and_then(|w| self.put_watch(&w)),
                    };
                    if let Err(e) = put {
                        unreadable.push(format!(
                            "{e}; it held: {}",
                            text.split_whitespace().collect::<Vec<_>>().join(" ")
                        ));
                    }
                }
                // Temporary files of writes cut short go too: the record they would have
                // replaced is still there.
                fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
            }
            let _ = fs::remove_dir(&dir);
        }
        Ok(unreadable)
    }

    /// Removes the database and the state directory if nothing is armed, attached or watched
    /// and no running daemon keeps history in it, so a clean machine shows no trace of the
    /// injector. Call with the lock held. Returns whether they are gone.
    pub fn remove_if_empty(&self) -> Result<bool> {
        if !self.faults()?.is_empty()
            || !self.attachments()?.is_empty()
            || !self.watches()?.is_empty()
            || self.history()?.iter().any(FaultRecord::held_by_live_daemon)
        {
            return Ok(false);
        }
        self.forget_connection();
        let db = self.db_path();
        for f in [db.clone(), journal_of(&db)] {
            match fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("removing {}", f.display()), e));
                }
                _ => {}
            }
        }
        let _ = fs::remove_file(self.dir.join(".lock"));
        let _ = fs::remove_dir(&self.dir);
        Ok(true)
    }

    /// For a daemon that exits: forgets the recovered faults `owner` armed or recovered (nobody
    /// is left to ask about them), then removes the store if nothing else is in it.
    pub fn release(&self, owner: &Owner) -> Result<()> {
        let _lock = self.lock()?;
        for r in self.history()? {
            if r.owner.as_ref() == Some(owner) || r.recovered_by.as_ref() == Some(owner) {
                self.remove_fault(&r.id)?;
            }
        }
        self.remove_if_empty().map(drop)
    }
}

/// The (device, inode) of the file at `path`, if there is one.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether the file at `path` is `file` (same device and inode), not one made since in its
/// place, nor none.
fn is_file_at(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    Ok(file_id(path) == Some((m.dev(), m.ino())))
}

/// The rollback journal SQLite keeps beside `db` during a write.
fn journal_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-journal");
    name.into()
}

fn read_json<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Store {
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

/// A fresh fault id: `f-` and 8 hex digits from the kernel's random pool.
pub fn new_fault_id() -> String {
    let mut buf = [0u8; 4];
    // getrandom(2) on 4 bytes does not fail short of a broken kernel; fall back to time and pid.
    // SAFETY: writes at most 4 bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    let v = if n == 4 {
        u32::from_ne_bytes(buf)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id()
    };
    format!("f-{v:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::NetSpec;

    fn record(id: &str) -> FaultRecord {
        FaultRecord {
            id: id.into(),
            spec: FaultSpec::Net(NetSpec {
                percent: Some(10.0),
                interface: Some("veth0".into()),
                duration: Some("10s".into()),
                ..NetSpec::default()
            }),
            strategy: Strategy::Net(crate::strategy::NetStrategy {
                attach: crate::strategy::Attach::Tcx,
                shaping: crate::strategy::Shaping::None,
                cgroup_ingress: false,
            }),
            state: FaultState::Arming,
            created_unix_ms: 1,
            deadline_unix_ms: 2,
            deadline_boot_ns: 3,
            net: Some(NetArmed {
                slot: 4,
                attachments: vec![1, 2],
                needs: 0,
                cidrs: vec![(1, "10.0.0.0/8".parse().unwrap())],
                cgroups: vec![],
                sockets: vec![],
                ifindexes: vec![],
                protos: all_protos(),
                dports: None,
                sports: None,
                shaping: Default::default(),
            }),
            syscall: None,
            block: None,
            owner: Some(Owner::current()),
            recovered_unix_ms: None,
            recovered_by: None,
            final_counters: None,
        }
    }

    /// A fresh, absent directory for one test.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chaos-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn attachment(id: u32) -> Attachment {
        Attachment {
            id,
            hook: Hook::SysEnter,
            link: AttachLink::Link {
                pin: format!("/sys/fs/bpf/chaos/link-{id}").into(),
            },
        }
    }

    #[test]
    fn round_trip_and_cleanup() {
        let dir = test_dir("round-trip");
        let store = Store::open(&dir).unwrap();
        // Reading makes nothing.
        assert!(store.faults().unwrap().is_empty());
        assert!(matches!(store.fault("f-1"), Err(Error::NotFound(_))));
        assert!(!dir.exists(), "a read leaves no trace");
        let _lock = store.lock().unwrap();
        let mut r = record("f-1");
        store.put_fault(&r).unwrap();
        let back = store.fault("f-1").unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&r).unwrap()
        );
        assert_eq!(back.owner, Some(Owner::current()));
        r.state = FaultState::Armed;
        store.put_fault(&r).unwrap();
        assert_eq!(store.fault("f-1").unwrap().state, FaultState::Armed);
        assert_eq!(store.faults().unwrap().len(), 1, "replaced, not added");
        assert!(matches!(store.fault("f-2"), Err(Error::NotFound(_))));
        assert!(matches!(store.fault("../x"), Err(Error::NotFound(_))));
        store.put_attachment(&attachment(7)).unwrap();
        store.put_attachment(&attachment(3)).unwrap();
        let ids: Vec<u32> = store.attachments().unwrap().iter().map(|a| a.id).collect();
        assert_eq!(ids, [3, 7]);
        assert!(!store.remove_if_empty().unwrap());
        store.remove_attachment(3).unwrap();
        store.remove_attachment(7).unwrap();
        store.remove_fault("f-1").unwrap();
        assert!(store.remove_if_empty().unwrap());
        assert!(!dir.exists());
    }

    /// `lock_existing` makes nothing: without a state directory it returns `None`.
    #[test]
    fn lock_existing_leaves_no_directory() {
        let dir = test_dir("lock-existing");
        let store = Store::open(&dir).unwrap();
        assert!(store.lock_existing().unwrap().is_none());
        assert!(!dir.exists(), "no directory made");
        {
            let _lock = store.lock().unwrap();
            store.put_fault(&record("f-1")).unwrap();
        }
        assert!(store.lock_existing().unwrap().is_some());
        let _lock = store
            .lock_existing()
            .unwrap()
            .expect("the directory exists");
        store.remove_fault("f-1").unwrap();
        assert!(store.remove_if_empty().unwrap());
        drop(_lock);
        assert!(store.lock_existing().unwrap().is_none());
        assert!(!dir.exists());
    }

    /// A lock that found nothing to do leaves no directory; one whose holder recorded
    /// something leaves it, and the record.
    #[test]
    fn an_idle_lock_leaves_no_directory() {
        let dir = test_dir("idle-lock");
        let store = Store::open(&dir).unwrap();
        drop(store.lock().unwrap());
        assert!(!dir.exists(), "the lock alone went with it");
        {
            let _lock = store.lock().unwrap();
            store.put_fault(&record("f-1")).unwrap();
        }
        assert!(store.db_path().exists(), "the database stays");
        drop(store.lock().unwrap());
        assert_eq!(store.faults().unwrap().len(), 1);
        let _lock = store.lock().unwrap();
        store.remove_fault("f-1").unwrap();
        assert!(store.remove_if_empty().unwrap());
        // Another process makes the directory and its lock again before ours is dropped:
        // dropping ours leaves theirs alone.
        fs::create_dir_all(&dir).unwrap();
        File::create(dir.join(".lock")).unwrap();
        drop(_lock);
        assert!(dir.join(".lock").exists(), "not ours to remove");
        fs::remove_file(dir.join(".lock")).unwrap();
        fs::remove_dir(&dir).unwrap();
    }

    /// A store's kept connection does not outlive the file it was opened on: another
    /// process (here another `Store`, with a cache of its own) that removes the database, or
    /// moves it aside, is seen at the next call.
    #[test]
    fn a_kept_connection_follows_the_file() {
        let dir = test_dir("kept-connection");
        let (a, b) = (Store::open(&dir).unwrap(), Store::open(&dir).unwrap());
        a.put_fault(&record("f-1")).unwrap();
        assert_eq!(b.faults().unwrap().len(), 1);
        b.remove_fault("f-1").unwrap();
        assert!(b.remove_if_empty().unwrap());
        assert!(
            a.faults().unwrap().is_empty(),
            "nothing read from the removed file"
        );
        assert!(!dir.exists(), "a read after the removal makes nothing");
        a.put_fault(&record("f-2")).unwrap();
        let ids = |s: &Store| {
            s.faults()
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&b), ["f-2"], "the new file, through a new connection");
        // Moved aside and made again under the same name.
        fs::rename(a.db_path(), dir.join("aside.db")).unwrap();
        b.put_fault(&record("f-3")).unwrap();
        assert_eq!(ids(&a), ["f-3"]);
        let clone = a.clone();
        clone.remove_fault("f-3").unwrap();
        assert!(a.faults().unwrap().is_empty(), "clones share what they see");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A recovered fault stays, marked, out of the live list; a library's history does not keep
    /// the store, a running daemon's does until it releases it.
    #[test]
    fn recovered_faults_are_marked() {
        let dir = test_dir("marked");
        let store = Store::open(&dir).unwrap();
        let _lock = store.lock().unwrap();
        store.put_fault(&record("f-1")).unwrap();
        let counters = crate::injector::Counters {
            seen: 10,
            matched: 5,
            acted: 2,
        };
        store.mark_recovered("f-1", Some(counters)).unwrap();
        assert!(store.faults().unwrap().is_empty());
        assert!(matches!(store.fault("f-1"), Err(Error::NotFound(_))));
        assert!(matches!(
            store.mark_recovered("f-1", None),
            Err(Error::NotFound(_))
        ));
        let r = store.fault_any("f-1").unwrap();
        assert_eq!(r.state, FaultState::Recovered);
        assert!(r.recovered_unix_ms.unwrap() > 1_600_000_000_000);
        assert_eq!(r.recovered_by, Some(Owner::current()));
        assert_eq!(r.final_counters, Some(counters));
        assert_eq!(store.history().unwrap().len(), 1);
        assert!(store.remove_if_empty().unwrap(), "nobody asks about it");
        assert!(!dir.exists());

        // Armed by a daemon that runs (this process, as a daemon).
        let daemon = Owner {
            kind: OwnerKind::Daemon,
            ..Owner::current()
        };
        let _lock = store.lock().unwrap();
        let mut r = record("f-2");
        r.owner = Some(daemon);
        store.put_fault(&r).unwrap();
        store.mark_recovered("f-2", None).unwrap();
        assert!(!store.remove_if_empty().unwrap(), "its daemon may be asked");
        assert_eq!(store.fault_any("f-2").unwrap().state, FaultState::Recovered);
        drop(_lock);
        store.release(&daemon).unwrap();
        assert!(!dir.exists(), "released by the daemon that exits");

        // A dead daemon's history keeps nothing.
        let _lock = store.lock().unwrap();
        r.owner = Some(Owner {
            start_ticks: daemon.start_ticks + 1,
            ..daemon
        });
        store.put_fault(&r).unwrap();
        store.mark_recovered("f-2", None).unwrap();
        assert!(store.remove_if_empty().unwrap());
    }

    #[test]
    fn history_is_bounded() {
        let dir = test_dir("bounded");
        let store = Store::open(&dir).unwrap();
        let _lock = store.lock().unwrap();
        let conn = store.connect(true).unwrap().unwrap();
        // Older recovered faults, written directly (marking 1000 one by one is slow).
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..HISTORY_KEPT {
            let mut r = record(&format!("f-old{i}"));
            r.state = FaultState::Recovered;
            r.recovered_unix_ms = Some(i as u64 + 1);
            conn.execute(
                "INSERT INTO faults VALUES (?1, 'recovered', 1, ?2, ?3)",
                params![r.id, i as i64 + 1, serde_json::to_string(&r).unwrap()],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        store.put_fault(&record("f-new")).unwrap();
        store.mark_recovered("f-new", None).unwrap();
        let history = store.history().unwrap();
        assert_eq!(history.len(), HISTORY_KEPT);
        assert!(history.iter().all(|r| r.id != "f-old0"), "the oldest went");
        assert_eq!(history.last().unwrap().id, "f-new");
        assert!(store.remove_if_empty().unwrap());
    }

    /// The files as a writer killed in the middle of a transaction leaves them (copied while it
    /// is open): the next reader sees what was committed before it, nothing of the rest.
    #[test]
    fn a_transaction_cut_short_is_rolled_back() {
        let dir = test_dir("killed");
        let crashed = test_dir("killed-image");
        let store = Store::open(&dir).unwrap();
        store.put_fault(&record("f-1")).unwrap();
        let writer = store.connect(true).unwrap().unwrap();
        // A small page cache: the transaction's pages spill into the database file before the
        // commit, the originals being in the journal.
        writer.pragma_update(None, "cache_size", 2).unwrap();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        writer.execute("DELETE FROM faults", []).unwrap();
        for i in 0..200 {
            let mut r = record(&format!("f-x{i}"));
            r.id = format!("f-x{i}-{}", "y".repeat(2000));
            writer
                .execute(
                    "INSERT INTO faults VALUES (?1, 'armed', 1, NULL, ?2)",
                    params![r.id, serde_json::to_string(&r).unwrap()],
                )
                .unwrap();
        }
        let db = store.db_path();
        assert!(
            journal_of(&db).exists(),
            "a write in progress has its journal"
        );
        fs::create_dir_all(&crashed).unwrap();
        fs::copy(&db, crashed.join(DB_FILE)).unwrap();
        fs::copy(journal_of(&db), journal_of(&crashed.join(DB_FILE))).unwrap();
        drop(writer);

        let image = Store::open(&crashed).unwrap();
        assert!(image.purge_unreadable().unwrap().is_empty());
        let ids: Vec<String> = image.faults().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["f-1"], "the cut transaction is rolled back");
        assert!(!journal_of(&crashed.join(DB_FILE)).exists());
        fs::remove_dir_all(&crashed).unwrap();
        assert_eq!(store.faults().unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that is not a database, or one of another schema version, stops reads but not
    /// `purge_unreadable`, which moves it aside.
    #[test]
    fn a_damaged_or_foreign_database_is_moved_aside() {
        for (name, damage) in [
            (
                "garbage",
                (|db: &Path| fs::write(db, vec![0x5a; 8192]).unwrap()) as fn(&Path),
            ),
            ("foreign", |db: &Path| {
                let c = Connection::open(db).unwrap();
                c.pragma_update(None, "user_version", 99).unwrap();
            }),
        ] {
            let dir = test_dir(name);
            let store = Store::open(&dir).unwrap();
            let _lock = store.lock().unwrap();
            store.put_fault(&record("f-1")).unwrap();
            fs::remove_file(store.db_path()).unwrap();
            damage(&store.db_path());
            let e = store.faults().unwrap_err();
            assert!(matches!(e, Error::Store { .. }), "{name}: {e}");
            assert!(
                store.put_fault(&record("f-2")).is_err(),
                "{name}: not written over"
            );
            let purged = store.purge_unreadable().unwrap();
            assert_eq!(purged.len(), 1, "{name}: {purged:?}");
            let aside = PathBuf::from(purged[0].rsplit("moved to ").next().unwrap());
            assert!(aside.exists(), "{name}: {purged:?}");
            assert!(aside.starts_with(dir.parent().unwrap()) && !aside.starts_with(&dir));
            fs::remove_file(&aside).unwrap();
            assert!(store.faults().unwrap().is_empty());
            assert!(store.remove_if_empty().unwrap());
        }
    }

    #[test]
    fn unreadable_rows_are_purged() {
        let dir = test_dir("rows");
        let store = Store::open(&dir).unwrap();
        let _lock = store.lock().unwrap();
        store.put_fault(&record("f-1")).unwrap();
        store.put_attachment(&attachment(1)).unwrap();
        let conn = store.connect(true).unwrap().unwrap();
        conn.execute(
            "INSERT INTO faults VALUES ('f-bad', 'armed', 2, NULL, '{\"id\": \"f-bad\"}')",
            [],
        )
        .unwrap();
        conn.execute("INSERT INTO attachments VALUES (2, x'00ff')", [])
            .unwrap();
        assert!(store.faults().is_err());
        let purged = store.purge_unreadable().unwrap();
        assert_eq!(purged.len(), 2, "{purged:?}");
        assert!(purged[0].contains("f-bad"), "{purged:?}");
        assert_eq!(store.faults().unwrap()[0].id, "f-1");
        assert_eq!(store.attachments().unwrap().len(), 1);
        store.remove_fault("f-1").unwrap();
        store.remove_attachment(1).unwrap();
        assert!(store.remove_if_empty().unwrap());
    }

    /// The one-file-per-record state of earlier versions is read into the database.
    #[test]
    fn legacy_files_are_imported() {
        let dir = test_dir("legacy");
        let store = Store::open(&dir).unwrap();
        let _lock = store.lock().unwrap();
        fs::create_dir_all(dir.join("faults")).unwrap();
        fs::write(
            dir.join("faults/f-1.json"),
            serde_json::to_vec(&record("f-1")).unwrap(),
        )
        .unwrap();
        fs::write(dir.join("faults/f-2.json"), b"{\"id\": \"f-").unwrap();
        fs::write(dir.join("faults/.f-3.tmp"), b"{").unwrap();
        let purged = store.purge_unreadable().unwrap();
        assert_eq!(purged.len(), 1, "{purged:?}");
        assert!(purged[0].contains("f-2.json"), "{purged:?}");
        assert!(!dir.join("faults").exists());
        assert_eq!(store.fault("f-1").unwrap().id, "f-1");
        store.remove_fault("f-1").unwrap();
        assert!(store.remove_if_empty().unwrap());
    }

    #[test]
    fn owners_are_alive_while_their_process_runs() {
        let me = Owner::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_ticks > 0 && me.is_alive());
        assert!(
            !Owner {
                start_ticks: me.start_ticks + 1,
                ..me
            }
            .is_alive(),
            "a reused pid is not the owner"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start(pid);
        // A zombie is dead.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let owner = Owner {
            kind: OwnerKind::Daemon,
            pid,
            start_ticks: start.unwrap_or(0),
        };
        assert!(!owner.is_live_daemon());
        child.wait().unwrap();
        assert!(!owner.is_alive());
    }

    /// A caller blocked on the lock while its holder removed the store (the last fault
    /// recovered) ends up holding the lock of the current file, which excludes the next caller.
    #[test]
    fn a_lock_on_a_removed_file_is_retaken() {
        let dir = test_dir("lock");
        let store = Store::open(&dir).unwrap();
        let first = store.lock().unwrap();
        let (locked, wait) = std::sync::mpsc::channel();
        let (release, done) = std::sync::mpsc::channel::<()>();
        let other = store.clone();
        let waiter = std::thread::spawn(move || {
            let _lock = other.lock().unwrap();
            locked.send(()).unwrap();
            let _ = done.recv();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(store.remove_if_empty().unwrap(), "the lock file is removed");
        drop(first);
        wait.recv().unwrap();
        let file = File::open(dir.join(".lock")).expect("the waiter made the lock file again");
        assert!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err(),
            "the waiter holds the current file's lock"
        );
        release.send(()).unwrap();
        waiter.join().unwrap();
        let _lock = store.lock().unwrap();
        assert!(store.remove_if_empty().unwrap());
    }

    #[test]
    fn ids_are_distinct() {
        let a = new_fault_id();
        let b = new_fault_id();
        assert_ne!(a, b);
        assert!(a.starts_with("f-") && a.len() == 10);
    }
}
