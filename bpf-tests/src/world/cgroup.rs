//! Cgroups made for a test, on cgroup v2 or on a cgroup v1 hierarchy.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{retry, unique_name};

/// Which cgroup interface a [`TestCgroup`] lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// A v1 hierarchy with its own controller(s), e.g. `/sys/fs/cgroup/blkio`.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A cgroup `chaos-t-<pid>-<n>` made directly under a hierarchy's root. Drop moves the processes
/// still in it (and in any child cgroup) back to the parent and removes it.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
    version: CgroupVersion,
}

/// The v2 name of a v1 controller (`blkio` is `io` on v2).
fn v2_controller(v1: &str) -> &str {
    match v1 {
        "blkio" => "io",
        "cpuacct" => "cpu",
        other => other,
    }
}

/// Mount entries `(mount point, fstype, super options)` from `/proc/self/mountinfo`.
pub(crate) fn mounts() -> Vec<(PathBuf, String, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_owned();
            let _source = post.next();
            let opts = post.next().unwrap_or("").to_owned();
            Some((PathBuf::from(unescape_mount(mount_point)), fstype, opts))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the unified hierarchy is mounted: `/sys/fs/cgroup` if it is cgroup2, else the first
/// cgroup2 mount (e.g. `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let all: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|(_, fstype, _)| fstype == "cgroup2")
        .map(|(p, _, _)| p)
        .collect();
    all.iter()
        .find(|p| p.as_path() == Path::new("/sys/fs/cgroup"))
        .or(all.first())
        .cloned()
}

/// Where the v1 hierarchy carrying `controller` (e.g. `blkio`) is mounted.
pub fn cgroup_v1_mount(controller: &str) -> Option<PathBuf> {
    mounts()
        .into_iter()
        .find(|(_, fstype, opts)| fstype == "cgroup" && opts.split(',').any(|o| o == controller))
        .map(|(p, _, _)| p)
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl TestCgroup {
    /// Makes a cgroup where the v1 controller `v1_controller` (e.g. `blkio`) or its v2 equivalent
    /// (`io`) applies: on v2 when the unified hierarchy offers that controller to its children,
    /// or is the only hierarchy (then the controller is enabled in its root's
    /// `cgroup.subtree_control`, as a VM's init would); else under the v1 hierarchy.
    pub fn new(v1_controller: &str) -> io::Result<Self> {
        let v2name = v2_controller(v1_controller);
        let v1 = cgroup_v1_mount(v1_controller);
        if let Some(root) = cgroup2_mount() {
            if words(&root.join("cgroup.subtree_control"))
                .iter()
                .any(|c| c == v2name)
            {
                return Self::in_dir(&root, CgroupVersion::V2);
            }
            let only_v2 = !mounts().iter().any(|(_, fstype, _)| fstype == "cgroup");
            if only_v2
                && words(&root.join("cgroup.controllers"))
                    .iter()
                    .any(|c| c == v2name)
            {
                std::fs::write(root.join("cgroup.subtree_control"), format!("+{v2name}"))?;
                return Self::in_dir(&root, CgroupVersion::V2);
            }
        }
        match v1 {
            Some(root) => Self::in_dir(&root, CgroupVersion::V1),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no cgroup hierarchy offers the {v1_controller}/{v2name} controller"),
            )),
        }
    }

    /// Makes a cgroup on the unified hierarchy (whatever controllers it has).
    pub fn new_v2() -> io::Result<Self> {
        let root = cgroup2_mount()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount"))?;
        Self::in_dir(&root, CgroupVersion::V2)
    }

    /// Makes a cgroup on the v1 hierarchy carrying `controller`.
    pub fn new_v1(controller: &str) -> io::Result<Self> {
        let root = cgroup_v1_mount(controller).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no cgroup v1 hierarchy with {controller}"),
            )
        })?;
        Self::in_dir(&root, CgroupVersion::V1)
    }

    /// Makes a uniquely named cgroup under `parent` (a directory of a `version` hierarchy).
    pub fn in_dir(parent: &Path, version: CgroupVersion) -> io::Result<Self> {
        let path = parent.join(unique_name());
        std::fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        Ok(TestCgroup { path, version })
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which interface it lives on.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Its inode number: on v2 this is the cgroup id (`bpf_get_current_cgroup_id()`).
    pub fn id(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.ino())
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_pid(&self, pid: u32) -> io::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        Ok(self
            .read("cgroup.procs")?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Writes `value` to the control file `file` (e.g. `io.max`).
    pub fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let path = self.path.join(file);
        std::fs::write(&path, value).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("write {value:?} to {}: {e}", path.display()),
            )
        })
    }

    /// Reads the control file `file`.
    pub fn read(&self, file: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path.join(file))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(parent) = self.path.parent() {
            remove_tree(&self.path, parent);
        }
    }
}

/// Removes cgroup `dir` and its descendants, moving their processes to `parent`.
pub(crate) fn remove_tree(dir: &Path, parent: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path(), parent);
            }
        }
    }
    let _ = retry(Duration::from_secs(2), Duration::from_millis(10), || {
        for pid in words(&dir.join("cgroup.procs")) {
            // A process may exit between the read and the write: ignore errors, re-check.
            let _ = std::fs::write(parent.join("cgroup.procs"), &pid);
        }
        std::fs::remove_dir(dir)
    });
}

/// Puts this test process into a cgroup v2 for as long as the guard lives, then back where it
/// was.
#[derive(Debug)]
pub struct InsideCgroup {
    home: PathBuf,
}

impl InsideCgroup {
    /// Moves this process into `cg`; panics if it cannot (a test's setup).
    pub fn enter(cg: &TestCgroup) -> InsideCgroup {
        let root = cgroup2_mount().expect("cgroup v2");
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line");
        let home = root.join(rel.trim_start_matches('/'));
        cg.add_pid(std::process::id()).expect("entering the cgroup");
        InsideCgroup { home }
    }
}

impl Drop for InsideCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
    }
}
