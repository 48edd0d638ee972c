//! The file load: each worker writes `block_size` bytes at the next offset of its own file
//! (`chaos-traffic-<name>-<pid>-<worker>` in `file.path`), wrapping at `file_size`, and with
//! `fsync` calls `fdatasync` after each write: one operation. A failed call's errno is the
//! operation's error (`fdatasync: EIO: Input/output error`). The runner removes the files.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    file_path,
    worker::{OpError, Operation},
};
use crate::{error::Result, experiment::FileLoad, plan::parse_size};

/// Bytes per write when the spec gives no `block_size`.
pub(crate) const DEFAULT_BLOCK: u64 = 4096;
/// Where each worker's file wraps when the spec gives no `file_size`.
pub(crate) const DEFAULT_FILE_SIZE: u64 = 64 << 20;

/// A failed call in a few words: the call, the errno's name and its text.
fn errno_text(call: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!(
            "{call}: {:?}: {}",
            nix::errno::Errno::from_raw(n),
            nix::errno::Errno::from_raw(n).desc()
        ),
        None => format!("{call}: {e}"),
    }
}

/// One worker's writes.
#[derive(Debug)]
pub(crate) struct FileOp {
    path: PathBuf,
    file: Option<File>,
    block: Vec<u8>,
    offset: u64,
    file_size: u64,
    fsync: bool,
}

impl FileOp {
    /// Worker `worker` of generator `name` in worker process `pid` (the file is opened by the
    /// first operation: a failure to open is that operation's error).
    pub(crate) fn new(spec: &FileLoad, name: &str, pid: u32, worker: usize) -> Result<FileOp> {
        let block = match &spec.block_size {
            Some(b) => parse_size("file.block_size", b)?,
            None => DEFAULT_BLOCK,
        }
        .max(1);
        let file_size = match &spec.file_size {
            Some(s) => parse_size("file.file_size", s)?,
            None => DEFAULT_FILE_SIZE,
        }
        .max(block);
        Ok(FileOp {
            path: file_path(Path::new(&spec.path), name, pid, worker),
            file: None,
            // Not zeros, so that no layer below can skip or compress the writes.
            block: (0..block)
                .map(|i| (i.wrapping_mul(131) + 7) as u8)
                .collect(),
            offset: 0,
            file_size,
            fsync: spec.fsync.unwrap_or(true),
        })
    }
}

impl Operation for FileOp {
    fn run(&mut self, _timeout: Duration) -> Result<(), OpError> {
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)
                .map_err(|e| OpError::Failed(errno_text("open", &e)))?;
            self.file = Some(f);
        }
        let Some(file) = &self.file else {
            return Err(OpError::Failed("no file".into()));
        };
        let at = self.offset;
        self.offset += self.block.len() as u64;
        if self.offset + self.block.len() as u64 > self.file_size {
            self.offset = 0;
        }
        file.write_all_at(&self.block, at)
            .map_err(|e| OpError::Failed(errno_text("write", &e)))?;
        if self.fsync {
            file.sync_data()
                .map_err(|e| OpError::Failed(errno_text("fdatasync", &e)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Traffic, traffic::worker::tests::run_for};

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("chaos-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn each_worker_writes_its_own_file_and_wraps() {
        let dir = tempdir("fileload");
        let spec = Traffic {
            name: "w".into(),
            file: Some(FileLoad {
                path: dir.0.display().to_string(),
                block_size: Some("1k".into()),
                file_size: Some("8k".into()),
                fsync: Some(true),
            }),
            concurrency: Some(2),
            rate: Some(200.0),
            ..Traffic::default()
        };
        let (log, _) = run_for(&spec, Duration::from_millis(300));
        let ops = log.ops();
        assert!(ops.len() >= 20, "{} ops", ops.len());
        assert!(ops.iter().all(|o| o.ok), "{:?}", log.last_error());
        let pid = std::process::id();
        for w in 0..2 {
            let p = file_path(&dir.0, "w", pid, w);
            let len = std::fs::metadata(&p).unwrap().len();
            // More than 8 writes each: the file wrapped at 8k.
            assert_eq!(len, 8192, "{}", p.display());
        }
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 2);
    }

    #[test]
    fn a_missing_directory_fails_every_operation_with_its_errno() {
        let spec = Traffic {
            name: "w".into(),
            file: Some(FileLoad {
                path: "/nonexistent-chaos-dir".into(),
                ..FileLoad::default()
            }),
            rate: Some(100.0),
            ..Traffic::default()
        };
        let (log, _) = run_for(&spec, Duration::from_millis(200));
        assert!(!log.ops().is_empty());
        assert!(log.ops().iter().all(|o| !o.ok));
        assert_eq!(
            log.last_error().as_deref(),
            Some("open: ENOENT: No such file or directory")
        );
    }
}
