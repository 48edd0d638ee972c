//! The state store: what is armed, written before anything touches the kernel and removed only
//! once it is undone, so that `chaos recover --all` can clean up after any crash.
//!
//! One JSON file per fault, per attachment and per I/O measurement watch under the state
//! directory (`/run/chaos`, or `$CHAOS_STATE_DIR`), written atomically (temp file + rename); an
//! exclusive `flock` on `.lock` serialises every `chaos` process that changes state.

use std::{
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    error::{Error, IoContext, Result},
    plan::{CgroupTarget, Interface},
    spec::{Direction, FaultSpec},
    strategy::Strategy,
};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/chaos";

/// Where a fault is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultState {
    /// Recorded, being armed: a crash here leaves a record that recovery undoes.
    Arming,
    /// Fully armed.
    Armed,
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
    /// Arming or armed.
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
    },
    /// A filter on a clsact qdisc.
    Clsact {
        /// Filter priority.
        priority: u16,
        /// Filter handle.
        handle: u32,
        /// Whether we added the clsact qdisc (and so remove it when its last filter goes).
        created_qdisc: bool,
    },
    /// A BPF link pinned on bpffs (cgroup, tracepoint, kprobe links).
    Link {
        /// The pin.
        pin: PathBuf,
    },
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// Held while a process changes state; dropping it unlocks.
pub struct StoreLock {
    _lock: Flock<File>,
}

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

    /// The store at `dir`. Directories are made when first written, and removed again by
    /// [`Store::remove_if_empty`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store> {
        Ok(Store { dir: dir.into() })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock.
    pub fn lock(&self) -> Result<StoreLock> {
        use std::os::unix::fs::MetadataExt;
        let path = self.dir.join(".lock");
        loop {
            fs::create_dir_all(&self.dir)
                .ctx(|| format!("creating state directory {}", self.dir.display()))?;
            let file = match File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                // The directory was removed since (see below): make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
            };
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| Error::io(format!("locking {}", path.display()), e.into()))?;
            // The holder that recovered the last fault removed the lock file
            // (`remove_if_empty`) while we waited on it: a lock on a removed file excludes
            // nobody (the next caller creates a new one), so take the current file's instead.
            let ours = lock
                .metadata()
                .ctx(|| format!("looking at {}", path.display()))?;
            if fs::metadata(&path).is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino()) {
                return Ok(StoreLock { _lock: lock });
            }
        }
    }

    /// Every fault record.
    pub fn faults(&self) -> Result<Vec<FaultRecord>> {
        let mut v: Vec<FaultRecord> = self.read_all("faults")?;
        v.sort_by(|a, b| {
            a.created_unix_ms
                .cmp(&b.created_unix_ms)
                .then(a.id.cmp(&b.id))
        });
        Ok(v)
    }

    /// One fault record.
    pub fn fault(&self, id: &str) -> Result<FaultRecord> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(Error::NotFound(id.to_owned()));
        }
        let path = self.dir.join("faults").join(format!("{id}.json"));
        if !path.exists() {
            return Err(Error::NotFound(id.to_owned()));
        }
        read_json(&path)
    }

    /// Writes (creates or replaces) a fault record.
    pub fn put_fault(&self, record: &FaultRecord) -> Result<()> {
        self.write("faults", &record.id, record)
    }

    /// Removes a fault record.
    pub fn remove_fault(&self, id: &str) -> Result<()> {
        self.remove("faults", id)
    }

    /// Every attachment.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        let mut v: Vec<Attachment> = self.read_all("attachments")?;
        v.sort_by_key(|a| a.id);
        Ok(v)
    }

    /// Writes an attachment.
    pub fn put_attachment(&self, a: &Attachment) -> Result<()> {
        self.write("attachments", &a.id.to_string(), a)
    }

    /// Removes an attachment.
    pub fn remove_attachment(&self, id: u32) -> Result<()> {
        self.remove("attachments", &id.to_string())
    }

    /// Every block I/O measurement watch.
    pub fn watches(&self) -> Result<Vec<crate::iostat::WatchRecord>> {
        self.read_all("watches")
    }

    /// Writes a watch.
    pub fn put_watch(&self, w: &crate::iostat::WatchRecord) -> Result<()> {
        self.write("watches", &w.id, w)
    }

    /// Removes a watch.
    pub fn remove_watch(&self, id: &str) -> Result<()> {
        self.remove("watches", id)
    }

    fn read_all<T: DeserializeOwned>(&self, sub: &str) -> Result<Vec<T>> {
        let dir = self.dir.join(sub);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            r => r.ctx(|| format!("reading {}", dir.display()))?,
        };
        for entry in entries {
            let path = entry.ctx(|| format!("reading {}", dir.display()))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(read_json(&path)?);
            }
        }
        Ok(out)
    }

    /// Removes state files that cannot be read (written by another version, or damaged), and
    /// returns what each held and why it was unreadable; and removes temporary files of writes
    /// that were cut short. `recover --all` calls it first, so that
    /// one bad file cannot stop the recovery of everything else.
    pub fn purge_unreadable(&self) -> Result<Vec<String>> {
        let mut purged = Vec::new();
        for (sub, check) in [
            (
                "faults",
                (|p| read_json::<FaultRecord>(p).map(drop)) as fn(&Path) -> Result<()>,
            ),
            ("attachments", |p| read_json::<Attachment>(p).map(drop)),
            ("watches", |p| {
                read_json::<crate::iostat::WatchRecord>(p).map(drop)
            }),
        ] {
            let dir = self.dir.join(sub);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                // A write cut short (the writer killed between writing and renaming): every
                // write holds the lock, so under it a temporary file is stale. The record it
                // would have replaced is still in place.
                if path.extension().is_some_and(|e| e == "tmp") {
                    fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
                    continue;
                }
                if path.extension().is_some_and(|e| e == "json")
                    && let Err(e) = check(&path)
                {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
                    purged.push(format!(
                        "{e}; it held: {}",
                        text.split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                }
            }
        }
        Ok(purged)
    }

    fn write<T: Serialize>(&self, sub: &str, name: &str, value: &T) -> Result<()> {
        let sub = self.dir.join(sub);
        fs::create_dir_all(&sub).ctx(|| format!("creating state directory {}", sub.display()))?;
        let path = sub.join(format!("{name}.json"));
        let tmp = sub.join(format!(".{name}.tmp"));
        let json = serde_json::to_vec_pretty(value).expect("state serialises");
        let mut f = File::create(&tmp).ctx(|| format!("writing {}", tmp.display()))?;
        f.write_all(&json)
            .and_then(|()| f.sync_all())
            .ctx(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).ctx(|| format!("renaming {} into place", tmp.display()))
    }

    fn remove(&self, sub: &str, name: &str) -> Result<()> {
        let path = self.dir.join(sub).join(format!("{name}.json"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Removes the state directory if it holds nothing but the lock, so a clean machine shows no
    /// trace of the injector. Call with the lock held.
    pub fn remove_if_empty(&self) -> Result<bool> {
        if !self.faults()?.is_empty()
            || !self.attachments()?.is_empty()
            || !self.watches()?.is_empty()
        {
            return Ok(false);
        }
        for sub in ["faults", "attachments", "watches"] {
            let _ = fs::remove_dir(self.dir.join(sub));
        }
        let _ = fs::remove_file(self.dir.join(".lock"));
        let _ = fs::remove_dir(&self.dir);
        Ok(true)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Store {
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
        }
    }

    #[test]
    fn round_trip_and_cleanup() {
        let dir = std::env::temp_dir().join(format!("chaos-store-test-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let _lock = store.lock().unwrap();
        store.put_fault(&record("f-1")).unwrap();
        assert_eq!(store.fault("f-1").unwrap().net.unwrap().slot, 4);
        assert!(matches!(store.fault("f-2"), Err(Error::NotFound(_))));
        assert!(matches!(store.fault("../x"), Err(Error::NotFound(_))));
        assert!(!store.remove_if_empty().unwrap());
        store.remove_fault("f-1").unwrap();
        assert!(store.remove_if_empty().unwrap());
        assert!(!dir.exists());
    }

    #[test]
    fn a_write_cut_short_is_purged() {
        let dir = std::env::temp_dir().join(format!("chaos-store-tmp-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let _lock = store.lock().unwrap();
        store.put_fault(&record("f-1")).unwrap();
        // As left by a writer killed between writing and renaming.
        std::fs::write(dir.join("faults/.f-1.tmp"), b"{\"id\": \"f-").unwrap();
        assert!(store.purge_unreadable().unwrap().is_empty());
        assert!(!dir.join("faults/.f-1.tmp").exists());
        assert_eq!(store.fault("f-1").unwrap().id, "f-1");
        store.remove_fault("f-1").unwrap();
        assert!(store.remove_if_empty().unwrap());
    }

    /// A caller blocked on the lock while its holder removed the store (the last fault
    /// recovered) ends up holding the lock of the current file, which excludes the next caller.
    #[test]
    fn a_lock_on_a_removed_file_is_retaken() {
        let dir = std::env::temp_dir().join(format!("chaos-store-lock-{}", std::process::id()));
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
