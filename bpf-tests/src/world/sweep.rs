//! Removal of what crashed test runs left behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cgroup::{mounts, remove_tree};
use super::loopdev::{detach, unmount};
use super::netns::{NETNS_RUN_DIR, kill_processes_in, remove_bind};
use super::{TEST_PREFIX, is_stale};

/// Removes leftovers of earlier test runs whose process is gone, found by name prefix
/// (`chaos-t-<pid>-`, with `<pid>` no longer running): namespaces under `/run/netns` (killing
/// the processes inside), cgroups at the top of every cgroup hierarchy, loop devices whose
/// backing file lies in such a temporary directory (unmounting them first) and the temporary
/// directories themselves. Returns a line per thing removed. Never touches anything of a live
/// process, so concurrently running test binaries are safe.
pub fn sweep_stale() -> Vec<String> {
    let mut removed = Vec::new();

    // Namespaces.
    for path in children(Path::new(NETNS_RUN_DIR)) {
        if stale_path(&path) {
            if let Ok(m) = std::fs::metadata(&path) {
                kill_processes_in(m.ino());
            }
            remove_bind(&path);
            removed.push(format!("network namespace {}", path.display()));
        }
    }

    // Cgroups, on every v1 hierarchy and every cgroup2 mount.
    for (mount_point, fstype, _) in mounts() {
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        for dir in children(&mount_point) {
            if dir.is_dir() && stale_path(&dir) {
                remove_tree(&dir, &mount_point);
                removed.push(format!("cgroup {}", dir.display()));
            }
        }
    }

    // Mounts inside stale temporary directories (loop devices mounted there), deepest first.
    let tmp = std::env::temp_dir();
    let mut stale_mounts: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|(p, _, _)| p)
        .filter(|p| {
            p.strip_prefix(&tmp)
                .ok()
                .and_then(|r| r.iter().next())
                .is_some_and(|first| is_stale(&first.to_string_lossy()))
        })
        .collect();
    stale_mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in stale_mounts {
        unmount(&m);
        removed.push(format!("mount {}", m.display()));
    }

    // Loop devices backed by files in stale temporary directories.
    for block in children(Path::new("/sys/block")) {
        let name = block
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(block.join("loop/backing_file")) else {
            continue;
        };
        let backing = PathBuf::from(backing.trim().trim_end_matches(" (deleted)"));
        let owner = backing
            .strip_prefix(&tmp)
            .ok()
            .and_then(|r| r.iter().next())
            .map(|f| f.to_string_lossy().into_owned());
        if owner.is_some_and(|o| is_stale(&o)) {
            detach(&Path::new("/dev").join(&name));
            removed.push(format!("loop device /dev/{name} ({})", backing.display()));
        }
    }

    // Temporary directories.
    for dir in children(&tmp) {
        if stale_path(&dir) && std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(format!("directory {}", dir.display()));
        }
    }
    removed
}

fn children(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn stale_path(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with(TEST_PREFIX) && is_stale(&n))
}
