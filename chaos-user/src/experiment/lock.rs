//! One drill at a time per target: a lock file per target under `<state dir>/drills`, held
//! (`flock`) for the whole drill and removed at its end. A drill killed with -9 leaves its files
//! unlocked; the next drill takes them over and `chaos recover --all` removes them.
//!
//! The directory goes with the last lock, and the state directory with it when that leaves it
//! empty: the store removes the state directory when its last fault is recovered
//! ([`crate::store::Store::remove_if_empty`]), but cannot while a drill's locks are in it, and
//! a drill's faults are recovered before its locks are released.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// The locks a drill holds, released and removed on drop.
#[derive(Debug, Default)]
pub struct Locks {
    held: Vec<(PathBuf, File)>,
}

/// The directory of the lock files.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("drills")
}

/// FNV-1a, to name a lock file after a target.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Takes `path`'s lock without waiting: `Ok(None)` if another process holds it.
fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    loop {
        let file = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
        {
            Ok(f) => f,
            // The last drill to end removed the directory since: make it again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(e),
            };
        }
        // The holder before us may have removed the file between our open and our lock: then
        // ours is a lock on a file nobody else can find; start again on the current one.
        let same = std::fs::metadata(path)
            .is_ok_and(|m| m.ino() == file.metadata().map(|f| f.ino()).unwrap_or(0));
        if same {
            return Ok(Some(file));
        }
    }
}

impl Locks {
    /// Takes the lock of each of `keys` (targets in words) under `state_dir`; the error names
    /// the first target another drill holds.
    pub fn take(state_dir: &Path, keys: &[String]) -> Result<Locks, String> {
        if keys.is_empty() {
            return Ok(Locks::default());
        }
        let dir = dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut locks = Locks::default();
        for k in keys {
            let path = dir.join(format!("{:016x}.lock", fnv(k)));
            match try_lock(&path) {
                Ok(Some(file)) => locks.held.push((path, file)),
                Ok(None) => return Err(format!("another chaos run holds {k}")),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(locks)
    }
}

impl Drop for Locks {
    fn drop(&mut self) {
        // Removed while still held, so no other drill can take a lock on a file being removed.
        let mut dir = None;
        for (path, _file) in self.held.drain(..) {
            let _ = std::fs::remove_file(&path);
            dir = path.parent().map(Path::to_path_buf);
        }
        // The directory too, unless another drill holds a lock in it: nothing is left.
        if let Some(dir) = dir {
            remove_dirs(&dir);
        }
    }
}

/// Removes the lock directory `dir` and then the state directory holding it, each only if
/// empty. Another process that makes either again meanwhile finds it gone at its next step
/// and makes it again (`try_lock`, [`crate::store::Store::lock`]).
fn remove_dirs(dir: &Path) {
    if std::fs::remove_dir(dir).is_ok()
        && let Some(state_dir) = dir.parent()
    {
        let _ = std::fs::remove_dir(state_dir);
    }
}

/// Removes the lock files no drill holds (left by killed drills); returns their paths.
pub fn sweep(state_dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let dir = dir(state_dir);
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "lock")
            && let Ok(Some(_held)) = try_lock(&path)
        {
            let _ = std::fs::remove_file(&path);
            removed.push(path.display().to_string());
        }
    }
    remove_dirs(&dir);
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_held_by_one_drill_and_its_file_goes_with_it() {
        let state = std::env::temp_dir().join(format!("chaos-lock-test-{}", std::process::id()));
        let keys = vec!["cgroup=a".to_owned(), "dst=10.0.0.1".to_owned()];
        let first = Locks::take(&state, &keys).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        let err = Locks::take(&state, &keys[1..]).unwrap_err();
        assert!(err.contains("dst=10.0.0.1"), "{err}");
        assert!(sweep(&state).is_empty(), "held locks are not swept");
        drop(first);
        assert!(
            !dir(&state).exists(),
            "the last drill removes the directory"
        );
        assert!(!state.exists(), "and the state directory it left empty");
        std::fs::create_dir_all(dir(&state)).unwrap();
        // A lock file left unlocked (a killed drill) is taken over, and swept.
        let path = dir(&state).join("0000000000000001.lock");
        std::fs::write(&path, "").unwrap();
        assert_eq!(sweep(&state), vec![path.display().to_string()]);
        assert!(!state.exists(), "the sweep leaves no empty state directory");
        let _ = std::fs::remove_dir_all(&state);
    }

    #[test]
    fn a_state_directory_in_use_stays_and_no_target_makes_nothing() {
        let state = std::env::temp_dir().join(format!("chaos-lock-kept-{}", std::process::id()));
        drop(Locks::take(&state, &[]).unwrap());
        assert!(!state.exists(), "a drill without a target made a directory");
        let locks = Locks::take(&state, &["pid=1".to_owned()]).unwrap();
        std::fs::write(state.join("chaos.db"), "").unwrap();
        drop(locks);
        assert!(!dir(&state).exists());
        assert!(
            state.is_dir(),
            "the state directory was removed with the store in it"
        );
        std::fs::remove_dir_all(&state).unwrap();
    }
}
