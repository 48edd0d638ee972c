//! Validated plans: a [`FaultSpec`] checked field by field and resolved against the system
//! (durations, rates and errnos parsed; namespaces, interfaces, processes and cgroups looked
//! up; safety guards applied). A plan is what strategies and backends consume; a spec that does
//! not become a plan arms nothing. One fault family per file; what they share is here.

mod disk;
mod io;
mod net;
mod syscall;

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use chaos_common::{PROBABILITY_ONE, percent_to_threshold};
use serde::{Deserialize, Serialize};

pub use self::{disk::*, io::*, net::*, syscall::*};
use crate::{
    error::{Error, Result},
    mounts::CgroupMounts,
    spec::FaultSpec,
};

/// How long a fault lasts when its spec gives no duration: long enough for a drill, short
/// enough that a forgotten fault ends by itself.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10 * 60);

/// The longest fault accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A fault ready to arm.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The spec it came from.
    pub spec: FaultSpec,
    /// How long the fault lasts once armed.
    pub duration: Duration,
    /// What to do, resolved.
    pub fault: PlannedFault,
}

/// The resolved fault.
#[derive(Clone, Debug)]
pub enum PlannedFault {
    /// A network fault.
    Net(NetPlan),
    /// A syscall fault.
    Syscall(SyscallPlan),
    /// A block I/O fault.
    Io(IoPlan),
    /// A disk (filesystem space) fault.
    Disk(DiskPlan),
}

/// A probability with correlation, as thresholds of the kernel's two-state chain.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chance {
    /// Average share, percent.
    pub percent: f64,
    /// Correlation between consecutive decisions, percent.
    pub correlation: f64,
    /// Threshold after a packet the rule let through.
    pub threshold: u64,
    /// Threshold after a packet it acted on.
    pub threshold_after_hit: u64,
}

impl Chance {
    /// `percent` on average; consecutive decisions agree more often by `correlation` percent.
    /// As a Markov chain with P(hit | hit) = p + c(1-p) and P(hit | miss) = p(1-c), the long-run
    /// share stays exactly p and the mean burst length is 1 / ((1-p)(1-c)).
    pub fn new(percent: f64, correlation: f64) -> Chance {
        let p = percent / 100.0;
        let c = correlation / 100.0;
        Chance {
            percent,
            correlation,
            threshold: percent_to_threshold(100.0 * p * (1.0 - c)),
            threshold_after_hit: percent_to_threshold(100.0 * (p + c * (1.0 - p))),
        }
    }

    /// Always.
    pub fn always() -> Chance {
        Chance {
            percent: 100.0,
            correlation: 0.0,
            threshold: PROBABILITY_ONE,
            threshold_after_hit: PROBABILITY_ONE,
        }
    }
}

/// A cgroup v2, resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupTarget {
    /// Its directory.
    pub path: PathBuf,
    /// Its id (the directory's inode), as `bpf_skb_cgroup_id` reports it.
    pub id: u64,
}

/// Parses a duration such as `30s`, `500ms`, `5m` or `1h 30m` for field `field`.
pub fn parse_duration(field: &'static str, text: &str) -> Result<Duration> {
    let d = parse_span(field, text)?;
    if d.is_zero() {
        return Err(Error::invalid(
            field,
            "a fault cannot last 0s",
            "give a positive duration, e.g. 30s",
        ));
    }
    if d > MAX_DURATION {
        return Err(Error::invalid(
            field,
            format!("{text} is longer than the 7-day maximum"),
            "split the drill or give a shorter duration",
        ));
    }
    Ok(d)
}

/// A fault's duration: the spec's `duration`, or [`DEFAULT_DURATION`] when it gives none.
pub fn fault_duration(given: Option<&str>) -> Result<Duration> {
    given.map_or(Ok(DEFAULT_DURATION), |text| {
        parse_duration("duration", text)
    })
}

/// Parses a non-negative time span (`100ms`, `1s 500ms`, `250us`).
fn parse_span(field: &'static str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        Error::invalid(
            field,
            format!("{text:?} is not a duration ({e})"),
            "write it as a number with a unit, e.g. 30s, 500ms, 5m or 1h",
        )
    })
}

/// Parses a size for field `field`: bytes, or with a unit `k`, `m`, `g`, `t` (powers of 1024,
/// any case, optionally followed by `b` or `ib`), e.g. `2mb`, `10G`, `100M`, `4096`.
pub fn parse_size(field: &'static str, text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(
            field,
            format!("{text:?} is not a size"),
            "write bytes or a number with a unit, e.g. 4096, 512k, 2mb, 10G",
        )
    };
    let t = text.trim().to_ascii_lowercase();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 || bytes.fract() != 0.0 && shift == 0 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// Checks a percentage for field `field`.
pub fn check_percent(field: &'static str, percent: f64) -> Result<f64> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(Error::invalid(
            field,
            format!("{percent} is outside 0-100"),
            format!("give a percentage between 0 and 100, e.g. --{field} 30"),
        ));
    }
    Ok(percent)
}

/// Resolves `--cgroup`: a path under the cgroup v2 mount, or an absolute path in it.
fn resolve_cgroup(text: &str, force: bool) -> Result<CgroupTarget> {
    let fix =
        "give a cgroup v2 directory, e.g. system.slice/postgresql.service (see /proc/PID/cgroup)";
    let root = cgroup_v2_root("cgroup", fix)?;
    let path = if Path::new(text).is_absolute() && Path::new(text).starts_with(&root) {
        PathBuf::from(text)
    } else {
        root.join(text.trim_start_matches('/'))
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        Error::invalid("cgroup", format!("no cgroup {} ({e})", path.display()), fix)
    })?;
    if !meta.is_dir() || !path.join("cgroup.procs").exists() {
        return Err(Error::invalid(
            "cgroup",
            format!("{} is not a cgroup v2 directory", path.display()),
            fix,
        ));
    }
    if path == root && !force {
        return Err(Error::invalid(
            "cgroup",
            "the root cgroup holds every process on the host",
            "pick the target's own cgroup, or add --force",
        ));
    }
    Ok(CgroupTarget {
        path,
        id: meta.ino(),
    })
}

fn cgroup_v2_root(field: &'static str, fix: &str) -> Result<PathBuf> {
    CgroupMounts::read()?
        .v2
        .ok_or_else(|| Error::invalid(field, "no cgroup v2 hierarchy is mounted", fix))
}

/// The cgroup v2 that `--pid`'s process is in, where its inbound packets can be judged.
fn process_cgroup(pid: u32, force: bool) -> Result<CgroupTarget> {
    let fix = "add --direction egress, or select its inbound traffic with --dport/--src";
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| {
        Error::invalid(
            "pid",
            format!("cannot read process {pid}'s cgroups ({e})"),
            fix,
        )
    })?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| Error::invalid("pid", format!("process {pid} has no cgroup v2"), fix))?;
    let root = cgroup_v2_root("pid", fix)?;
    let path = root.join(rel.trim().trim_start_matches('/'));
    if path == root && !force {
        return Err(Error::invalid(
            "pid",
            format!(
                "process {pid} is in the root cgroup v2, and its inbound packets can only be \
                 judged by a hook on its cgroup"
            ),
            "run it in a cgroup of its own (e.g. systemd-run --scope), add --direction egress, \
             or add --force to hook the root cgroup",
        ));
    }
    let meta = std::fs::metadata(&path)
        .map_err(|e| Error::invalid("pid", format!("no cgroup {} ({e})", path.display()), fix))?;
    Ok(CgroupTarget {
        path,
        id: meta.ino(),
    })
}

/// The cgroup v2 process `pid` is in, unless it is the root cgroup (or unknown).
pub fn cgroup_of(pid: u32) -> Option<CgroupTarget> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = CgroupMounts::read().ok()?.v2?;
    let path = root.join(rel.trim().trim_start_matches('/'));
    let meta = std::fs::metadata(&path).ok()?;
    (path != root).then(|| CgroupTarget {
        path,
        id: meta.ino(),
    })
}

/// Checks a `--pid` target: a live process, not init nor chaos itself unless `force`.
pub(crate) fn check_pid(pid: u32, force: bool) -> Result<()> {
    if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error::invalid(
            "pid",
            format!("no process {pid}"),
            "give the id of a running process",
        ));
    }
    if !force && (pid == 1 || pid == std::process::id()) {
        return Err(Error::invalid(
            "pid",
            format!(
                "process {pid} is {}",
                if pid == 1 { "init" } else { "chaos itself" }
            ),
            "pick the target process, or add --force",
        ));
    }
    Ok(())
}

/// Validates `spec` into a plan.
pub fn plan(spec: &FaultSpec) -> Result<Plan> {
    match spec {
        FaultSpec::Net(n) => net::plan(spec, n),
        FaultSpec::Syscall(s) => syscall::plan(spec, s),
        FaultSpec::Io(s) => io::plan(spec, s),
        FaultSpec::Disk(s) => disk::plan(spec, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("duration", "30s").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_duration("duration", "1m 30s").unwrap(),
            Duration::from_secs(90)
        );
        for bad in ["", "abc", "10", "0s", "-5s", "8d"] {
            let err = parse_duration("duration", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid duration:"), "{bad}: {err}");
        }
        assert_eq!(fault_duration(None).unwrap(), Duration::from_secs(600));
        assert_eq!(fault_duration(Some("5s")).unwrap(), Duration::from_secs(5));
        assert!(
            fault_duration(Some("")).is_err(),
            "an empty duration is not the default"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("bytes", "4096").unwrap(), 4096);
        assert_eq!(parse_size("bytes", "2mb").unwrap(), 2 << 20);
        assert_eq!(parse_size("bytes", "10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("bytes", "1.5k").unwrap(), 1536);
        assert_eq!(parse_size("bytes", "100MiB").unwrap(), 100 << 20);
        for bad in ["", "mb", "2 parsecs", "-1", "1.5"] {
            let err = parse_size("bytes", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid bytes:"), "{bad}: {err}");
        }
    }

    #[test]
    fn percents() {
        assert!(check_percent("percent", 0.0).is_ok());
        assert!(check_percent("percent", 100.0).is_ok());
        for bad in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
            let err = check_percent("percent", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid percent:"), "{err}");
        }
    }
}
