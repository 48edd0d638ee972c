//! Kernel filesystems the injector needs (bpffs, tracefs) and where the cgroup hierarchies are.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::error::{IoContext, Result};

/// Where bpffs is expected.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Makes sure bpffs is mounted at [`BPFFS`], mounting it if needed. Returns whether it mounted.
pub fn ensure_bpffs() -> Result<bool> {
    if statfs(BPFFS).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(false);
    }
    std::fs::create_dir_all(BPFFS).ctx(|| format!("creating {BPFFS}"))?;
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .ctx(|| format!("mounting bpffs on {BPFFS}"))?;
    Ok(true)
}

/// Returns a tracefs root (with an `events` directory), mounting tracefs at /sys/kernel/tracing
/// if no tracefs is reachable.
pub fn ensure_tracefs() -> Result<PathBuf> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    let root = "/sys/kernel/tracing";
    mount(
        Some("tracefs"),
        root,
        Some("tracefs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .ctx(|| format!("mounting tracefs on {root}"))?;
    Ok(PathBuf::from(root))
}

/// The cgroup hierarchies mounted on this system.
#[derive(Clone, Debug, Default)]
pub struct CgroupMounts {
    /// The cgroup v2 mount, if any.
    pub v2: Option<PathBuf>,
    /// cgroup v1 mounts by controller (`blkio`, `cpu`...).
    pub v1: BTreeMap<String, PathBuf>,
}

/// Every mount point of this process's mount namespace, from /proc/self/mountinfo.
pub fn mount_points() -> Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect())
}

impl CgroupMounts {
    /// Reads /proc/self/mountinfo.
    pub fn read() -> Result<CgroupMounts> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .ctx(|| "reading /proc/self/mountinfo")?;
        Ok(Self::parse(&text))
    }

    /// Parses mountinfo text.
    pub fn parse(mountinfo: &str) -> CgroupMounts {
        let mut mounts = CgroupMounts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            let (Some(mount_point), Some(fstype)) = (fields.get(4), rfields.first()) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            match *fstype {
                "cgroup2" => {
                    mounts.v2.get_or_insert(mount_point);
                }
                "cgroup" => {
                    for opt in rfields.get(2).copied().unwrap_or("").split(',') {
                        if matches!(
                            opt,
                            "blkio"
                                | "io"
                                | "cpu"
                                | "cpuacct"
                                | "memory"
                                | "pids"
                                | "freezer"
                                | "net_cls"
                                | "devices"
                                | "cpuset"
                        ) {
                            mounts
                                .v1
                                .entry(opt.to_owned())
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// Controllers enabled at the root of the v2 hierarchy.
    pub fn v2_controllers(&self) -> Vec<String> {
        self.v2
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

/// mountinfo escapes spaces and friends as `\040` octal.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = s
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /mnt/with\\040space rw - cgroup cgroup rw,pids";
        let m = CgroupMounts::parse(text);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(m.v1["blkio"], Path::new("/sys/fs/cgroup/blkio"));
        assert_eq!(m.v1["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.v1["pids"], Path::new("/mnt/with space"));
    }
}
