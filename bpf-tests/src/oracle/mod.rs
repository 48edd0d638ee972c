//! An independent oracle: lists every program, map, link, pin, qdisc, filter, cgroup limit and
//! state file the injector made, looking through libbpf (not aya, which the injector uses), `tc`
//! and cgroupfs, so that a bug shared by the injector and its own view cannot hide a leftover.
//!
//! ```no_run
//! use bpf_tests::{Oracle, TwoHosts};
//! let world = TwoHosts::new().unwrap();
//! let oracle = Oracle::new().with_netns(&world.netns_names());
//! let before = oracle.snapshot();
//! // ... arm a fault, check its effect, recover ...
//! oracle.assert_clean(&before);
//! ```
//!
//! What counts as ours:
//! * BPF programs named `chaos_*` and maps named `CHAOS_*` (names as the kernel keeps them, cut
//!   to 15 bytes), and links whose program is one of ours. While a fault is armed these are
//!   expected; after recovery none may remain — a program the kernel keeps alive because
//!   something still references it (a link, a tc filter, a pin, an open descriptor) is a leak.
//! * Any file under the pin root (`/sys/fs/bpf/chaos`).
//! * tc BPF filters running one of our programs (or a `chaos_*` name), TCX attachments of our
//!   programs, and `clsact`/`ingress` qdiscs absent from the `before` snapshot, on every
//!   interface of the host namespace and the namespaces given.
//! * Non-trivial `blkio.throttle.*` / `io.max` lines in cgroups named `chaos-*`, and cgroups named
//!   like those the injector makes (`chaos-io-*`, `chaos-probe-*`).
//! * The probe's scratch pins (`/sys/fs/bpf/chaos_probe_*`).
//! * Files under the state directory (`$CHAOS_STATE_DIR`, else `/run/chaos`).

pub(crate) mod tc;
pub mod testing;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libbpf_rs::query::{LinkInfoIter, LinkTypeInfo, MapInfoIter, ProgInfoIter};

pub use tc::{Interface, QdiscKey, TcFilter, TcState};

/// Prefix of our program names (see `chaos_common::PROG_PREFIX`).
pub const PROG_PREFIX: &str = "chaos_";
/// Prefix of our map names.
pub const MAP_PREFIX: &str = "CHAOS_";
/// Where the injector pins (see `chaos_common::PIN_ROOT`).
pub const PIN_ROOT: &str = "/sys/fs/bpf/chaos";
/// Environment variable naming the injector's state directory.
pub const STATE_DIR_ENV: &str = "CHAOS_STATE_DIR";
/// The injector's state directory when [`STATE_DIR_ENV`] is unset.
pub const DEFAULT_STATE_DIR: &str = "/run/chaos";
/// Prefix of the probe's scratch pins in `/sys/fs/bpf`.
pub const PROBE_PIN_PREFIX: &str = "chaos_probe_";
/// Prefixes of the cgroups the injector makes (see [`LeftoverKind::Cgroup`]).
pub const INJECTOR_CGROUP_PREFIXES: &[&str] = &["chaos-io-", "chaos-probe-"];
/// Prefix of the cgroups whose I/O limits are checked.
pub const CGROUP_PREFIX: &str = "chaos-";
/// How long [`Oracle::assert_clean`] lets the kernel finish releasing things (tc filters and
/// namespaces free their programs after an RCU grace period or from a workqueue).
pub const SETTLE: Duration = Duration::from_secs(3);

/// What sort of thing a [`Leftover`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeftoverKind {
    /// A loaded BPF program named `chaos_*`.
    Program,
    /// A BPF map named `CHAOS_*`.
    Map,
    /// A BPF link to one of our programs.
    Link,
    /// A file under the pin root.
    Pin,
    /// A tc BPF filter, or a TCX attachment, running one of our programs.
    TcFilter,
    /// A `clsact` or `ingress` qdisc that was not there before.
    Qdisc,
    /// An I/O limit in a `chaos-*` cgroup.
    CgroupLimit,
    /// A cgroup the injector makes (`chaos-io-*` for a moved process, `chaos-probe-*` for the
    /// probe's scratch attachments).
    Cgroup,
    /// A file in the injector's state directory.
    StateFile,
    /// Something the oracle could not check (a failing `tc`, an unreadable directory): reported
    /// so that a broken oracle cannot pass a test.
    Unchecked,
}

/// One thing the injector left behind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Leftover {
    /// Its kind.
    pub kind: LeftoverKind,
    /// A human description naming it precisely (id, path, interface...).
    pub description: String,
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.description)
    }
}

/// State taken before a test arms anything: the qdiscs per interface (the only thing compared
/// against), and everything of ours already present (for information).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    qdiscs: BTreeSet<QdiscKey>,
    present: Vec<Leftover>,
}

impl Snapshot {
    /// `clsact`/`ingress` qdiscs seen, as `(namespace, interface, kind, handle)`.
    pub fn qdiscs(&self) -> &BTreeSet<QdiscKey> {
        &self.qdiscs
    }

    /// Everything of ours already present when the snapshot was taken (with no `before`
    /// filtering: e.g. a program a previous test leaked).
    pub fn present(&self) -> &[Leftover] {
        &self.present
    }
}

/// The oracle: what to look at. Cheap to build; every query reads the kernel afresh.
#[derive(Clone, Debug)]
pub struct Oracle {
    host: bool,
    netns: Vec<String>,
    pin_root: PathBuf,
    state_dir: PathBuf,
}

impl Default for Oracle {
    fn default() -> Self {
        Self::new()
    }
}

impl Oracle {
    /// Looks at the host namespace (the caller's), the default pin root and the state directory
    /// from the environment.
    pub fn new() -> Self {
        Oracle {
            host: true,
            netns: Vec::new(),
            pin_root: PathBuf::from(PIN_ROOT),
            state_dir: std::env::var_os(STATE_DIR_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        }
    }

    /// Also looks at the interfaces of these namespaces (names under `/run/netns`). A namespace
    /// that is gone when queried is skipped.
    pub fn with_netns<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.netns
            .extend(names.iter().map(|n| n.as_ref().to_owned()));
        self
    }

    /// Does not look at the host namespace's interfaces.
    pub fn without_host_netns(mut self) -> Self {
        self.host = false;
        self
    }

    /// Looks for pins under `dir` instead of [`PIN_ROOT`].
    pub fn with_pin_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pin_root = dir.into();
        self
    }

    /// Looks for state files under `dir`.
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    fn namespaces(&self) -> Vec<Option<&str>> {
        let mut v: Vec<Option<&str>> = Vec::new();
        if self.host {
            v.push(None);
        }
        v.extend(self.netns.iter().map(|n| Some(n.as_str())));
        v
    }

    /// Takes the `before` state.
    pub fn snapshot(&self) -> Snapshot {
        let mut qdiscs = BTreeSet::new();
        for ns in self.namespaces() {
            if let Ok(Some(state)) = tc::tc_state(ns) {
                qdiscs.extend(state.qdiscs);
            }
        }
        Snapshot {
            qdiscs,
            present: self.leftovers(&Snapshot::default()),
        }
    }

    /// Everything of ours present now (qdiscs only if not in `before`), sorted by kind.
    pub fn leftovers(&self, before: &Snapshot) -> Vec<Leftover> {
        let mut out = Vec::new();
        let mut push = |kind, description: String| out.push(Leftover { kind, description });

        // Programs, maps, links.
        let mut ours: HashSet<u32> = HashSet::new();
        for p in ProgInfoIter::default() {
            let name = p.name.to_string_lossy();
            if name.starts_with(PROG_PREFIX) {
                ours.insert(p.id);
                push(
                    LeftoverKind::Program,
                    format!("BPF program {name} (id {}, type {:?})", p.id, p.ty),
                );
            }
        }
        for m in MapInfoIter::default() {
            let name = m.name.to_string_lossy();
            if name.starts_with(MAP_PREFIX) {
                push(
                    LeftoverKind::Map,
                    format!("BPF map {name} (id {}, type {:?})", m.id, m.ty),
                );
            }
        }
        for l in LinkInfoIter::default() {
            if ours.contains(&l.prog_id) {
                push(
                    LeftoverKind::Link,
                    format!(
                        "BPF link id {} to program id {} ({})",
                        l.id,
                        l.prog_id,
                        link_kind(&l.info)
                    ),
                );
            }
        }

        // Pins and state files.
        for (kind, root) in [
            (LeftoverKind::Pin, &self.pin_root),
            (LeftoverKind::StateFile, &self.state_dir),
        ] {
            match files_under(root) {
                Ok(files) => {
                    for f in files {
                        push(kind, format!("file {}", f.display()));
                    }
                }
                Err(e) => push(
                    LeftoverKind::Unchecked,
                    format!("cannot list {}: {e}", root.display()),
                ),
            }
        }

        // tc.
        for ns in self.namespaces() {
            let label = tc::ns_label(ns);
            match tc::tc_state(ns) {
                Ok(None) => {}
                Ok(Some(state)) => {
                    for q in &state.qdiscs {
                        if !before.qdiscs.contains(q) {
                            push(
                                LeftoverKind::Qdisc,
                                format!("{} qdisc {} on {} in netns {}", q.2, q.3, q.1, q.0),
                            );
                        }
                    }
                    for f in &state.filters {
                        let id_ours = f.prog_id.is_some_and(|id| ours.contains(&id));
                        if id_ours
                            || f.prog_name.starts_with(PROG_PREFIX)
                            || f.bpf_name.starts_with(PROG_PREFIX)
                        {
                            push(
                                LeftoverKind::TcFilter,
                                format!(
                                    "tc {} filter pref {} on {} in netns {}: {} (program {} id {:?})",
                                    f.direction,
                                    f.pref,
                                    f.ifname,
                                    f.netns,
                                    f.bpf_name,
                                    f.prog_name,
                                    f.prog_id
                                ),
                            );
                        }
                    }
                    for i in &state.interfaces {
                        for (dir, ids) in [("ingress", &i.tcx_ingress), ("egress", &i.tcx_egress)] {
                            for id in ids.iter().filter(|id| ours.contains(id)) {
                                push(
                                    LeftoverKind::TcFilter,
                                    format!(
                                        "TCX {dir} attachment of program id {id} on {} in netns {label}",
                                        i.name
                                    ),
                                );
                            }
                        }
                    }
                }
                Err(e) => push(
                    LeftoverKind::Unchecked,
                    format!("cannot read tc state of netns {label}: {e}"),
                ),
            }
        }

        // The probe's scratch pins, outside the pin root.
        if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(PROBE_PIN_PREFIX)
                {
                    push(LeftoverKind::Pin, format!("file {}", e.path().display()));
                }
            }
        }

        // Cgroups the injector makes.
        for path in injector_cgroups() {
            push(LeftoverKind::Cgroup, format!("cgroup {}", path.display()));
        }

        // Cgroup I/O limits.
        for (path, line) in cgroup_limits() {
            push(
                LeftoverKind::CgroupLimit,
                format!("{}: {line}", path.display()),
            );
        }

        out.sort();
        out
    }

    /// Like [`Oracle::leftovers`], but polls for up to `timeout` until nothing is left, since
    /// the kernel releases some things asynchronously.
    pub fn leftovers_settled(&self, before: &Snapshot, timeout: Duration) -> Vec<Leftover> {
        let start = Instant::now();
        loop {
            let found = self.leftovers(before);
            if found.is_empty() || start.elapsed() >= timeout {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics, listing them, if anything of ours is left (after letting the kernel settle for up
    /// to [`SETTLE`]).
    #[track_caller]
    pub fn assert_clean(&self, before: &Snapshot) {
        let found = self.leftovers_settled(before, SETTLE);
        if !found.is_empty() {
            let list: Vec<String> = found.iter().map(|l| format!("  - {l}")).collect();
            panic!(
                "the injector left {} thing(s) behind:\n{}",
                found.len(),
                list.join("\n")
            );
        }
    }
}

fn link_kind(info: &LinkTypeInfo) -> String {
    match info {
        LinkTypeInfo::Tcx(t) => {
            format!("tcx ifindex {} attach type {:?}", t.ifindex, t.attach_type)
        }
        LinkTypeInfo::Cgroup(c) => {
            format!("cgroup id {} attach type {:?}", c.cgroup_id, c.attach_type)
        }
        LinkTypeInfo::RawTracepoint(r) => format!("raw tracepoint {}", r.name),
        LinkTypeInfo::PerfEvent(_) => "perf event".to_owned(),
        LinkTypeInfo::Tracing(_) => "tracing".to_owned(),
        LinkTypeInfo::NetNs(_) => "netns".to_owned(),
        LinkTypeInfo::Xdp(x) => format!("xdp ifindex {}", x.ifindex),
        other => {
            let dbg = format!("{other:?}");
            dbg.split(['(', ' ', '{']).next().unwrap_or("").to_owned()
        }
    }
}

/// Every non-directory under `root`, recursively; a missing root is empty.
fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.extend(files_under(&e.path())?);
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Every cgroup directory, on any cgroup mount, named like one the injector makes.
fn injector_cgroups() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if INJECTOR_CGROUP_PREFIXES.iter().any(|p| name.starts_with(p)) {
                out.push(e.path());
            }
            walk(&e.path(), out);
        }
    }
    let mut out = Vec::new();
    for (mount_point, fstype, _) in crate::world::cgroup::mounts() {
        if fstype == "cgroup" || fstype == "cgroup2" {
            walk(&mount_point, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `(file, line)` for every I/O limit set in a cgroup named `chaos-*` on a blkio v1 hierarchy
/// or a cgroup2 mount.
fn cgroup_limits() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for (mount_point, fstype, opts) in crate::world::cgroup::mounts() {
        let v1 = fstype == "cgroup" && opts.split(',').any(|o| o == "blkio");
        if v1 || fstype == "cgroup2" {
            walk_cgroups(&mount_point, false, v1, &mut out);
        }
    }
    out
}

fn walk_cgroups(dir: &Path, named_ours: bool, v1: bool, out: &mut Vec<(PathBuf, String)>) {
    if named_ours {
        let files: &[&str] = if v1 {
            &[
                "blkio.throttle.read_bps_device",
                "blkio.throttle.write_bps_device",
                "blkio.throttle.read_iops_device",
                "blkio.throttle.write_iops_device",
            ]
        } else {
            &["io.max"]
        };
        for f in files {
            let path = dir.join(f);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                // io.max shows `MAJ:MIN rbps=max wbps=max riops=max wiops=max` for a device
                // whose limits were all reset: not a limit.
                let is_limit = v1
                    || line
                        .split_whitespace()
                        .skip(1)
                        .any(|kv| !kv.ends_with("=max"));
                if is_limit {
                    out.push((path.clone(), line.to_owned()));
                }
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let ours = named_ours || e.file_name().to_string_lossy().starts_with(CGROUP_PREFIX);
            walk_cgroups(&e.path(), ours, v1, out);
        }
    }
}
