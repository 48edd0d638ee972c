//! A generator's `cgroup`: the same path in the cgroup v2 hierarchy and, when the io / blkio
//! controller is another mount (cgroup v1), in that one too, so that every fault aimed at the
//! cgroup (network and syscall faults on v2, block I/O throttles on blkio) reaches the workers.
//! Directories are made where missing and only those are removed afterwards.

use std::{
    fs::File,
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    error::{Error, IoContext, Result},
    mounts::CgroupMounts,
    plan::io_hierarchy,
};

const FIX: &str = "give a cgroup path relative to the hierarchy's root, e.g. chaos-drill/load";

/// The cgroup directories a generator's worker goes into, and those made for it.
#[derive(Debug)]
pub(crate) struct Placement {
    /// The cgroup in each hierarchy.
    pub(crate) dirs: Vec<PathBuf>,
    /// Directories made, parents before children.
    made: Vec<PathBuf>,
}

/// The hierarchies a generator's cgroup lives in: v2, and the io / blkio one if it is another.
fn roots() -> Result<Vec<PathBuf>> {
    let mounts = CgroupMounts::read()?;
    let mut roots: Vec<PathBuf> = mounts.v2.iter().cloned().collect();
    if let Ok((io, _)) = io_hierarchy()
        && !roots.contains(&io)
    {
        roots.push(io);
    }
    if roots.is_empty() {
        return Err(Error::Unsupported {
            what: "run traffic in a cgroup".into(),
            why: "no cgroup v2 or blkio hierarchy is mounted".into(),
        });
    }
    Ok(roots)
}

/// `text` relative to its hierarchy: a relative path, or an absolute one under one of `roots`.
fn relative(text: &str, roots: &[PathBuf]) -> Result<PathBuf> {
    let path = Path::new(text.trim());
    let rel = if path.is_absolute() {
        match roots.iter().find_map(|r| path.strip_prefix(r).ok()) {
            Some(rel) => rel.to_path_buf(),
            None => path
                .strip_prefix("/")
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    } else {
        path.to_path_buf()
    };
    if rel.as_os_str().is_empty() {
        return Err(Error::invalid(
            "cgroup",
            format!("{text:?} is a hierarchy's root cgroup"),
            FIX,
        ));
    }
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(
            "cgroup",
            format!("{text:?} leaves the hierarchy or is not a plain path"),
            FIX,
        ));
    }
    Ok(rel)
}

impl Placement {
    /// Makes cgroup `text` in every hierarchy (where missing).
    pub(crate) fn prepare(text: &str) -> Result<Placement> {
        let roots = roots()?;
        let rel = relative(text, &roots)?;
        let mut placement = Placement {
            dirs: Vec::new(),
            made: Vec::new(),
        };
        for root in &roots {
            let dir = root.join(&rel);
            // Each missing level, top down, so that exactly those are removed afterwards.
            let mut missing: Vec<PathBuf> = dir
                .ancestors()
                .take_while(|p| *p != root.as_path() && !p.exists())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            for d in missing {
                if let Err(e) = std::fs::create_dir(&d) {
                    let _ = placement.remove();
                    return Err(Error::io(format!("making cgroup {}", d.display()), e));
                }
                placement.made.push(d);
            }
            if !dir.join("cgroup.procs").exists() {
                let _ = placement.remove();
                return Err(Error::invalid(
                    "cgroup",
                    format!("{} is not a cgroup directory", dir.display()),
                    FIX,
                ));
            }
            placement.dirs.push(dir);
        }
        Ok(placement)
    }

    /// Each cgroup's `cgroup.procs`, open for writing (close-on-exec).
    pub(crate) fn open_procs(&self) -> Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .ctx(|| format!("opening {}", p.display()))
            })
            .collect()
    }

    /// Removes the cgroups made, children first, each after moving what is still in it to its
    /// parent. Cgroups that existed before are left as they were.
    pub(crate) fn remove(self) -> Result<()> {
        let mut first = None;
        for dir in self.made.iter().rev() {
            if let Err(e) = remove_cgroup(dir) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Moves the processes of `dir` to its parent and removes it (retrying while the kernel still
/// counts exiting tasks in it).
fn remove_cgroup(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let (Ok(procs), Some(parent)) = (
            std::fs::read_to_string(dir.join("cgroup.procs")),
            dir.parent(),
        ) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::io(format!("removing cgroup {}", dir.display()), e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_relative_to_their_hierarchy() {
        let roots = vec![
            PathBuf::from("/sys/fs/cgroup/unified"),
            PathBuf::from("/sys/fs/cgroup/blkio"),
        ];
        assert_eq!(
            relative("drill/load", &roots).unwrap(),
            PathBuf::from("drill/load")
        );
        assert_eq!(
            relative("/sys/fs/cgroup/blkio/drill", &roots).unwrap(),
            PathBuf::from("drill")
        );
        assert_eq!(relative("/drill", &roots).unwrap(), PathBuf::from("drill"));
        for bad in ["", "/", "/sys/fs/cgroup/unified", "a/../../etc", "./a"] {
            assert!(relative(bad, &roots).is_err(), "{bad:?} accepted");
        }
    }
}
