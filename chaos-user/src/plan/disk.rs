//! Disk fault plans: `disk fill` resolved against the filesystem (its size and free space now,
//! the guards on filesystems the host or chaos needs), or, with `virtual`, turned into the
//! syscall fault that rehearses a full disk without taking space.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::sys::statvfs::statvfs;
use serde::{Deserialize, Serialize};
use syscalls::Sysno;

use super::{
    Chance, Plan, PlannedFault, SyscallPlan, SyscallTarget, check_percent, check_pid,
    fault_duration, parse_size, resolve_cgroup,
};
use crate::{
    error::{Error, Result},
    spec::{DiskSpec, FaultSpec},
};

/// How much a fill leaves or takes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FillAmount {
    /// Fill until the filesystem is this full, as `df` shows it.
    Percent(f64),
    /// Take this many bytes.
    Bytes(u64),
    /// Leave this many bytes available to unprivileged users.
    Free(u64),
}

/// Space on a filesystem, from `statvfs`, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSpace {
    /// Size of the data area.
    pub total: u64,
    /// Used (total - free).
    pub used: u64,
    /// Available to unprivileged users (free minus the reserved blocks).
    pub avail: u64,
    /// Block size.
    pub block: u64,
}

impl FsSpace {
    /// Space of the filesystem holding `path`.
    pub fn of(path: &Path) -> Result<FsSpace> {
        let v = statvfs(path)
            .map_err(|e| Error::io(format!("statvfs {}", path.display()), e.into()))?;
        let block = v.fragment_size();
        Ok(FsSpace {
            total: v.blocks() * block,
            used: (v.blocks() - v.blocks_free()) * block,
            avail: v.blocks_available() * block,
            block,
        })
    }

    /// Usage as `df` shows it: used / (used + available), percent.
    pub fn percent_used(&self) -> f64 {
        let size = self.used + self.avail;
        if size == 0 {
            return 100.0;
        }
        100.0 * self.used as f64 / size as f64
    }

    /// Bytes to take now for `amount`, or why it cannot be done (`field`, problem, fix).
    pub fn to_take(&self, amount: FillAmount) -> std::result::Result<u64, (&'static str, String)> {
        match amount {
            FillAmount::Bytes(b) => {
                if b > self.total {
                    Err((
                        "bytes",
                        format!(
                            "{b} bytes is larger than the filesystem ({} bytes)",
                            self.total
                        ),
                    ))
                } else if b > self.avail {
                    Err((
                        "bytes",
                        format!(
                            "{b} bytes is more than is free ({} bytes available)",
                            self.avail
                        ),
                    ))
                } else {
                    Ok(b)
                }
            }
            FillAmount::Free(f) => {
                if f >= self.avail {
                    Err((
                        "free",
                        format!(
                            "only {} bytes are free already, not more than {f}",
                            self.avail
                        ),
                    ))
                } else {
                    Ok(self.avail - f)
                }
            }
            FillAmount::Percent(p) => {
                let size = (self.used + self.avail) as f64;
                let want = (p / 100.0 * size).ceil() as u64;
                if want <= self.used {
                    Err((
                        "percent",
                        format!("the filesystem is already {:.1}% full", self.percent_used()),
                    ))
                } else {
                    Ok((want - self.used).min(self.avail))
                }
            }
        }
    }
}

/// A real fill, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FillPlan {
    /// The directory the fill files go in.
    pub dir: PathBuf,
    /// How much to leave or take (recomputed when armed).
    pub amount: FillAmount,
    /// Space when planned.
    pub space: FsSpace,
    /// Bytes a fill would take now.
    pub bytes: u64,
}

/// A disk fault, resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum DiskPlan {
    /// Take space for real.
    Fill(FillPlan),
}

/// Calls a virtual fill fails with ENOSPC.
pub const VIRTUAL_FILL_CALLS: &[Sysno] = &[
    Sysno::write,
    Sysno::pwrite64,
    Sysno::writev,
    Sysno::pwritev,
    Sysno::pwritev2,
    Sysno::fallocate,
];

/// Filesystems a fill must not take without `--force`: the root, /boot, and those holding the
/// state directory and the chaos binary.
fn guarded(dir: &Path) -> Option<String> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let state = crate::store::Store::open_default()
        .map(|s| s.dir().to_path_buf())
        .unwrap_or_else(|_| PathBuf::from(crate::store::DEFAULT_STATE_DIR));
    let exe = std::env::current_exe().ok();
    let mut candidates: Vec<(PathBuf, &str)> = vec![
        ("/".into(), "the root filesystem"),
        ("/boot".into(), "/boot"),
        (state, "chaos's state directory"),
    ];
    if let Some(e) = exe {
        candidates.push((e, "the chaos binary"));
    }
    candidates.into_iter().find_map(|(p, what)| {
        // The state directory may not exist yet: it will be made on the filesystem of its
        // nearest existing ancestor.
        let d = p.ancestors().find_map(|a| std::fs::metadata(a).ok())?.dev();
        (d == dev).then(|| format!("{what} ({})", p.display()))
    })
}

/// Why a real fill of the filesystem holding `dir` cannot or should not be made, beyond the
/// guarded filesystems, with the fix: read-only, or held in memory (filling a tmpfs takes the
/// host's RAM; `--force` allows it).
fn unfit(dir: &Path, force: bool) -> Option<(String, &'static str)> {
    use nix::sys::{
        statfs::{FsType, TMPFS_MAGIC, statfs},
        statvfs::FsFlags,
    };
    /// `RAMFS_MAGIC` of `<linux/magic.h>` (nix has no constant for it).
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    if statvfs(dir).is_ok_and(|v| v.flags().contains(FsFlags::ST_RDONLY)) {
        return Some((
            "on a read-only filesystem".into(),
            "fill a writable filesystem, or add --virtual",
        ));
    }
    let kind = statfs(dir).ok()?.filesystem_type();
    (!force && (kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)).then(|| {
        (
            "on a tmpfs: filling it takes the host's memory".into(),
            "fill a disk-backed filesystem, add --virtual, or add --force",
        )
    })
}

fn check_dir(text: &str) -> Result<PathBuf> {
    let path = PathBuf::from(text);
    if text.is_empty() || !path.is_absolute() || !path.is_dir() {
        return Err(Error::invalid(
            "path",
            format!("{text:?} is not an existing absolute directory"),
            "give the directory to fill, e.g. /data/clog",
        ));
    }
    Ok(path)
}

fn amount(s: &DiskSpec) -> Result<FillAmount> {
    let given = [s.percent.is_some(), s.bytes.is_some(), s.free.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        return Err(Error::invalid(
            "percent",
            if given == 0 {
                "no amount"
            } else {
                "more than one amount"
            },
            "give exactly one of --percent 95, --bytes 10G or --free 100M",
        ));
    }
    if let Some(p) = s.percent {
        let p = check_percent("percent", p)?;
        if p == 0.0 {
            return Err(Error::invalid(
                "percent",
                "0% full takes nothing",
                "give how full the filesystem should be, e.g. --percent 95",
            ));
        }
        return Ok(FillAmount::Percent(p));
    }
    if let Some(b) = &s.bytes {
        let n = parse_size("bytes", b)?;
        if n == 0 {
            return Err(Error::invalid(
                "bytes",
                "0 bytes takes nothing",
                "give an amount such as 10G",
            ));
        }
        return Ok(FillAmount::Bytes(n));
    }
    Ok(FillAmount::Free(parse_size(
        "free",
        s.free.as_deref().unwrap_or_default(),
    )?))
}

/// Validates a disk spec into a plan: a real fill, or (`virtual`) a syscall fault.
pub(super) fn plan(spec: &FaultSpec, s: &DiskSpec) -> Result<Plan> {
    let duration = fault_duration(s.duration.as_deref())?;
    let dir = check_dir(&s.path)?;
    if s.virtual_fill {
        for (given, field) in [
            (s.percent.is_some(), "percent"),
            (s.bytes.is_some(), "bytes"),
            (s.free.is_some(), "free"),
        ] {
            if given {
                return Err(Error::invalid(
                    field,
                    "a virtual fill takes no space",
                    format!("drop --{field}: every write under the path fails with ENOSPC"),
                ));
            }
        }
        let target = match (s.pid, &s.cgroup) {
            (Some(pid), None) => {
                check_pid(pid, s.force)?;
                SyscallTarget::Pid {
                    pid,
                    follow_children: false,
                }
            }
            (None, Some(c)) => SyscallTarget::Cgroup(resolve_cgroup(c, s.force)?),
            _ => {
                return Err(Error::invalid(
                    "pid",
                    "a virtual fill needs exactly one target",
                    "give --pid PID or --cgroup PATH: only its writes see a full disk",
                ));
            }
        };
        return Ok(Plan {
            spec: spec.clone(),
            duration,
            fault: PlannedFault::Syscall(SyscallPlan::fail_under(
                VIRTUAL_FILL_CALLS,
                libc::ENOSPC,
                Chance::always(),
                dir,
                target,
            )),
        });
    }
    if s.pid.is_some() || s.cgroup.is_some() {
        return Err(Error::invalid(
            if s.pid.is_some() { "pid" } else { "cgroup" },
            "a real fill takes space from everyone",
            "drop the target, or add --virtual to fail only the target's writes",
        ));
    }
    let amount = amount(s)?;
    if !s.force
        && let Some(what) = guarded(&dir)
    {
        return Err(Error::invalid(
            "path",
            format!(
                "{} is on {what}; filling it can break this host",
                dir.display()
            ),
            "fill a filesystem of the service's own, add --virtual, or add --force",
        ));
    }
    if let Some((why, fix)) = unfit(&dir, s.force) {
        return Err(Error::invalid(
            "path",
            format!("{} is {why}", dir.display()),
            fix,
        ));
    }
    let space = FsSpace::of(&dir)?;
    let bytes = space.to_take(amount).map_err(|(field, problem)| {
        Error::invalid(
            field,
            problem,
            "give an amount that fits, e.g. --free 100M or --percent 95",
        )
    })?;
    Ok(Plan {
        spec: spec.clone(),
        duration,
        fault: PlannedFault::Disk(DiskPlan::Fill(FillPlan {
            dir,
            amount,
            space,
            bytes,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn amounts_to_take() {
        // 10 GiB filesystem, 4 GiB used, 5 GiB available (1 GiB reserved).
        let fs = FsSpace {
            total: 10 * GIB,
            used: 4 * GIB,
            avail: 5 * GIB,
            block: 4096,
        };
        assert_eq!(fs.to_take(FillAmount::Bytes(GIB)), Ok(GIB));
        assert_eq!(fs.to_take(FillAmount::Free(GIB)), Ok(4 * GIB));
        // df's size is used + avail = 9 GiB; 90% of it is 8.1 GiB used.
        let t = fs.to_take(FillAmount::Percent(90.0)).unwrap();
        assert!(
            (t as f64 - (0.9 * 9.0 - 4.0) * GIB as f64).abs() < 2.0,
            "{t}"
        );
        assert_eq!(fs.to_take(FillAmount::Percent(100.0)), Ok(5 * GIB));
        assert_eq!(
            fs.to_take(FillAmount::Bytes(11 * GIB)).unwrap_err().0,
            "bytes"
        );
        assert_eq!(
            fs.to_take(FillAmount::Bytes(6 * GIB)).unwrap_err().0,
            "bytes"
        );
        assert_eq!(fs.to_take(FillAmount::Free(5 * GIB)).unwrap_err().0, "free");
        assert_eq!(
            fs.to_take(FillAmount::Percent(30.0)).unwrap_err().0,
            "percent"
        );
    }

    #[test]
    fn bad_inputs_name_their_field() {
        let base = DiskSpec {
            path: "/tmp".into(),
            duration: Some("10s".into()),
            ..DiskSpec::default()
        };
        let err = |s: DiskSpec| {
            crate::plan::plan(&FaultSpec::Disk(s))
                .unwrap_err()
                .to_string()
        };
        assert!(err(base.clone()).starts_with("invalid percent:"));
        let mut s = base.clone();
        s.path = "relative".into();
        s.free = Some("1M".into());
        assert!(err(s).starts_with("invalid path:"));
        let mut s = base.clone();
        s.bytes = Some("12Q".into());
        assert!(err(s).starts_with("invalid bytes:"));
        let mut s = base.clone();
        s.virtual_fill = true;
        assert!(err(s.clone()).starts_with("invalid pid:"));
        s.free = Some("1M".into());
        assert!(err(s).starts_with("invalid free:"));
    }
}
