//! Block I/O measurement: operations, bytes, errors and latency per device, cgroup and
//! operation, from the block tracepoints, on every kernel with raw tracepoints and BTF.
//!
//! Two kernel programs (on `block_rq_issue` and `block_rq_complete`; BTF-typed where the kernel
//! allows, raw tracepoints elsewhere) are attached once, while anything watches a device, and
//! count into `CHAOS_IO_STATS` the requests of the watched devices only: a request to another
//! device costs a few loads. Latency runs from the block layer's start time of a request (kept
//! whenever its queue collects I/O statistics, the default, or has a scheduler: what the
//! submitter waits, block-layer queueing included) to its completion; on a queue keeping no
//! such time, from the request's issue to the driver (the issue program is then attached too).
//! It is kept as a sum, a maximum and a log-linear histogram (two buckets per power of two
//! from 256 ns), from which [`IoStats`] derives p50 / p90 / p99.
//!
//! Requests of stacked bio-based devices (device-mapper, md) are counted on the disks below
//! them: watch those.
//!
//! A *watch* is recorded in the [`Store`] before it touches the kernel, with its owner: a fault
//! (an io fault measures its device while armed) or a process (`chaos iostat`). A watch whose
//! owner is gone (fault recovered, process dead) is removed by [`prune_locked`], which the
//! injector's cleanup runs; `chaos recover --all` removes every watch ([`unwatch_all_locked`]).
//! The programs stay attached while some watch exists, and are detached with the last one.
//!
//! The cgroup of a request is its first bio's (`bio.bi_blkg`): the cgroup of the io / blkio
//! controller that submitted it, or that dirtied the pages for writeback. With cgroup v1 blkio
//! mounted (as on this project's own machines) that is a cgroup of the blkio hierarchy; else of
//! cgroup v2. [`CgroupNames`] turns its id (the directory's inode number) into a path.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{Array, Map, MapData},
    programs::{BtfTracePoint, RawTracePoint, links::FdLink},
};
use chaos_common::block::{
    IO_STATS_MAP, IO_WATCH_MAP, IO_WATCHING_MAP, IoCounters, IoRow as KernelRow, LAT_BUCKETS,
    PROG_IO_COMPLETE, PROG_IO_COMPLETE_BTF, PROG_IO_ISSUE, PROG_IO_ISSUE_BTF, WATCH_PROBES,
    WATCH_SLOTS, WatchEntry, bucket_floor_ns, kernel_dev, kernel_dev_parts, op, row_state,
    watch_slot,
};
use serde::{Deserialize, Serialize};

use crate::{
    backend, btf,
    clock::boot_ns,
    ebpf,
    error::{Error, Result},
    mounts::CgroupMounts,
    store::{AttachLink, Hook, Store},
};

/// A block device (whole disk or partition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Kernel name (`loop0`, `nvme0n1p2`).
    pub name: String,
}

impl Device {
    /// Resolves `arg`: a block device node (`/dev/loop0`), `MAJ:MIN`, or any other path, which
    /// names the device its file system lives on.
    pub fn resolve(arg: &str) -> Result<Device> {
        let fix = "give a block device (/dev/sdb, 8:16) or a path on a block-device file system";
        let (major, minor) = if let Some((maj, min)) = arg.split_once(':')
            && let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>())
        {
            (maj, min)
        } else {
            let meta = std::fs::metadata(arg)
                .map_err(|e| Error::invalid("device", format!("{arg}: {e}"), fix))?;
            let dev = if meta.file_type().is_block_device() {
                meta.rdev()
            } else {
                meta.dev()
            };
            (
                nix::sys::stat::major(dev) as u32,
                nix::sys::stat::minor(dev) as u32,
            )
        };
        let sys = sys_dir(major, minor);
        let uevent = std::fs::read_to_string(sys.join("uevent")).map_err(|_| {
            Error::invalid(
                "device",
                format!("{arg} is not a block device, nor on one (device {major}:{minor})"),
                fix,
            )
        })?;
        let name = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map_or_else(|| format!("{major}:{minor}"), str::to_owned);
        Ok(Device { major, minor, name })
    }

    /// The kernel's `dev_t` (`major << 20 | minor`).
    pub fn kernel_dev(&self) -> u32 {
        kernel_dev(self.major, self.minor)
    }

    /// Whether the block layer keeps a start time for its requests (`request.start_time_ns`):
    /// when its queue collects I/O statistics (`queue/iostats`, on by default) or has a
    /// scheduler. The completion program then times a request alone.
    pub fn keeps_start_times(&self) -> bool {
        let sys = sys_dir(self.major, self.minor);
        // A partition's queue is its disk's.
        let queue = if sys.join("partition").exists() {
            sys.join("../queue")
        } else {
            sys.join("queue")
        };
        let read = |f: &str| std::fs::read_to_string(queue.join(f)).unwrap_or_default();
        let scheduler = read("scheduler");
        read("iostats").trim() == "1" || (scheduler.contains('[') && !scheduler.contains("[none]"))
    }

    /// Its kernel `dev_t` and, for a whole disk, its partitions' (a request counts on the
    /// partition it is for).
    fn kernel_devs(&self) -> Vec<u32> {
        let mut devs = vec![self.kernel_dev()];
        let sys = sys_dir(self.major, self.minor);
        if let Ok(entries) = std::fs::read_dir(&sys) {
            for entry in entries.flatten() {
                let p = entry.path();
                if p.join("partition").exists()
                    && let Ok(text) = std::fs::read_to_string(p.join("dev"))
                    && let Some((maj, min)) = text.trim().split_once(':')
                    && let (Ok(maj), Ok(min)) = (maj.parse(), min.parse())
                {
                    devs.push(kernel_dev(maj, min));
                }
            }
        }
        devs
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.major, self.minor)
    }
}

fn sys_dir(major: u32, minor: u32) -> PathBuf {
    PathBuf::from(format!("/sys/dev/block/{major}:{minor}"))
}

/// Who keeps a watch alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "owner", rename_all = "lowercase")]
pub enum Owner {
    /// A fault: the watch lasts while its record exists.
    Fault {
        /// The fault id.
        fault: String,
    },
    /// A process (`chaos iostat`): the watch lasts while it runs.
    Process {
        /// Its pid.
        pid: u32,
        /// Its start time (`/proc/PID/stat` field 22), so a reused pid is not mistaken for it.
        start: u64,
    },
}

impl Owner {
    /// This process.
    pub fn this_process() -> Result<Owner> {
        let pid = std::process::id();
        let start = process_start(pid).ok_or_else(|| {
            Error::io(
                format!("reading /proc/{pid}/stat"),
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })?;
        Ok(Owner::Process { pid, start })
    }

    fn alive(&self, faults: &BTreeSet<String>) -> bool {
        match self {
            Owner::Fault { fault } => faults.contains(fault),
            Owner::Process { pid, start } => process_start(*pid) == Some(*start),
        }
    }
}

/// Start time of process `pid` in clock ticks since boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses: state is field 3,
    // so starttime (22) is the 20th after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A recorded watch: `owner` wants the block I/O of `device` (and its partitions) measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchRecord {
    /// Watch id (`w-` and 8 hex digits).
    pub id: String,
    /// The device.
    pub device: Device,
    /// Kernel `dev_t`s counted: the device and, for a whole disk, its partitions.
    pub devs: Vec<u32>,
    /// Who keeps it.
    #[serde(flatten)]
    pub owner: Owner,
    /// When it began (`CLOCK_BOOTTIME` ns).
    pub created_boot_ns: u64,
    /// Whether the device's queue keeps no start time for its requests (no I/O statistics, no
    /// scheduler), so that the issue program must time them.
    #[serde(default)]
    pub timed_at_issue: bool,
}

/// Watches `device` for `owner`, taking the store's lock. See [`watch_locked`].
pub fn watch(store: &Store, device: &Device, owner: Owner) -> Result<WatchRecord> {
    let _lock = store.lock()?;
    watch_locked(store, device, owner)
}

/// Watches `device` for `owner`, with the store's lock held: records the watch, attaches the
/// measurement programs if they are not yet, and adds the device to the watch set. On error
/// nothing is left of it.
pub fn watch_locked(store: &Store, device: &Device, owner: Owner) -> Result<WatchRecord> {
    let record = WatchRecord {
        id: crate::store::new_fault_id().replacen("f-", "w-", 1),
        device: device.clone(),
        devs: device.kernel_devs(),
        owner,
        created_boot_ns: boot_ns(),
        timed_at_issue: !device.keeps_start_times(),
    };
    store.put_watch(&record)?;
    let armed = attach_locked(store).and_then(|()| resync_locked(store));
    if let Err(e) = armed {
        let _ = store.remove_watch(&record.id);
        let _ = resync_locked(store);
        let _ = release_locked(store);
        return Err(e);
    }
    Ok(record)
}

/// Removes watch `id`, taking the store's lock; with the last watch, detaches the programs,
/// and when nothing of the injector is left, removes its pins and state directory.
pub fn unwatch(store: &Store, id: &str) -> Result<()> {
    let _lock = store.lock()?;
    unwatch_locked(store, id)?;
    release_locked(store)
}

/// Removes watch `id` (the store's lock held) and takes its devices out of the watch set
/// (their rows go with the last watch of each).
pub fn unwatch_locked(store: &Store, id: &str) -> Result<()> {
    store.remove_watch(id)?;
    resync_locked(store)
}

/// Removes the watches whose owner is gone (a recovered fault, a dead process) and brings the
/// watch set in line (the store's lock held). Returns whether any watch remains, i.e. whether
/// the measurement programs are still needed.
pub fn prune_locked(store: &Store) -> Result<bool> {
    let watches = store.watches()?;
    if watches.is_empty() {
        resync_locked(store)?;
        return Ok(false);
    }
    let faults: BTreeSet<String> = store.faults()?.into_iter().map(|f| f.id).collect();
    let mut left = false;
    for w in &watches {
        if w.owner.alive(&faults) {
            left = true;
        } else {
            store.remove_watch(&w.id)?;
        }
    }
    resync_locked(store)?;
    Ok(left)
}

/// Removes every watch (the store's lock held): for `chaos recover --all`. Returns how many.
pub fn unwatch_all_locked(store: &Store) -> Result<usize> {
    let watches = store.watches()?;
    for w in &watches {
        store.remove_watch(&w.id)?;
    }
    resync_locked(store)?;
    Ok(watches.len())
}

/// Whether `hook` is one of the measurement's.
pub fn is_measurement_hook(hook: &Hook) -> bool {
    matches!(hook, Hook::BlockIssue | Hook::BlockComplete)
}

/// With no watch left, detaches the measurement programs; with nothing of the injector left
/// at all, removes its pins and state directory (the store's lock held).
pub fn release_locked(store: &Store) -> Result<()> {
    if !store.watches()?.is_empty() {
        return Ok(());
    }
    for a in store.attachments()? {
        if is_measurement_hook(&a.hook) {
            backend::detach(&a)?;
            store.remove_attachment(a.id)?;
        }
    }
    if store.faults()?.is_empty() && store.attachments()?.is_empty() {
        ebpf::remove_all_pins()?;
        store.remove_if_empty()?;
    }
    Ok(())
}

/// Attaches the two programs unless they are.
fn attach_locked(store: &Store) -> Result<()> {
    backend::find_or_attach(store, Hook::BlockComplete, |hook, id, _| attach(hook, id))?;
    // The issue program only times requests that have no block-layer start time; it stays
    // attached until the last watch goes.
    if store.watches()?.iter().any(|w| w.timed_at_issue) {
        backend::find_or_attach(store, Hook::BlockIssue, |hook, id, _| attach(hook, id))?;
    }
    Ok(())
}

/// Environment variable choosing the programs: `btf` (the BTF-typed ones, or an error), `raw`
/// (the raw tracepoint ones); unset, the BTF-typed ones where the kernel accepts them. Tests
/// use it to cover both on one kernel.
pub const ISSUE_MODE_ENV: &str = "CHAOS_IO_ISSUE";

/// Loads and attaches the program for `hook`, pinning its link.
fn attach(hook: &Hook, id: u32) -> Result<AttachLink> {
    let (raw, typed, tracepoint) = match hook {
        Hook::BlockIssue => (PROG_IO_ISSUE, PROG_IO_ISSUE_BTF, "block_rq_issue"),
        Hook::BlockComplete => (PROG_IO_COMPLETE, PROG_IO_COMPLETE_BTF, "block_rq_complete"),
        other => unreachable!("not a measurement hook: {other:?}"),
    };
    let mut bpf = ebpf::load(&btf::block_offsets()?)?;
    let mode = std::env::var(ISSUE_MODE_ENV).unwrap_or_default();
    if mode != "raw" {
        match attach_btf(&mut bpf, typed, tracepoint) {
            Ok(link) => return backend::pin_link(link, &format!("io-{id}")),
            Err(e) if mode == "btf" => return Err(e),
            Err(e) => tracing::debug!("{typed}: {e}; using {raw}"),
        }
    }
    let program: &mut RawTracePoint = backend::load_program(&mut bpf, raw)?;
    let link_id = program
        .attach(tracepoint)
        .map_err(|e| Error::bpf(format!("attaching to raw tracepoint {tracepoint}"), e))?;
    let link: FdLink = program
        .take_link(link_id)
        .map_err(|e| Error::bpf(format!("taking the {tracepoint} link"), e))?
        .into();
    backend::pin_link(link, &format!("io-{id}"))
}

/// Loads and attaches program `name`, BTF-typed (plain loads instead of helper calls; Linux
/// 5.5+ with kernel BTF), on `tracepoint`.
fn attach_btf(bpf: &mut aya::Ebpf, name: &str, tracepoint: &str) -> Result<FdLink> {
    let btf = crate::ebpf::vmlinux_btf()?;
    let program: &mut BtfTracePoint = backend::find_program(bpf, name)?;
    program
        .load(tracepoint, btf)
        .map_err(|e| Error::bpf(format!("loading {name}"), e))?;
    let link_id = program
        .attach()
        .map_err(|e| Error::bpf(format!("attaching to BTF tracepoint {tracepoint}"), e))?;
    Ok(program
        .take_link(link_id)
        .map_err(|e| Error::bpf(format!("taking the {tracepoint} link"), e))?
        .into())
}

/// Makes the kernel's watch table hold exactly the devices of the recorded watches. A device
/// newly watched has its old rows cleared first (so its counts start now), one no longer
/// watched has its rows freed after.
fn resync_locked(store: &Store) -> Result<()> {
    let mut wanted: BTreeMap<u32, u32> = BTreeMap::new();
    for w in store.watches()? {
        for dev in w.devs {
            *wanted.entry(dev).or_default() += 1;
        }
    }
    let Some(mut table) = watch_table()? else {
        if wanted.is_empty() {
            return Ok(());
        }
        return Err(Error::Unsupported {
            what: "measure block I/O".into(),
            why: format!(
                "map {IO_WATCH_MAP} is not pinned under {}",
                ebpf::MAP_PIN_DIR
            ),
        });
    };
    let update = |e: aya::maps::MapError| Error::bpf(format!("updating {IO_WATCH_MAP}"), e);
    let mut slots = read_slots(&table)?;
    let mut gone = Vec::new();
    for (i, e) in slots.iter_mut().enumerate() {
        if e.dev != 0 && !wanted.contains_key(&e.dev) {
            gone.push(e.dev);
            *e = WatchEntry::default();
            table.set(i as u32, *e, 0).map_err(update)?;
        }
    }
    delete_rows(&gone)?;
    let now = boot_ns();
    for (&dev, &watchers) in &wanted {
        if let Some(i) = slots.iter().position(|e| e.dev == dev) {
            if slots[i].watchers != watchers {
                slots[i].watchers = watchers;
                table.set(i as u32, slots[i], 0).map_err(update)?;
            }
            continue;
        }
        let first = watch_slot(dev);
        let Some(i) = (0..WATCH_PROBES)
            .map(|k| ((first + k) & (WATCH_SLOTS - 1)) as usize)
            .find(|&i| slots[i].dev == 0)
        else {
            return Err(Error::Unsupported {
                what: format!("measure the block I/O of device {}", dev_name(dev)),
                why: format!(
                    "the {WATCH_PROBES} watch table slots it may use hold other devices; stop \
                     some watches (chaos iostat, io faults) first"
                ),
            });
        };
        delete_rows(&[dev])?;
        slots[i] = WatchEntry {
            dev,
            watchers,
            since_ns: now,
            untracked: 0,
        };
        table.set(i as u32, slots[i], 0).map_err(update)?;
    }
    if let Some(mut watching) = ebpf::typed_map::<Array<MapData, u32>>(IO_WATCHING_MAP, Map::Array)?
    {
        watching
            .set(0, wanted.len() as u32, 0)
            .map_err(|e| Error::bpf(format!("updating {IO_WATCHING_MAP}"), e))?;
    }
    Ok(())
}

fn watch_table() -> Result<Option<Array<MapData, WatchEntry>>> {
    ebpf::typed_map(IO_WATCH_MAP, Map::Array)
}

fn stats_table() -> Result<Option<Array<MapData, KernelRow>>> {
    ebpf::typed_map(IO_STATS_MAP, Map::Array)
}

/// Every slot of an array map.
fn read_slots<T: aya::Pod>(table: &Array<MapData, T>) -> Result<Vec<T>> {
    crate::ebpf::read_array(table)
}

/// Frees the measurement rows of `devs`.
fn delete_rows(devs: &[u32]) -> Result<()> {
    if devs.is_empty() {
        return Ok(());
    }
    let Some(mut stats) = stats_table()? else {
        return Ok(());
    };
    for (i, row) in read_slots(&stats)?.iter().enumerate() {
        if row.state != row_state::FREE && devs.contains(&row.key.dev) {
            stats
                .set(i as u32, KernelRow::default(), 0)
                .map_err(|e| Error::bpf(format!("updating {IO_STATS_MAP}"), e))?;
        }
    }
    Ok(())
}

/// The kernel `dev_t` as `major:minor`.
fn dev_name(dev: u32) -> String {
    let (major, minor) = kernel_dev_parts(dev);
    format!("{major}:{minor}")
}

/// The measurement's raw counters for one device at one moment. Two of them give the rates
/// and latencies of the interval between ([`IoStats::between`]).
#[derive(Clone, Debug)]
pub struct Snapshot {
    device: Device,
    /// When it was taken (`CLOCK_BOOTTIME` ns).
    at_ns: u64,
    /// When the device's counts began (`CLOCK_BOOTTIME` ns), if it is watched.
    since_ns: Option<u64>,
    /// Requests of the device that no row holds.
    untracked: u64,
    rows: BTreeMap<(u64, u32), IoCounters>,
}

impl Snapshot {
    /// The counters of `device` (and its partitions) now, by (cgroup, operation).
    pub fn take(device: &Device) -> Result<Snapshot> {
        let devs = device.kernel_devs();
        let mut rows: BTreeMap<(u64, u32), IoCounters> = BTreeMap::new();
        if let Some(stats) = stats_table()? {
            for row in read_slots(&stats)? {
                if row.state == row_state::READY && devs.contains(&row.key.dev) {
                    add(
                        rows.entry((row.key.cgroup, row.key.op)).or_default(),
                        &row.counters,
                    );
                }
            }
        }
        let watch = match watch_table()? {
            Some(t) => read_slots(&t)?,
            None => Vec::new(),
        };
        let since_ns = watch
            .iter()
            .find(|e| e.dev == device.kernel_dev())
            .map(|e| e.since_ns);
        let untracked = watch
            .iter()
            .filter(|e| e.dev != 0 && devs.contains(&e.dev))
            .map(|e| e.untracked)
            .sum();
        Ok(Snapshot {
            device: device.clone(),
            at_ns: boot_ns(),
            since_ns,
            untracked,
            rows,
        })
    }

    /// Whether the device is in the kernel's watch set.
    pub fn watched(&self) -> bool {
        self.since_ns.is_some()
    }
}

fn add(into: &mut IoCounters, c: &IoCounters) {
    into.ops += c.ops;
    into.bytes += c.bytes;
    into.errors += c.errors;
    into.lat_sum_ns += c.lat_sum_ns;
    into.lat_max_ns = into.lat_max_ns.max(c.lat_max_ns);
    for (a, b) in into.hist.iter_mut().zip(c.hist.iter()) {
        *a += b;
    }
}

/// `after - before`; the maximum is the later one if it grew in between, else bounded by the
/// highest latency bucket the interval filled.
fn delta(before: Option<&IoCounters>, after: &IoCounters) -> IoCounters {
    let Some(b) = before else {
        return *after;
    };
    let mut d = IoCounters {
        ops: after.ops.saturating_sub(b.ops),
        bytes: after.bytes.saturating_sub(b.bytes),
        errors: after.errors.saturating_sub(b.errors),
        lat_sum_ns: after.lat_sum_ns.saturating_sub(b.lat_sum_ns),
        lat_max_ns: 0,
        hist: [0; LAT_BUCKETS],
    };
    for (i, h) in d.hist.iter_mut().enumerate() {
        *h = after.hist[i].saturating_sub(b.hist[i]);
    }
    d.lat_max_ns = if after.lat_max_ns > b.lat_max_ns {
        after.lat_max_ns
    } else {
        match d.hist.iter().rposition(|&n| n > 0) {
            Some(top) if top + 1 < LAT_BUCKETS => bucket_floor_ns(top + 1).min(after.lat_max_ns),
            Some(_) => after.lat_max_ns,
            None => 0,
        }
    };
    d
}

/// Block I/O of one device over an interval: totals, by operation, by cgroup, and by both.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct IoStats {
    /// The device.
    pub device: Device,
    /// Length of the interval, ms.
    pub interval_ms: u64,
    /// Every request of the interval.
    pub total: IoRow,
    /// By operation (`read`, `write`, `flush`, `discard`, `other`).
    pub by_op: Vec<IoRow>,
    /// By cgroup.
    pub by_cgroup: Vec<IoRow>,
    /// By cgroup and operation.
    pub rows: Vec<IoRow>,
    /// Requests of the interval counted in none of the rows (no free in-flight slot near
    /// theirs, or no free row slot: practically never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub untracked: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Requests completed in an interval, and their latency (see the module documentation: from the
/// block layer's start time of each, or its issue, to its completion).
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct IoRow {
    /// The operation, for rows by operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The cgroup id (the directory's inode; 0: unknown), for rows by cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// The cgroup's path in its hierarchy (`/` the root), when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Requests completed.
    pub ops: u64,
    /// Bytes they carried.
    pub bytes: u64,
    /// Requests that completed with an error.
    pub errors: u64,
    /// Requests per second.
    pub iops: f64,
    /// Bytes per second.
    pub bytes_per_s: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Median latency, µs (from the histogram: within a quarter of a power of two).
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Longest latency, µs.
    pub max_us: f64,
    /// The latency histogram: requests per bucket, the buckets' upper bounds given by
    /// [`bucket_bounds_us`] (not in `chaos iostat --json`).
    #[serde(skip)]
    pub hist: Vec<u64>,
}

/// The upper bound, µs, of each bucket of [`IoRow::hist`] (the last one has none: `u64::MAX`).
pub fn bucket_bounds_us() -> Vec<u64> {
    (0..LAT_BUCKETS)
        .map(|b| {
            if b + 1 < LAT_BUCKETS {
                bucket_floor_ns(b + 1) / 1000
            } else {
                u64::MAX
            }
        })
        .collect()
}

impl IoRow {
    fn new(c: &IoCounters, seconds: f64) -> IoRow {
        let per_s = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let us = |ns: u64| ns as f64 / 1000.0;
        IoRow {
            op: None,
            cgroup_id: None,
            cgroup: None,
            ops: c.ops,
            bytes: c.bytes,
            errors: c.errors,
            iops: per_s(c.ops),
            bytes_per_s: per_s(c.bytes),
            mean_us: if c.ops > 0 {
                us(c.lat_sum_ns) / c.ops as f64
            } else {
                0.0
            },
            p50_us: us(percentile(c, 0.50)),
            p90_us: us(percentile(c, 0.90)),
            p99_us: us(percentile(c, 0.99)),
            max_us: us(c.lat_max_ns),
            hist: c.hist.to_vec(),
        }
    }
}

/// The `q` quantile of the histogram (ns), interpolated within its bucket, at most the maximum.
fn percentile(c: &IoCounters, q: f64) -> u64 {
    let total: u64 = c.hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut below = 0u64;
    for (b, &n) in c.hist.iter().enumerate() {
        if n > 0 && below + n >= rank {
            let lo = bucket_floor_ns(b);
            let hi = if b + 1 < LAT_BUCKETS {
                bucket_floor_ns(b + 1)
            } else {
                c.lat_max_ns.max(lo)
            };
            let within = (rank - below) as f64 / n as f64;
            let v = lo + ((hi - lo) as f64 * within) as u64;
            return if c.lat_max_ns > 0 {
                v.min(c.lat_max_ns)
            } else {
                v
            };
        }
        below += n;
    }
    c.lat_max_ns
}

/// The name of a counted operation.
pub fn op_name(op: u32) -> &'static str {
    match op {
        op::READ => "read",
        op::WRITE => "write",
        op::FLUSH => "flush",
        op::DISCARD => "discard",
        _ => "other",
    }
}

impl IoStats {
    /// What happened between `before` (`None`: since the device's counts began) and `after`,
    /// with cgroup ids named through `names`.
    pub fn between(
        before: Option<&Snapshot>,
        after: &Snapshot,
        names: &mut CgroupNames,
    ) -> IoStats {
        let start = before
            .map(|b| b.at_ns)
            .or(after.since_ns)
            .unwrap_or(after.at_ns);
        let seconds = after.at_ns.saturating_sub(start) as f64 / 1e9;
        let rows: BTreeMap<(u64, u32), IoCounters> = after
            .rows
            .iter()
            .map(|(k, a)| (*k, delta(before.and_then(|b| b.rows.get(k)), a)))
            .filter(|(_, d)| d.ops > 0)
            .collect();
        let mut total = IoCounters::default();
        let mut by_op: BTreeMap<u32, IoCounters> = BTreeMap::new();
        let mut by_cgroup: BTreeMap<u64, IoCounters> = BTreeMap::new();
        for (&(cgroup, op), c) in &rows {
            add(&mut total, c);
            add(by_op.entry(op).or_default(), c);
            add(by_cgroup.entry(cgroup).or_default(), c);
        }
        names.learn(by_cgroup.keys().copied());
        let cgroup_row = |id: u64, c: &IoCounters, names: &CgroupNames| IoRow {
            cgroup_id: Some(id),
            cgroup: names.get(id),
            ..IoRow::new(c, seconds)
        };
        IoStats {
            device: after.device.clone(),
            interval_ms: (seconds * 1000.0).round() as u64,
            total: IoRow::new(&total, seconds),
            by_op: by_op
                .iter()
                .map(|(&op, c)| IoRow {
                    op: Some(op_name(op).into()),
                    ..IoRow::new(c, seconds)
                })
                .collect(),
            by_cgroup: by_cgroup
                .iter()
                .map(|(&id, c)| cgroup_row(id, c, names))
                .collect(),
            rows: rows
                .iter()
                .map(|(&(id, op), c)| IoRow {
                    op: Some(op_name(op).into()),
                    ..cgroup_row(id, c, names)
                })
                .collect(),
            untracked: after
                .untracked
                .saturating_sub(before.map_or(0, |b| b.untracked)),
        }
    }
}

/// Everything measured on `device` since its counts began (the first of its current watches).
pub fn read(device: &Device) -> Result<IoStats> {
    let now = Snapshot::take(device)?;
    Ok(IoStats::between(None, &now, &mut CgroupNames::new()))
}

/// What `device` did over the next `interval`.
pub fn sample(device: &Device, interval: Duration) -> Result<IoStats> {
    let before = Snapshot::take(device)?;
    std::thread::sleep(interval);
    let after = Snapshot::take(device)?;
    Ok(IoStats::between(
        Some(&before),
        &after,
        &mut CgroupNames::new(),
    ))
}

/// The measurements of the devices fault `fault` watches, since their counts began.
pub fn fault_stats(store: &Store, fault: &str) -> Result<Vec<IoStats>> {
    let owner = Owner::Fault {
        fault: fault.to_owned(),
    };
    let mut names = CgroupNames::new();
    store
        .watches()?
        .into_iter()
        .filter(|w| w.owner == owner)
        .map(|w| {
            let now = Snapshot::take(&w.device)?;
            Ok(IoStats::between(None, &now, &mut names))
        })
        .collect()
}

/// cgroup ids of the io controller's hierarchy (cgroup v1 blkio when mounted, else cgroup v2)
/// -> paths, found by walking the hierarchy (the id is the directory's inode number).
#[derive(Clone, Debug, Default)]
pub struct CgroupNames {
    root: Option<PathBuf>,
    known: HashMap<u64, String>,
}

/// Directories a walk of the cgroup hierarchy looks at, at most.
const MAX_CGROUP_WALK: usize = 100_000;

impl CgroupNames {
    /// For this machine's io controller hierarchy.
    pub fn new() -> CgroupNames {
        let root = CgroupMounts::read()
            .ok()
            .and_then(|m| m.v1.get("blkio").cloned().or(m.v2));
        CgroupNames {
            root,
            known: HashMap::new(),
        }
    }

    /// For the hierarchy mounted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> CgroupNames {
        CgroupNames {
            root: Some(root.into()),
            known: HashMap::new(),
        }
    }

    /// Makes sure `ids` are named where they can be: walks the hierarchy again if any is new.
    pub fn learn(&mut self, ids: impl IntoIterator<Item = u64>) {
        let unknown = ids
            .into_iter()
            .any(|id| id != 0 && !self.known.contains_key(&id));
        if unknown && let Some(root) = self.root.clone() {
            self.known.clear();
            let mut seen = 0;
            walk(&root, &root, &mut self.known, &mut seen);
        }
    }

    /// The path of cgroup `id` relative to the hierarchy's root (`/` the root itself).
    pub fn get(&self, id: u64) -> Option<String> {
        self.known.get(&id).cloned()
    }
}

fn walk(root: &Path, dir: &Path, known: &mut HashMap<u64, String>, seen: &mut usize) {
    *seen += 1;
    if *seen > MAX_CGROUP_WALK {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    known.insert(meta.ino(), format!("/{}", rel.display()));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &entry.path(), known, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaos_common::block::latency_bucket;

    fn counters(latencies_ns: &[u64]) -> IoCounters {
        let mut c = IoCounters::default();
        for &l in latencies_ns {
            c.ops += 1;
            c.bytes += 4096;
            c.lat_sum_ns += l;
            c.lat_max_ns = c.lat_max_ns.max(l);
            c.hist[latency_bucket(l)] += 1;
        }
        c
    }

    #[test]
    fn percentiles_follow_the_histogram() {
        // 90 requests at 100 µs, 9 at 1 ms, 1 at 10 ms.
        let mut l = vec![100_000u64; 90];
        l.extend([1_000_000; 9]);
        l.push(10_000_000);
        let c = counters(&l);
        let within = |v: u64, want: u64| (v as f64 / want as f64 - 1.0).abs() <= 0.34;
        assert!(
            within(percentile(&c, 0.5), 100_000),
            "{}",
            percentile(&c, 0.5)
        );
        assert!(
            within(percentile(&c, 0.9), 100_000),
            "{}",
            percentile(&c, 0.9)
        );
        assert!(
            within(percentile(&c, 0.99), 1_000_000),
            "{}",
            percentile(&c, 0.99)
        );
        assert_eq!(percentile(&c, 1.0), 10_000_000);
        assert_eq!(percentile(&IoCounters::default(), 0.5), 0);
        let row = IoRow::new(&c, 2.0);
        assert_eq!(row.iops, 50.0);
        assert_eq!(row.bytes_per_s, 100.0 * 4096.0 / 2.0);
        assert!((row.mean_us - (90.0 * 100.0 + 9.0 * 1000.0 + 10_000.0) / 100.0).abs() < 1e-6);
        assert_eq!(row.max_us, 10_000.0);
    }

    #[test]
    fn deltas_bound_the_maximum() {
        let before = counters(&[5_000_000, 100_000]);
        let mut after = before;
        add(&mut after, &counters(&[200_000, 210_000]));
        let d = delta(Some(&before), &after);
        assert_eq!((d.ops, d.bytes), (2, 8192));
        // The old maximum (5 ms) is not this interval's: its top bucket bounds it.
        assert!(
            d.lat_max_ns >= 210_000 && d.lat_max_ns < 300_000,
            "{}",
            d.lat_max_ns
        );
        add(&mut after, &counters(&[9_000_000]));
        assert_eq!(delta(Some(&before), &after).lat_max_ns, 9_000_000);
    }

    #[test]
    fn process_owners() {
        let me = Owner::this_process().unwrap();
        assert!(me.alive(&BTreeSet::new()));
        let Owner::Process { start, .. } = me else {
            unreachable!()
        };
        let other = Owner::Process {
            pid: std::process::id(),
            start: start + 1,
        };
        assert!(!other.alive(&BTreeSet::new()));
        let fault = Owner::Fault {
            fault: "f-1".into(),
        };
        assert!(fault.alive(&["f-1".to_owned()].into()));
        assert!(!fault.alive(&BTreeSet::new()));
    }

    #[test]
    fn devices_resolve() {
        let err = Device::resolve("/no/such/device").unwrap_err().to_string();
        assert!(err.starts_with("invalid device: /no/such/device"), "{err}");
        // /proc is not on a block device.
        let err = Device::resolve("/proc").unwrap_err().to_string();
        assert!(err.contains("not a block device"), "{err}");
        if let Ok(d) = Device::resolve("/dev/loop0") {
            assert_eq!((d.major, d.minor, d.name.as_str()), (7, 0, "loop0"));
            assert_eq!(Device::resolve("7:0").unwrap(), d);
        }
    }

    #[test]
    fn cgroup_names_walk_the_hierarchy() {
        let dir = std::env::temp_dir().join(format!("chaos-cgnames-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let mut names = CgroupNames::at(&dir);
        names.learn([ino(&dir.join("a/b"))]);
        assert_eq!(names.get(ino(&dir.join("a/b"))).as_deref(), Some("/a/b"));
        assert_eq!(names.get(ino(&dir)).as_deref(), Some("/"));
        assert_eq!(names.get(0), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
