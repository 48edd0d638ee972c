//! Block I/O fault plans: the device resolved through sysfs (a node, `MAJ:MIN`, or a path on a
//! filesystem), the operations, sectors, errno and limits parsed, and the target resolved in the
//! cgroup hierarchy that holds the io (v2) or blkio (v1) controller.

use std::{
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use syscalls::Sysno;

use super::{
    Chance, Plan, PlannedFault, SyscallPlan, SyscallTarget, check_percent, check_pid,
    fault_duration, parse_errno, parse_size, resolve_cgroup,
};
use crate::{
    error::{Error, Result},
    mounts::CgroupMounts,
    spec::{FaultSpec, IoAction, IoOp, IoSpec},
};

/// A block device, as sysfs knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Kernel name, e.g. `loop3`, `nvme0n1p2`.
    pub name: String,
    /// For a partition: its whole disk's (major, minor, name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<(u32, u32, String)>,
}

impl BlockDevice {
    /// `MAJ:MIN`.
    pub fn dev(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// The device number as the kernel encodes it in `bd_dev` (`MKDEV`: major << 20 | minor).
    pub fn kernel_dev(&self) -> u32 {
        (self.major << 20) | self.minor
    }
}

/// Limits of `io slow` / `io hang`; `None`: unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoLimits {
    /// Read bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<u64>,
    /// Write bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<u64>,
    /// Read operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_iops: Option<u64>,
    /// Write operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_iops: Option<u64>,
}

impl IoLimits {
    /// The limits of `io hang`: 2 bytes and 2 operations per second, the lowest that both
    /// controllers accept. v1 takes 1 as well (and reads 0 as "no limit"), but v2 `io.max`
    /// refuses 1 with EINVAL (a 2020 kernel change: 1 could not scale under io.low; seen on
    /// 6.1 and 6.12); one value for both keeps the record and the tests simple. A bio waits until both budgets cover it,
    /// so a 4 KiB write waits over half an hour: every I/O carrying data stalls until the
    /// limits are lifted, which dispatches what was held at once.
    pub const HANG: IoLimits = IoLimits {
        read_bps: Some(2),
        write_bps: Some(2),
        read_iops: Some(2),
        write_iops: Some(2),
    };

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == IoLimits::default()
    }
}

/// A cgroup in the hierarchy that holds the io (v2) or blkio (v1) controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoCgroup {
    /// Its directory.
    pub path: PathBuf,
    /// Its id (the directory's inode), as a bio's blkg reports it.
    pub id: u64,
    /// cgroup v2 (`io.max`) rather than v1 (`blkio.throttle.*`).
    pub v2: bool,
    /// Whether it is the hierarchy's root.
    pub root: bool,
}

/// Whose I/O a throttle limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleTarget {
    /// The cgroup the limits go on (for a `--pid` that shares its cgroup, the cgroup the
    /// backend moves it out of; the backend makes a child for it).
    pub cgroup: IoCgroup,
    /// `--pid`: the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `--pid`: whether other processes share its cgroup (it is then moved into a cgroup made
    /// for the fault, and back on recovery).
    #[serde(default)]
    pub shared: bool,
}

/// Whose I/O an `io fail` on a device selects (the bio's cgroup, or the submitting process).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BioTarget {
    /// Every I/O to the device.
    All,
    /// I/O submitted by this process (direct and synchronous I/O; its writeback is issued by
    /// kernel threads: use a cgroup target for that).
    Pid(u32),
    /// I/O charged to this cgroup or one below it, writeback included.
    Cgroup(IoCgroup),
}

/// `io fail` on a device, in the block layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BioFailPlan {
    /// The device (a partition fails only its own I/O).
    pub device: BlockDevice,
    /// Operations selected (`chaos_common::block` op bits).
    pub op: IoOp,
    /// Inclusive 512-byte sector range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sectors: Option<(u64, u64)>,
    /// How often.
    pub chance: Chance,
    /// Whose I/O.
    pub target: BioTarget,
}

/// What an I/O fault does, resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum IoEffect {
    /// Fail I/O. `bio` is the block-layer form (a device given); `files` the file-call form
    /// (read/write/fsync... under a directory), used for `--path` and where the block layer
    /// cannot be reached.
    Fail {
        /// The block-layer form, when a device was given.
        bio: Option<BioFailPlan>,
        /// The file-call form: calls of the selected operations under the path or the
        /// device's mount point.
        files: Option<Box<SyscallPlan>>,
        /// Why there is no file-call form, for the error when it is needed.
        no_files: Option<String>,
    },
    /// Throttle the target's I/O to a whole disk.
    Throttle {
        /// The whole disk.
        device: BlockDevice,
        /// The limits.
        limits: IoLimits,
        /// Whose I/O.
        target: ThrottleTarget,
    },
}

/// A block I/O fault, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct IoPlan {
    /// The action asked for.
    pub action: IoAction,
    /// What it does.
    pub effect: IoEffect,
}

/// The file calls an `io fail` of `op` selects.
pub fn file_calls(op: IoOp) -> Vec<Sysno> {
    use Sysno as S;
    let reads = [S::read, S::pread64, S::readv, S::preadv, S::preadv2];
    let writes = [S::write, S::pwrite64, S::writev, S::pwritev, S::pwritev2];
    let flushes = [S::fsync, S::fdatasync, S::sync_file_range];
    match op {
        IoOp::Read => reads.to_vec(),
        IoOp::Write => writes.to_vec(),
        IoOp::Flush => flushes.to_vec(),
        IoOp::Discard => vec![S::fallocate],
        IoOp::Any => [&reads[..], &writes, &flushes, &[S::fallocate]].concat(),
    }
}

const DEVICE_FIX: &str = "give a block device (/dev/sdb, /dev/loop3), MAJ:MIN (7:3), or a path on \
                          a filesystem that lives on one";

/// Resolves `--device`: a device node, `MAJ:MIN`, or a path on a filesystem (its device).
pub fn resolve_device(text: &str) -> Result<BlockDevice> {
    let bad = |problem: String| Error::invalid("device", problem, DEVICE_FIX);
    let (major, minor) = if let Some((a, b)) = text.split_once(':')
        && let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>())
    {
        (a, b)
    } else {
        let meta =
            std::fs::metadata(text).map_err(|e| bad(format!("no such device {text} ({e})")))?;
        let dev = if meta.file_type().is_block_device() {
            meta.rdev()
        } else if meta.file_type().is_char_device() {
            return Err(bad(format!(
                "{text} is a character device, not a block device"
            )));
        } else {
            meta.dev()
        };
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        if major == 0 {
            return Err(bad(format!(
                "{text} is on a filesystem with no block device (tmpfs, overlay, proc...)"
            )));
        }
        (major, minor)
    };
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&sys).map_err(|_| {
        bad(format!(
            "no such device {text} ({major}:{minor} is not in /sys/dev/block)"
        ))
    })?;
    let name = file_name(&real);
    let disk = if sys.join("partition").exists() {
        let parent = real.parent().unwrap_or(Path::new("/"));
        let dev = std::fs::read_to_string(parent.join("dev")).unwrap_or_default();
        let (a, b) = dev.trim().split_once(':').unwrap_or(("0", "0"));
        Some((
            a.parse().unwrap_or(0),
            b.parse().unwrap_or(0),
            file_name(parent),
        ))
    } else {
        None
    };
    Ok(BlockDevice {
        major,
        minor,
        name,
        disk,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses `A-B` (512-byte sectors, inclusive).
fn parse_sectors(text: &str) -> Result<(u64, u64)> {
    let bad = |problem: String| {
        Error::invalid(
            "sector-range",
            problem,
            "give two 512-byte sector numbers, first-last, e.g. --sector-range 0-2047",
        )
    };
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| bad(format!("{text:?} is not a range")))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| bad(format!("{s:?} is not a sector number")))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a > b {
        return Err(bad(format!("{a} is after {b}")));
    }
    Ok((a, b))
}

/// The hierarchy that holds the io / blkio controller: `(root, v2)`.
pub fn io_hierarchy() -> Result<(PathBuf, bool)> {
    let mounts = CgroupMounts::read()?;
    if let Some(root) = &mounts.v2
        && mounts.v2_controllers().iter().any(|c| c == "io")
    {
        return Ok((root.clone(), true));
    }
    if let Some(root) = mounts.v1.get("blkio").or_else(|| mounts.v1.get("io")) {
        return Ok((root.clone(), false));
    }
    Err(Error::Unsupported {
        what: "throttle block I/O".into(),
        why: "neither the cgroup v2 io controller nor the v1 blkio controller is mounted".into(),
    })
}

fn io_cgroup_at(path: PathBuf, root: &Path, v2: bool, field: &'static str) -> Result<IoCgroup> {
    let meta = std::fs::metadata(&path).map_err(|e| {
        Error::invalid(
            field,
            format!("no cgroup {} ({e})", path.display()),
            "give a cgroup directory (see /proc/PID/cgroup)",
        )
    })?;
    Ok(IoCgroup {
        root: path == root,
        id: meta.ino(),
        path,
        v2,
    })
}

/// Resolves `--cgroup` in the io / blkio hierarchy (relative to its root, or absolute in it).
pub fn resolve_io_cgroup(text: &str) -> Result<IoCgroup> {
    let (root, v2) = io_hierarchy()?;
    let path = if Path::new(text).is_absolute() && Path::new(text).starts_with(&root) {
        PathBuf::from(text)
    } else {
        root.join(text.trim_start_matches('/'))
    };
    // `..` and symlinks must not name the root, or leave the hierarchy, under another spelling.
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    if !path.starts_with(&root) {
        return Err(Error::invalid(
            "cgroup",
            format!("{text} is outside the io hierarchy {}", root.display()),
            "give a cgroup directory (see /proc/PID/cgroup)",
        ));
    }
    io_cgroup_at(path, &root, v2, "cgroup")
}

/// The io / blkio cgroup process `pid` is in.
pub fn io_cgroup_of(pid: u32) -> Result<IoCgroup> {
    let (root, v2) = io_hierarchy()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| {
        Error::invalid(
            "pid",
            format!("cannot read process {pid}'s cgroups ({e})"),
            "give the id of a running process",
        )
    })?;
    let rel = text
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "blkio" || c == "io")
            };
            ours.then(|| path.to_owned())
        })
        .ok_or_else(|| {
            Error::invalid(
                "pid",
                format!("process {pid} is in no io/blkio cgroup"),
                "give a process of this host's cgroup hierarchy",
            )
        })?;
    io_cgroup_at(
        root.join(rel.trim().trim_start_matches('/')),
        &root,
        v2,
        "pid",
    )
}

fn others_in(cgroup: &IoCgroup, pid: u32) -> bool {
    std::fs::read_to_string(cgroup.path.join("cgroup.procs"))
        .map(|s| s.lines().any(|l| l.trim() != pid.to_string()))
        .unwrap_or(true)
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD` in `/proc/PID/stat`'s flags).
fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the 3rd, flags the 9th.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

fn throttle_target(s: &IoSpec) -> Result<ThrottleTarget> {
    let action = s.action.as_str();
    match (s.pid, &s.cgroup) {
        (Some(pid), None) => {
            check_pid(pid, s.force)?;
            if is_kernel_thread(pid) {
                return Err(Error::invalid(
                    "pid",
                    format!(
                        "process {pid} is a kernel thread: it has no cgroup of its own to \
                         throttle and cannot be moved into one"
                    ),
                    "give a user process (the one whose I/O should slow down)",
                ));
            }
            let cgroup = io_cgroup_of(pid)?;
            let shared = cgroup.root || others_in(&cgroup, pid);
            if shared && cgroup.v2 && !cgroup.root {
                return Err(Error::invalid(
                    "pid",
                    format!(
                        "process {pid} shares cgroup {} with other processes, and cgroup v2 \
                         cannot give one of them limits of its own there (a cgroup with \
                         processes cannot enable io for a child)",
                        cgroup.path.display()
                    ),
                    "run it in a cgroup of its own (e.g. systemd-run --scope), or give --cgroup \
                     to throttle the whole cgroup",
                ));
            }
            Ok(ThrottleTarget {
                cgroup,
                pid: Some(pid),
                shared,
            })
        }
        (None, Some(c)) => {
            let cgroup = resolve_io_cgroup(c)?;
            if cgroup.root && cgroup.v2 {
                return Err(Error::invalid(
                    "cgroup",
                    "the root of cgroup v2 takes no I/O limits (it has no io.max)",
                    "pick the target's own cgroup",
                ));
            }
            if cgroup.root && !s.force {
                return Err(Error::invalid(
                    "cgroup",
                    "the root cgroup holds every process on the host",
                    "pick the target's own cgroup, or add --force",
                ));
            }
            Ok(ThrottleTarget {
                cgroup,
                pid: None,
                shared: false,
            })
        }
        (None, None) => Err(Error::invalid(
            "pid",
            format!("io {action} needs a target"),
            "give --pid PID or --cgroup PATH (limits go on a cgroup)",
        )),
        (Some(_), Some(_)) => Err(Error::invalid(
            "pid",
            "more than one target",
            "give one of --pid PID or --cgroup PATH",
        )),
    }
}

fn unused<T>(value: &Option<T>, field: &'static str, action: IoAction) -> Result<()> {
    if value.is_some() {
        return Err(Error::invalid(
            field,
            format!("io {} does not use --{field}", action.as_str()),
            format!("drop --{field}"),
        ));
    }
    Ok(())
}

fn limits(s: &IoSpec) -> Result<IoLimits> {
    let bps = |field: &'static str, v: &Option<String>| -> Result<Option<u64>> {
        let Some(text) = v else { return Ok(None) };
        let n = parse_size(field, text)?;
        if n < 2 {
            return Err(Error::invalid(
                field,
                format!("{n} bytes per second is below what the kernel takes (cgroup v2: 2)"),
                "give a rate such as 2mb; to stall I/O use io hang",
            ));
        }
        Ok(Some(n))
    };
    let iops = |field: &'static str, v: Option<u64>| -> Result<Option<u64>> {
        if let Some(n @ (0 | 1)) = v {
            return Err(Error::invalid(
                field,
                format!("{n} operations per second is below what the kernel takes (cgroup v2: 2)"),
                "give 2 or more; to stall I/O use io hang",
            ));
        }
        Ok(v)
    };
    Ok(IoLimits {
        read_bps: bps("read-bps", &s.read_bps)?,
        write_bps: bps("write-bps", &s.write_bps)?,
        read_iops: iops("read-iops", s.read_iops)?,
        write_iops: iops("write-iops", s.write_iops)?,
    })
}

/// Mount points (with root `/` of the filesystem) of device `dev`.
fn mounts_of(dev: &BlockDevice) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&dev.dev().as_str()) && f.get(3) == Some(&"/"))
                .then(|| f.get(4).map(|m| PathBuf::from(m.replace("\\040", " "))))
                .flatten()
        })
        .collect()
}

/// Whether `dev` (or, for a disk, one of its partitions) holds `/`, `/boot` or the state dir.
fn hosts_system(dev: &BlockDevice) -> Option<String> {
    let state = crate::store::Store::open_default()
        .map(|s| s.dir().to_path_buf())
        .unwrap_or_else(|_| PathBuf::from(crate::store::DEFAULT_STATE_DIR));
    for p in [Path::new("/"), Path::new("/boot"), state.as_path()] {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        let (ma, mi) = (libc::major(meta.dev()), libc::minor(meta.dev()));
        let on_it = (ma, mi) == (dev.major, dev.minor)
            || std::fs::canonicalize(format!("/sys/dev/block/{ma}:{mi}"))
                .ok()
                .and_then(|r| r.parent().map(file_name))
                .is_some_and(|parent| dev.disk.is_none() && parent == dev.name);
        if on_it {
            return Some(p.display().to_string());
        }
    }
    None
}

fn fail_plan(s: &IoSpec) -> Result<IoEffect> {
    let a = s.action;
    for (v, f) in [(&s.read_bps, "read-bps"), (&s.write_bps, "write-bps")] {
        unused(v, f, a)?;
    }
    unused(&s.read_iops, "read-iops", a)?;
    unused(&s.write_iops, "write-iops", a)?;
    let errno = parse_errno(s.errno.as_deref().unwrap_or("EIO"))?;
    let percent = check_percent("percent", s.percent.unwrap_or(100.0))?;
    let chance = Chance::new(percent, 0.0);
    let op = s.op.unwrap_or_default();
    let sectors = s.sector_range.as_deref().map(parse_sectors).transpose()?;
    if s.pid.is_some() && s.cgroup.is_some() {
        return Err(Error::invalid(
            "pid",
            "more than one target",
            "give one of --pid PID or --cgroup PATH, or neither for all I/O",
        ));
    }
    if let Some(pid) = s.pid {
        check_pid(pid, s.force)?;
    }
    let (device, dir) = match (&s.device, &s.path) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "path",
                "--device and --path both given",
                "give --device to fail a device's I/O, or --path to fail file I/O under a \
                 directory",
            ));
        }
        (None, None) => {
            return Err(Error::invalid(
                "device",
                "io fail needs --device or --path",
                "add --device /dev/X (or MAJ:MIN) or --path DIR",
            ));
        }
        (Some(d), None) => (Some(resolve_device(d)?), None),
        (None, Some(p)) => {
            let path = PathBuf::from(p);
            if !path.is_absolute() || !path.is_dir() {
                return Err(Error::invalid(
                    "path",
                    format!("{p:?} is not an existing absolute directory"),
                    "give the directory whose files should fail, e.g. /var/lib/mysql",
                ));
            }
            (None, Some(path))
        }
    };
    if sectors.is_some() && device.is_none() {
        return Err(Error::invalid(
            "sector-range",
            "sectors are a device's",
            "give --device with --sector-range, or drop --sector-range",
        ));
    }
    if let Some(dev) = &device
        && s.pid.is_none()
        && s.cgroup.is_none()
        && crate::ebpf::in_child_pid_namespace()
    {
        return Err(Error::invalid(
            "device",
            format!(
                "chaos runs in a container: failing all I/O of {} would reach processes outside it",
                dev.name
            ),
            "give --pid or --cgroup (a process or cgroup of this container)",
        ));
    }
    if let Some(dev) = &device
        && s.pid.is_none()
        && s.cgroup.is_none()
        && !s.force
        && let Some(what) = hosts_system(dev)
    {
        return Err(Error::invalid(
            "device",
            format!(
                "{} holds {what}: failing all its I/O would break this host",
                dev.name
            ),
            "give --pid or --cgroup to fail only a target's I/O, use a device of its own, or \
             add --force",
        ));
    }
    let bio = device.as_ref().map(|device| -> Result<BioFailPlan> {
        Ok(BioFailPlan {
            device: device.clone(),
            op,
            sectors,
            chance,
            target: match (s.pid, &s.cgroup) {
                (Some(pid), _) => BioTarget::Pid(pid),
                (_, Some(c)) => {
                    let cg = resolve_io_cgroup(c)?;
                    if cg.root && !s.force {
                        return Err(Error::invalid(
                            "cgroup",
                            "the root cgroup holds every process on the host",
                            "pick the target's own cgroup, drop --cgroup for all I/O, or add \
                             --force",
                        ));
                    }
                    BioTarget::Cgroup(cg)
                }
                _ => BioTarget::All,
            },
        })
    });
    let bio = bio.transpose()?;
    // The file-call form: under the path, or under the device's filesystem.
    let prefix = match (&dir, &device) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(dev)) => mounts_of(dev).into_iter().next().ok_or_else(|| {
            format!(
                "{} is not mounted, so no file calls reach it (a block-layer fault needs \
                 function error injection)",
                dev.name
            )
        }),
        (None, None) => unreachable!("checked above"),
    };
    let (files, no_files) = match prefix {
        Err(why) => (None, Some(why)),
        Ok(prefix) => {
            let target = match (s.pid, &s.cgroup) {
                (Some(pid), _) => Ok(SyscallTarget::Pid {
                    pid,
                    follow_children: false,
                }),
                (_, Some(c)) => resolve_cgroup(c, s.force).map(SyscallTarget::Cgroup),
                _ => resolve_cgroup("/", true).map(SyscallTarget::Cgroup),
            };
            match target {
                Ok(target) => (
                    Some(Box::new(SyscallPlan::fail_under(
                        &file_calls(op),
                        errno,
                        chance,
                        prefix,
                        target,
                    ))),
                    None,
                ),
                Err(e) if dir.is_some() => return Err(e),
                Err(e) => (None, Some(e.to_string())),
            }
        }
    };
    if bio.is_some() && errno != libc::EIO && files.is_none() {
        return Err(Error::invalid(
            "errno",
            "a failed block I/O reaches callers as EIO",
            "drop --errno (EIO), or use --path to fail file calls with another errno",
        ));
    }
    Ok(IoEffect::Fail {
        bio,
        files,
        no_files,
    })
}

/// Validates an I/O spec into a plan.
pub(super) fn plan(spec: &FaultSpec, s: &IoSpec) -> Result<Plan> {
    let duration = fault_duration(s.duration.as_deref())?;
    let a = s.action;
    let effect = match a {
        IoAction::Fail => fail_plan(s)?,
        IoAction::Slow | IoAction::Hang => {
            unused(&s.path, "path", a)?;
            unused(&s.op, "op", a)?;
            unused(&s.errno, "errno", a)?;
            unused(&s.percent, "percent", a)?;
            unused(&s.sector_range, "sector-range", a)?;
            let limits = if a == IoAction::Hang {
                for (v, f) in [(&s.read_bps, "read-bps"), (&s.write_bps, "write-bps")] {
                    unused(v, f, a)?;
                }
                unused(&s.read_iops, "read-iops", a)?;
                unused(&s.write_iops, "write-iops", a)?;
                IoLimits::HANG
            } else {
                let l = limits(s)?;
                if l.is_empty() {
                    return Err(Error::invalid(
                        "write-bps",
                        "io slow needs a limit",
                        "add --read-bps, --write-bps, --read-iops or --write-iops, e.g. \
                         --write-bps 2mb",
                    ));
                }
                l
            };
            let text = s.device.as_deref().ok_or_else(|| {
                Error::invalid(
                    "device",
                    format!("io {} needs --device", a.as_str()),
                    "add --device /dev/X (or MAJ:MIN, or a path on its filesystem)",
                )
            })?;
            let device = resolve_device(text)?;
            if let Some((_, _, disk)) = &device.disk {
                return Err(Error::invalid(
                    "device",
                    format!(
                        "{} is a partition of {disk}; I/O limits apply to whole disks",
                        device.name
                    ),
                    format!(
                        "give --device /dev/{disk}: the limits then cover the target's I/O to \
                         every partition of it"
                    ),
                ));
            }
            let target = throttle_target(s)?;
            IoEffect::Throttle {
                device,
                limits,
                target,
            }
        }
    };
    Ok(Plan {
        spec: spec.clone(),
        duration,
        fault: PlannedFault::Io(IoPlan { action: a, effect }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: IoAction) -> IoSpec {
        IoSpec {
            action,
            duration: Some("10s".into()),
            ..IoSpec::default()
        }
    }

    fn err(s: IoSpec) -> String {
        crate::plan::plan(&FaultSpec::Io(s))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn sectors_and_calls() {
        assert_eq!(parse_sectors("0-2047").unwrap(), (0, 2047));
        assert!(parse_sectors("9-1").is_err());
        assert!(parse_sectors("x").is_err());
        assert_eq!(file_calls(IoOp::Any).len(), 14);
        assert_eq!(file_calls(IoOp::Flush)[0], Sysno::fsync);
    }

    #[test]
    fn kernel_threads_are_told_apart() {
        assert!(!is_kernel_thread(std::process::id()));
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(is_kernel_thread(2));
        }
    }

    #[test]
    fn bad_inputs_name_their_field() {
        let mut s = spec(IoAction::Fail);
        assert!(err(s.clone()).starts_with("invalid device:"));
        s.device = Some("/dev/no-such-disk".into());
        assert!(err(s.clone()).contains("no such device"));
        s.device = Some("/dev/null".into());
        assert!(err(s.clone()).contains("character device"));
        s.device = Some("/proc".into());
        assert!(err(s.clone()).contains("no block device"));
        let mut s = spec(IoAction::Slow);
        s.device = Some("7:0".into());
        assert!(
            err(s.clone()).starts_with("invalid write-bps:"),
            "{}",
            err(s)
        );
        s.write_bps = Some("0".into());
        assert!(err(s.clone()).starts_with("invalid write-bps:"));
        s.write_bps = Some("1".into());
        assert!(err(s.clone()).contains("cgroup v2: 2"), "{}", err(s));
        let mut s = spec(IoAction::Slow);
        s.device = Some("7:0".into());
        s.read_iops = Some(1);
        assert!(
            err(s.clone()).starts_with("invalid read-iops:"),
            "{}",
            err(s)
        );
        let mut s = spec(IoAction::Hang);
        s.write_iops = Some(3);
        assert!(err(s).starts_with("invalid write-iops:"));
        let mut s = spec(IoAction::Slow);
        s.op = Some(IoOp::Read);
        assert!(err(s).starts_with("invalid op:"));
    }
}
