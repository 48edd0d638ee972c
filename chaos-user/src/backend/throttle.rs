//! `io slow` / `io hang`: limits in the target cgroup's v2 `io.max` or v1
//! `blkio.throttle.*_device` files, the limits that were there before kept and restored exactly;
//! a `--pid` that shares its cgroup is moved into a cgroup made for the fault and back.
//!
//! Two steps, so that a crash at any point can be undone: [`prepare`] reads what is there and
//! decides what will change (stored with the fault record before anything is touched),
//! [`apply`] changes it, and [`disarm`] undoes whatever part of it was done.
//!
//! A limit that was there before is never loosened: where the fault asks for a key (say
//! `wbps`) that already had a lower limit, the lower one stays. Keys the fault does not ask for
//! are left alone. Limits are written with cgroups-rs; what it cannot say is written to the
//! cgroup file directly (see `write_limit` and `read_limits`).
//!
//! Throttles of one cgroup and device compose: each key gets the tightest of the armed faults'
//! limits and of the limit that was there before chaos (so a hang, whose limits are the lowest
//! the kernel takes, wins over a slow one while it is armed). Every such fault records the
//! limits that were there before the first of them (read from the cgroup by the first, copied
//! from it by the others), so recovering one writes the tightest of the remaining faults', and
//! recovering the last, in any order and after any crash, writes back exactly what was there.
//! A second fault on a `--pid` that the first moved into a cgroup made for it shares that
//! cgroup; the last of them moves the process back and removes it.
//!
//! On cgroup v2 the limited cgroup's parent must offer `io` to its children
//! (`cgroup.subtree_control`); it is enabled for the fault where the kernel allows it (the
//! parent is the root, or has no processes of its own) and disabled again on recovery unless
//! another cgroup there has limits by then.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use cgroups_rs::blkio::BlkIoController;
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, IoContext as _, Result},
    plan::{BlockDevice, IoLimits, ThrottleTarget},
    store::{BlockArmed, FaultRecord},
};

/// Prefix of the cgroup made for a `--pid` that shares its cgroup (`chaos-io-<fault id>`).
pub const CHILD_PREFIX: &str = "chaos-io-";

/// How long recovery waits for the cgroup made for a fault to empty (a process leaving it, or
/// exiting, is released asynchronously) before giving up on removing it.
const RMDIR_PATIENCE: Duration = Duration::from_secs(3);

/// A process moved into a cgroup made for the fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The process.
    pub pid: u32,
    /// The cgroup it was in, and goes back to (the made cgroup's parent).
    pub from: PathBuf,
}

/// What a throttle changes and what it found there, to undo it exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleArmed {
    /// The device, `MAJ:MIN`.
    pub device: String,
    /// Its major number.
    pub major: u32,
    /// Its minor number.
    pub minor: u32,
    /// cgroup v2 (`io.max`) rather than v1 (`blkio.throttle.*`).
    pub v2: bool,
    /// The cgroup the limits are written to: the target's, or the one made for a moved process.
    pub cgroup: PathBuf,
    /// This fault's limits (`None`: that key is not touched), already kept at the lower limit
    /// that was there before; what is written is the tightest of these and those of the other
    /// faults throttling the same cgroup and device.
    pub limits: IoLimits,
    /// What the cgroup had for the device before chaos throttled it, for each key (`None`: no
    /// limit); the same in every fault throttling that cgroup and device.
    pub before: IoLimits,
    /// The process moved into `cgroup`, made for the fault and removed on recovery (by the last
    /// fault using it, when another joined it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<Moved>,
    /// `cgroup` was made by another fault for the same process, which this one shares: nothing
    /// to make or move when applying.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
    /// v2: the cgroup whose `cgroup.subtree_control` gets `io` for the fault (it had not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_io: Option<PathBuf>,
}

/// One limit of a device: a v1 file, a v2 `io.max` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    ReadBps,
    WriteBps,
    ReadIops,
    WriteIops,
}

impl Key {
    const ALL: [Key; 4] = [Key::ReadBps, Key::WriteBps, Key::ReadIops, Key::WriteIops];

    fn v1_file(self) -> &'static str {
        match self {
            Key::ReadBps => "blkio.throttle.read_bps_device",
            Key::WriteBps => "blkio.throttle.write_bps_device",
            Key::ReadIops => "blkio.throttle.read_iops_device",
            Key::WriteIops => "blkio.throttle.write_iops_device",
        }
    }

    fn v2_name(self) -> &'static str {
        match self {
            Key::ReadBps => "rbps",
            Key::WriteBps => "wbps",
            Key::ReadIops => "riops",
            Key::WriteIops => "wiops",
        }
    }

    fn get(self, l: &IoLimits) -> Option<u64> {
        match self {
            Key::ReadBps => l.read_bps,
            Key::WriteBps => l.write_bps,
            Key::ReadIops => l.read_iops,
            Key::WriteIops => l.write_iops,
        }
    }

    fn set(self, l: &mut IoLimits, v: Option<u64>) {
        match self {
            Key::ReadBps => l.read_bps = v,
            Key::WriteBps => l.write_bps = v,
            Key::ReadIops => l.read_iops = v,
            Key::WriteIops => l.write_iops = v,
        }
    }
}

/// The limits to write: each asked key, kept at the lower limit already there.
fn effective(asked: &IoLimits, before: &IoLimits) -> IoLimits {
    let mut out = IoLimits::default();
    for k in Key::ALL {
        if let Some(a) = k.get(asked) {
            k.set(&mut out, Some(k.get(before).map_or(a, |b| b.min(a))));
        }
    }
    out
}

impl ThrottleArmed {
    /// Whether `other` throttles the same cgroup and device.
    fn shares(&self, other: &ThrottleArmed) -> bool {
        other.cgroup == self.cgroup && other.device == self.device
    }
}

/// What key `k` of `a`'s cgroup and device must hold given the faults `others` (those throttling
/// the same cgroup and device count): the tightest of theirs and of what was there before chaos.
fn combined(a: &ThrottleArmed, k: Key, others: &[&ThrottleArmed]) -> Option<u64> {
    others
        .iter()
        .filter(|t| a.shares(t))
        .filter_map(|t| k.get(&t.limits))
        .chain(k.get(&a.before))
        .min()
}

/// Whitespace-separated words of a cgroup file; empty if it cannot be read.
fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Parses a v2 `io.max` line's keys (`rbps=1 wbps=max ...`) into limits.
fn parse_io_max(path: &Path, dev: &str, fields: &[&str]) -> Result<IoLimits> {
    let mut out = IoLimits::default();
    for f in fields {
        let (name, value) = f.split_once('=').unwrap_or((f, ""));
        let key = Key::ALL.into_iter().find(|k| k.v2_name() == name);
        let value = match value {
            "max" => Ok(None),
            v => v.parse::<u64>().map(Some),
        };
        match (key, value) {
            (Some(k), Ok(v)) => k.set(&mut out, v),
            _ => {
                return Err(Error::Unsupported {
                    what: "keep the limits already set".into(),
                    why: format!(
                        "{} has {f:?} for {dev}, which chaos cannot restore exactly",
                        path.display()
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// The limits `cgroup` has for device `dev` (`MAJ:MIN`). Read from the files directly:
/// cgroups-rs parses them into `i16` device numbers (minors reach 2^20) and drops v2's `max`.
/// A v2 cgroup whose parent does not offer `io` has no `io.max`, hence no limits.
fn read_limits(cgroup: &Path, v2: bool, dev: &str) -> Result<IoLimits> {
    let line_of = |file: &str| -> Result<Option<Vec<String>>> {
        let path = cgroup.join(file);
        let text = match std::fs::read_to_string(&path) {
            Err(e) if v2 && e.kind() == io::ErrorKind::NotFound => String::new(),
            r => r.ctx(|| format!("read {}", path.display()))?,
        };
        Ok(text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(dev)).then(|| w.map(str::to_owned).collect())
        }))
    };
    if v2 {
        let Some(fields) = line_of("io.max")? else {
            return Ok(IoLimits::default());
        };
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        return parse_io_max(&cgroup.join("io.max"), dev, &fields);
    }
    let mut out = IoLimits::default();
    for k in Key::ALL {
        let value = match line_of(k.v1_file())?.as_deref() {
            None => None,
            Some([v]) => Some(v.parse::<u64>().map_err(|_| Error::Unsupported {
                what: "keep the limits already set".into(),
                why: format!("{} has {v:?} for {dev}", cgroup.join(k.v1_file()).display()),
            })?),
            Some(other) => {
                return Err(Error::Unsupported {
                    what: "keep the limits already set".into(),
                    why: format!(
                        "{} has {other:?} for {dev}",
                        cgroup.join(k.v1_file()).display()
                    ),
                });
            }
        };
        k.set(&mut out, value);
    }
    Ok(out)
}

/// The `io::Error` under a cgroups-rs error (it keeps the kernel's errno there).
fn cgroups_io_error(e: cgroups_rs::error::Error) -> io::Error {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
        .map(io::Error::from_raw_os_error)
        .unwrap_or_else(|| io::Error::other(e.to_string()))
}

/// Sets one limit of `a.cgroup` for the device; `None` lifts it. Numbers go through cgroups-rs;
/// lifting a v2 limit means writing `max`, which its numeric setters cannot say, so that one is
/// written to `io.max` directly (v1 lifts a limit with 0, which cgroups-rs can write).
fn write_limit(a: &ThrottleArmed, key: Key, value: Option<u64>) -> io::Result<()> {
    if a.v2 && value.is_none() {
        let line = format!("{} {}=max", a.device, key.v2_name());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(a.cgroup.join("io.max"))?;
        return io::Write::write_all(&mut file, line.as_bytes());
    }
    let ctl = BlkIoController::new(a.cgroup.clone(), a.v2);
    let (major, minor, v) = (u64::from(a.major), u64::from(a.minor), value.unwrap_or(0));
    match key {
        Key::ReadBps => ctl.throttle_read_bps_for_device(major, minor, v),
        Key::WriteBps => ctl.throttle_write_bps_for_device(major, minor, v),
        Key::ReadIops => ctl.throttle_read_iops_for_device(major, minor, v),
        Key::WriteIops => ctl.throttle_write_iops_for_device(major, minor, v),
    }
    .map_err(cgroups_io_error)
}

fn describe(key: Key, a: &ThrottleArmed, value: Option<u64>) -> String {
    let file = if a.v2 { "io.max" } else { key.v1_file() };
    let value = value.map_or("no limit".to_owned(), |v| v.to_string());
    format!(
        "set {} {} to {value} in {}",
        a.device,
        key.v2_name(),
        a.cgroup.join(file).display()
    )
}

/// v2: whether `parent` must be given `io` in its `cgroup.subtree_control` for its children to
/// have `io.max`, and whether it can: `Some(parent)` to enable, or an error saying why not.
fn io_for_children(parent: &Path, field: &'static str) -> Result<Option<PathBuf>> {
    if words(&parent.join("cgroup.subtree_control")).contains(&"io".to_owned()) {
        return Ok(None);
    }
    if !words(&parent.join("cgroup.controllers")).contains(&"io".to_owned()) {
        return Err(Error::Unsupported {
            what: "limit I/O there".into(),
            why: format!(
                "cgroup {} is not given the io controller (add +io to its parent's \
                 cgroup.subtree_control)",
                parent.display()
            ),
        });
    }
    // The root (the only cgroup without cgroup.type) may have processes and controllers for its
    // children; any other cgroup with processes cannot enable a controller for its children.
    let root = !parent.join("cgroup.type").exists();
    if !root && !words(&parent.join("cgroup.procs")).is_empty() {
        return Err(Error::invalid(
            field,
            format!(
                "cgroup {} has processes of its own, so cgroup v2 cannot enable io for the \
                 cgroups below it",
                parent.display()
            ),
            "move those processes into a child cgroup, or run the target in a cgroup whose \
             parent has io in cgroup.subtree_control",
        ));
    }
    Ok(Some(parent.to_owned()))
}

/// The throttles among `faults` other than fault `fault_id`'s, with their fault ids.
pub(crate) fn throttles<'a>(
    fault_id: &str,
    faults: &'a [FaultRecord],
) -> Vec<(&'a str, &'a ThrottleArmed)> {
    faults
        .iter()
        .filter(|f| f.id != fault_id)
        .filter_map(|f| match &f.block {
            Some(BlockArmed::Throttle(t)) => Some((f.id.as_str(), t)),
            _ => None,
        })
        .collect()
}

/// The fault that made `cgroup` for process `pid`, if another did: a second fault on that
/// process shares it.
fn made_for<'a>(
    cgroup: &Path,
    pid: Option<u32>,
    others: &[(&str, &'a ThrottleArmed)],
) -> Option<&'a ThrottleArmed> {
    others
        .iter()
        .map(|(_, t)| *t)
        .find(|t| t.cgroup == cgroup && t.moved.as_ref().is_some_and(|m| Some(m.pid) == pid))
}

/// Refuses a throttle of a cgroup inside one another fault made for its own target (it is
/// removed when that fault ends), unless it is that very cgroup, for the same process.
fn check_overlap(
    field: &'static str,
    cgroup: &Path,
    others: &[(&str, &ThrottleArmed)],
) -> Result<()> {
    for (id, t) in others {
        if t.moved.is_some() && cgroup.starts_with(&t.cgroup) {
            return Err(Error::invalid(
                field,
                format!(
                    "cgroup {} is in the cgroup fault {id} made for its target, removed when it \
                     ends",
                    cgroup.display(),
                ),
                format!(
                    "recover it first (chaos recover {id}), or aim at the same process \
                     (--pid), whose throttles compose"
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the state the fault will change and decides how; touches nothing. `faults`: the
/// faults already armed (a throttle of the same cgroup and device composes with this one).
pub fn prepare(
    fault_id: &str,
    device: &BlockDevice,
    limits: &IoLimits,
    target: &ThrottleTarget,
    faults: &[FaultRecord],
) -> Result<ThrottleArmed> {
    let field = if target.pid.is_some() {
        "pid"
    } else {
        "cgroup"
    };
    let v2 = target.cgroup.v2;
    let dev = device.dev();
    if !target.cgroup.path.is_dir() {
        return Err(Error::invalid(
            field,
            format!("cgroup {} is gone", target.cgroup.path.display()),
            "give a cgroup that exists",
        ));
    }
    let others = throttles(fault_id, faults);
    // The process is in the cgroup another fault made for it (with any children it made since):
    // this fault shares that cgroup.
    if let Some(owner) = made_for(&target.cgroup.path, target.pid, &others) {
        let before = shared_before(owner, &dev, &others);
        return Ok(ThrottleArmed {
            device: dev.clone(),
            major: device.major,
            minor: device.minor,
            v2,
            limits: effective(limits, &before),
            before,
            cgroup: owner.cgroup.clone(),
            moved: owner.moved.clone(),
            joined: true,
            enable_io: owner.enable_io.clone(),
        });
    }
    let moved = match (target.shared, target.pid) {
        (true, Some(pid)) => Some(Moved {
            pid,
            from: target.cgroup.path.clone(),
        }),
        _ => None,
    };
    let cgroup = match &moved {
        Some(_) => target.cgroup.path.join(format!("{CHILD_PREFIX}{fault_id}")),
        None => target.cgroup.path.clone(),
    };
    if moved.is_some() && cgroup.exists() {
        return Err(Error::invalid(
            field,
            format!("cgroup {} exists already", cgroup.display()),
            "remove it (it is named after this fault, so a crash left it), or try again",
        ));
    }
    check_overlap(field, &cgroup, &others)?;
    let enable_io = match (v2, cgroup.parent()) {
        (true, Some(parent)) => io_for_children(parent, field)?,
        _ => None,
    };
    if v2 && moved.is_none() && enable_io.is_none() && !cgroup.join("io.max").exists() {
        return Err(Error::invalid(
            field,
            format!("cgroup {} has no io.max", cgroup.display()),
            "give a cgroup below the root (the root of cgroup v2 takes no limits)",
        ));
    }
    // What was there before chaos: the cgroup holds another fault's limits now, if one
    // throttles it, and that fault knows what it found.
    let before = match others
        .iter()
        .find(|(_, t)| t.cgroup == cgroup && t.device == dev)
    {
        Some((_, t)) => t.before,
        None if moved.is_some() => IoLimits::default(),
        None => read_limits(&cgroup, v2, &dev)?,
    };
    Ok(ThrottleArmed {
        device: dev,
        major: device.major,
        minor: device.minor,
        v2,
        limits: effective(limits, &before),
        before,
        cgroup,
        moved,
        joined: false,
        enable_io,
    })
}

/// What `owner`'s cgroup had for `dev` before chaos: the limits another throttle of that device
/// there found, or none (the cgroup was made by chaos, with no limits).
fn shared_before(owner: &ThrottleArmed, dev: &str, others: &[(&str, &ThrottleArmed)]) -> IoLimits {
    others
        .iter()
        .find(|(_, t)| t.cgroup == owner.cgroup && t.device == dev)
        .map_or(IoLimits::default(), |(_, t)| t.before)
}

/// Applies a prepared throttle: all of it, or (on error) none of it. `others`: the other
/// throttles armed (those of the same cgroup and device compose with it).
pub fn apply(armed: &ThrottleArmed, others: &[&ThrottleArmed]) -> Result<()> {
    let done = apply_all(armed, others);
    if done.is_err() {
        // Undoes whatever part was made; the error that stopped us is the one worth reporting.
        let _ = disarm(armed, others);
    }
    done
}

fn apply_all(a: &ThrottleArmed, others: &[&ThrottleArmed]) -> Result<()> {
    if let Some(parent) = &a.enable_io {
        let file = parent.join("cgroup.subtree_control");
        if !words(&file).contains(&"io".to_owned()) {
            std::fs::write(&file, "+io").ctx(|| format!("write +io to {}", file.display()))?;
        }
    }
    let make = a.moved.is_some() && !a.joined;
    if make {
        std::fs::create_dir(&a.cgroup).ctx(|| format!("make cgroup {}", a.cgroup.display()))?;
    }
    // Limits first, then the process: it never runs in the new cgroup unthrottled.
    for k in Key::ALL {
        if let Some(mine) = k.get(&a.limits) {
            let v = combined(a, k, others).map_or(mine, |o| o.min(mine));
            write_limit(a, k, Some(v)).ctx(|| describe(k, a, Some(v)))?;
        }
    }
    if let Some(m) = a.moved.as_ref().filter(|_| make) {
        let procs = a.cgroup.join("cgroup.procs");
        std::fs::write(&procs, m.pid.to_string()).map_err(|e| {
            if e.raw_os_error() == Some(libc::ESRCH) {
                Error::invalid(
                    "pid",
                    format!("process {} has exited", m.pid),
                    "give a running process",
                )
            } else {
                Error::io(
                    format!("move process {} into {}", m.pid, a.cgroup.display()),
                    e,
                )
            }
        })?;
    }
    Ok(())
}

/// Undoes whatever part of `armed` is in place; nothing in place is success. `others`: the
/// other throttles still armed. Limits go back to the tightest of those of the other faults on
/// the same cgroup and device, or to what they were before chaos when none is left (which also
/// releases the I/O they held back); a moved process goes back to its cgroup with any children
/// it made meanwhile and the cgroup made for it is removed, once no other fault uses it; and
/// `io` enabled for the fault is disabled again unless limits remain below it.
pub fn disarm(armed: &ThrottleArmed, others: &[&ThrottleArmed]) -> Result<()> {
    let mut first: Option<Error> = None;
    if armed.cgroup.is_dir() {
        for k in Key::ALL {
            let file = if armed.v2 { "io.max" } else { k.v1_file() };
            // No limit file (v2: the parent does not offer io): no limit to lift.
            if k.get(&armed.limits).is_none() || !armed.cgroup.join(file).exists() {
                continue;
            }
            let value = combined(armed, k, others);
            match write_limit(armed, k, value) {
                // The device is gone, and its limits with it.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                Err(e) => {
                    first.get_or_insert(Error::io(describe(k, armed, value), e));
                }
                Ok(()) => {}
            }
        }
    }
    let in_use = others.iter().any(|t| t.cgroup == armed.cgroup);
    if let Some(m) = &armed.moved
        && !in_use
        && let Err(e) = remove_made(&armed.cgroup, &m.from)
    {
        first.get_or_insert(e);
    }
    if let Some(parent) = &armed.enable_io {
        release_io(parent);
    }
    first.map_or(Ok(()), Err)
}

/// Moves every process of `made` back to `from` and removes `made`, waiting a little for it to
/// empty.
fn remove_made(made: &Path, from: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        if !made.exists() {
            return Ok(());
        }
        for pid in words(&made.join("cgroup.procs")) {
            // A process that exited meanwhile cannot be moved: nothing to do for it.
            let _ = std::fs::write(from.join("cgroup.procs"), &pid);
        }
        match std::fs::remove_dir(made) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if start.elapsed() >= RMDIR_PATIENCE => {
                return Err(Error::io(
                    format!(
                        "remove cgroup {} (made for the fault; processes in it: {:?})",
                        made.display(),
                        words(&made.join("cgroup.procs"))
                    ),
                    e,
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Disables `io` for `parent`'s children, unless one of them has limits by now (another
/// fault's, or set by someone since): they live in `io.max`, which would go with it. A failure
/// only warns: the controller left enabled changes nothing until limits are set.
fn release_io(parent: &Path) {
    let file = parent.join("cgroup.subtree_control");
    if !words(&file).contains(&"io".to_owned()) {
        return;
    }
    let limited = std::fs::read_dir(parent)
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("io.max")).is_ok_and(|s| !s.trim().is_empty())
            })
        })
        .unwrap_or(true);
    if limited {
        tracing::info!(
            "io stays enabled in {}: a cgroup there has limits",
            file.display()
        );
        return;
    }
    if let Err(e) = std::fs::write(&file, "-io") {
        tracing::warn!("could not write -io to {}: {e}", file.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(r: Option<u64>, w: Option<u64>, ri: Option<u64>, wi: Option<u64>) -> IoLimits {
        IoLimits {
            read_bps: r,
            write_bps: w,
            read_iops: ri,
            write_iops: wi,
        }
    }

    #[test]
    fn a_lower_limit_already_there_stays() {
        let asked = lim(None, Some(2 << 20), Some(100), None);
        let before = lim(Some(5), Some(1 << 20), Some(1000), Some(7));
        assert_eq!(
            effective(&asked, &before),
            lim(None, Some(1 << 20), Some(100), None)
        );
        assert_eq!(
            effective(&IoLimits::HANG, &before),
            lim(Some(2), Some(2), Some(2), Some(2))
        );
    }

    fn throttle(cgroup: &str, dev: &str, limits: IoLimits, before: IoLimits) -> ThrottleArmed {
        let (major, minor) = dev.split_once(':').unwrap();
        ThrottleArmed {
            device: dev.into(),
            major: major.parse().unwrap(),
            minor: minor.parse().unwrap(),
            v2: false,
            cgroup: cgroup.into(),
            limits,
            before,
            moved: None,
            joined: false,
            enable_io: None,
        }
    }

    fn record(id: &str, t: ThrottleArmed) -> FaultRecord {
        FaultRecord {
            id: id.into(),
            spec: crate::spec::FaultSpec::Io(crate::spec::IoSpec::default()),
            strategy: crate::strategy::Strategy::Io(crate::strategy::IoStrategy::CgroupBlkio),
            state: crate::store::FaultState::Armed,
            created_unix_ms: 0,
            deadline_unix_ms: 0,
            deadline_boot_ns: 0,
            net: None,
            syscall: None,
            block: Some(BlockArmed::Throttle(t)),
            owner: None,
            recovered_unix_ms: None,
            recovered_by: None,
            final_counters: None,
        }
    }

    /// Each key holds the tightest of the armed faults' limits and of the one there before
    /// chaos; without those faults, what was there before, whatever the order they go in.
    #[test]
    fn throttles_of_one_cgroup_and_device_compose_to_the_tightest() {
        let before = lim(None, Some(8 << 20), None, None);
        let slow = throttle(
            "/cg/db",
            "7:3",
            lim(Some(1 << 20), Some(2 << 20), None, None),
            before,
        );
        let slower = throttle(
            "/cg/db",
            "7:3",
            lim(None, Some(1 << 20), None, Some(50)),
            before,
        );
        let hang = throttle("/cg/db", "7:3", IoLimits::HANG, before);
        let elsewhere = throttle(
            "/cg/app",
            "7:3",
            lim(Some(1), Some(1), Some(1), Some(1)),
            before,
        );
        let other_dev = throttle(
            "/cg/db",
            "8:0",
            lim(Some(1), Some(1), Some(1), Some(1)),
            before,
        );
        let all = |a: &ThrottleArmed, others: &[&ThrottleArmed]| {
            Key::ALL.map(|k| {
                let mine = k.get(&a.limits);
                let o = combined(a, k, others);
                mine.map_or(o, |m| Some(o.map_or(m, |o| o.min(m))))
            })
        };
        // Armed together: the tightest of each key.
        assert_eq!(
            all(&slow, &[&slower, &elsewhere, &other_dev]),
            [Some(1 << 20), Some(1 << 20), None, Some(50)]
        );
        // A hang wins over both while armed.
        assert_eq!(all(&hang, &[&slow, &slower]), [Some(2); 4]);
        // Recovering the hang writes back the tightest of the remaining slow faults.
        let after =
            |a: &ThrottleArmed, others: &[&ThrottleArmed]| Key::ALL.map(|k| combined(a, k, others));
        assert_eq!(
            after(&hang, &[&slow, &slower, &elsewhere]),
            [Some(1 << 20), Some(1 << 20), None, Some(50)]
        );
        // Recovering `slower` leaves `slow`'s own limits; keys only `slower` asked for go back
        // to what was there (the write limit stays at `slow`'s, below the one before).
        assert_eq!(
            after(&slower, &[&slow]),
            [Some(1 << 20), Some(2 << 20), None, None]
        );
        // The last one: exactly what was there before chaos.
        assert_eq!(
            after(&slow, &[&elsewhere, &other_dev]),
            [None, Some(8 << 20), None, None]
        );
    }

    #[test]
    fn a_second_throttle_keeps_what_the_first_found() {
        let dir = std::env::temp_dir().join(format!("chaos-unit-overlap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for k in Key::ALL {
            std::fs::write(dir.join(k.v1_file()), "").unwrap();
        }
        // The cgroup file holds the first fault's limit now; what it found is in its record.
        std::fs::write(dir.join("blkio.throttle.write_bps_device"), "7:3 1024\n").unwrap();
        let found = lim(None, Some(8 << 20), None, None);
        let first = throttle(
            dir.to_str().unwrap(),
            "7:3",
            lim(None, Some(1024), None, None),
            found,
        );
        let faults = [record("f-1", first)];
        let target = ThrottleTarget {
            cgroup: crate::plan::IoCgroup {
                path: dir.clone(),
                id: 0,
                v2: false,
                root: false,
            },
            pid: None,
            shared: false,
        };
        let device = BlockDevice {
            major: 7,
            minor: 3,
            name: "loop3".into(),
            disk: None,
        };
        let asked = lim(Some(4096), Some(1 << 20), None, None);
        let second = prepare("f-2", &device, &asked, &target, &faults).unwrap();
        assert_eq!(second.before, found);
        assert_eq!(second.limits, asked);
        assert!(!second.joined && second.moved.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_throttle_of_a_moved_process_shares_its_cgroup() {
        let mut made = throttle(
            "/cg/app/chaos-io-f-2",
            "7:3",
            IoLimits::HANG,
            IoLimits::default(),
        );
        made.moved = Some(Moved {
            pid: 42,
            from: "/cg/app".into(),
        });
        let faults = [
            record(
                "f-1",
                throttle("/cg/db", "7:3", IoLimits::HANG, IoLimits::default()),
            ),
            record("f-2", made),
        ];
        let others = throttles("f-9", &faults);
        let cg = Path::new("/cg/app/chaos-io-f-2");
        assert_eq!(
            made_for(cg, Some(42), &others).map(|t| &t.cgroup),
            Some(&cg.to_owned())
        );
        assert!(made_for(cg, Some(43), &others).is_none());
        // Another process inside the cgroup a fault made (and removes) is refused, naming it.
        let err = check_overlap("cgroup", Path::new("/cg/app/chaos-io-f-2/x"), &others)
            .unwrap_err()
            .to_string();
        assert!(err.contains("f-2"), "{err}");
        // Throttles of the same cgroup as another fault's compose: no refusal.
        check_overlap("cgroup", Path::new("/cg/db"), &others).unwrap();
        check_overlap("cgroup", Path::new("/cg/app"), &others).unwrap();
    }

    #[test]
    fn reads_exact_previous_lines() {
        let dir = std::env::temp_dir().join(format!("chaos-unit-throttle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("io.max"),
            "8:0 rbps=max wbps=1048576 riops=max wiops=max\n7:3 rbps=5 wbps=max riops=9 wiops=max\n",
        )
        .unwrap();
        assert_eq!(
            read_limits(&dir, true, "7:3").unwrap(),
            lim(Some(5), None, Some(9), None)
        );
        assert_eq!(
            read_limits(&dir, true, "7:30").unwrap(),
            IoLimits::default()
        );
        std::fs::write(dir.join("io.max"), "7:3 rbps=5 zbps=2\n").unwrap();
        let err = read_limits(&dir, true, "7:3").unwrap_err().to_string();
        assert!(err.contains("zbps=2"), "{err}");
        for k in Key::ALL {
            std::fs::write(dir.join(k.v1_file()), "7:30 4\n").unwrap();
        }
        std::fs::write(
            dir.join("blkio.throttle.write_bps_device"),
            "7:30 4\n7:3 2097152\n",
        )
        .unwrap();
        assert_eq!(
            read_limits(&dir, false, "7:3").unwrap(),
            lim(None, Some(2097152), None, None)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
