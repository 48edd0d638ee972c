//! `disk fill`: files of ours, allocated with `fallocate` (written where it is unsupported),
//! named from the fault id so that recovery finds them even after a crash mid-fill.
//!
//! Two steps, so that a crash at any point can be undone: [`prepare`] decides the files (stored
//! with the fault record before anything is written), [`apply`] makes them, and [`disarm`]
//! removes whatever exists of them.
//!
//! The files are `DIR/.chaos-fill-<fault id>`, then `.1`, `.2`... when one file cannot hold the
//! whole amount: a filesystem's largest file (4 GiB on vfat, 16 GiB on ext2/3 with 1 KiB
//! blocks) shows as `EFBIG`, and the fill goes on in the next file. Each file also carries the
//! fault id in its `user.chaos.fault` extended attribute where the filesystem keeps them.
//!
//! The amount is recomputed from `statvfs` when the files are made (the space may have changed
//! since planning), as a target for the filesystem's used blocks, and corrected from `statvfs`
//! again after each pass: the filesystem's own metadata for the new extents (and anyone else
//! writing meanwhile) moves the free space by a few blocks, which the next pass takes or gives
//! back. Where `fallocate` is unsupported the data written is incompressible and differs in
//! every block, so that compressing or deduplicating filesystems keep all of it.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::AsRawFd as _,
        unix::{
            ffi::OsStrExt as _,
            fs::{FileExt as _, OpenOptionsExt as _},
        },
    },
    path::{Path, PathBuf},
};

use nix::fcntl::{FallocateFlags, fallocate};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, IoContext as _, Result},
    plan::{FillAmount, FillPlan, FsSpace},
};

/// Start of every fill file's name; the fault id follows.
pub const FILE_PREFIX: &str = ".chaos-fill-";

/// The extended attribute that holds the fault id on each fill file.
pub const XATTR: &std::ffi::CStr = c"user.chaos.fault";

/// Correcting passes at most (each measures the space and takes or gives back the difference).
const PASSES: usize = 6;

/// Bytes per write where `fallocate` is unsupported.
const WRITE_CHUNK: usize = 1 << 20;

/// How a fill took its space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FillMethod {
    /// `fallocate(2)`: blocks allocated, nothing written.
    #[default]
    Fallocate,
    /// Data written, on a filesystem without `fallocate`.
    Write,
}

/// The files a fill makes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FillArmed {
    /// Their directory.
    pub dir: PathBuf,
    /// The fault id, in the files' names and their `user.chaos.fault` attribute.
    pub fault_id: String,
    /// How much to leave or take; recomputed when the files are made.
    pub amount: FillAmount,
    /// Bytes the files took, as `statvfs` measured it (0 until made).
    #[serde(default)]
    pub taken: u64,
    /// Bytes left available to unprivileged users once made, as `df` shows them.
    #[serde(default)]
    pub avail_after: u64,
    /// How many files were made.
    #[serde(default)]
    pub files: u32,
    /// How the space was taken.
    #[serde(default)]
    pub method: FillMethod,
}

impl FillArmed {
    /// The `n`th file: `.chaos-fill-<id>`, then `.chaos-fill-<id>.1`, `.2`...
    pub fn file(&self, n: u32) -> PathBuf {
        self.dir.join(match n {
            0 => format!("{FILE_PREFIX}{}", self.fault_id),
            n => format!("{FILE_PREFIX}{}.{n}", self.fault_id),
        })
    }

    /// Whether a directory entry named `name` is one of this fill's files.
    fn owns(&self, name: &[u8]) -> bool {
        let Some(rest) = name
            .strip_prefix(FILE_PREFIX.as_bytes())
            .and_then(|r| r.strip_prefix(self.fault_id.as_bytes()))
        else {
            return false;
        };
        match rest {
            [] => true,
            [b'.', n @ ..] => !n.is_empty() && n.iter().all(u8::is_ascii_digit),
            _ => false,
        }
    }
}

/// Decides the files; touches nothing.
pub fn prepare(fault_id: &str, plan: &FillPlan) -> Result<FillArmed> {
    // The id becomes part of file names: nothing that could leave the directory.
    if fault_id.is_empty()
        || !fault_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Error::io(
            format!("naming fill files after fault id {fault_id:?}"),
            io::ErrorKind::InvalidInput.into(),
        ));
    }
    Ok(FillArmed {
        dir: plan.dir.clone(),
        fault_id: fault_id.to_owned(),
        amount: plan.amount,
        taken: 0,
        avail_after: 0,
        files: 0,
        method: FillMethod::Fallocate,
    })
}

/// Makes the files: all of the space asked, or (on error) none. Fills in what was taken.
pub fn apply(armed: &mut FillArmed) -> Result<()> {
    let mut calls = RealCalls {
        dir: armed.dir.clone(),
        noise: Vec::new(),
        written: 0,
    };
    apply_with(armed, &mut calls)
}

/// [`apply`] through `calls`.
fn apply_with(armed: &mut FillArmed, calls: &mut impl Calls) -> Result<()> {
    match fill(armed, calls) {
        Ok(done) => {
            armed.taken = done.taken;
            armed.avail_after = done.avail_after;
            armed.files = done.files;
            armed.method = done.method;
            tracing::info!(
                dir = %armed.dir.display(),
                taken = done.taken,
                avail_after = done.avail_after,
                files = done.files,
                method = ?done.method,
                "disk fill made"
            );
            Ok(())
        }
        Err(e) => {
            // All or nothing: whatever part was made goes.
            let _ = disarm(armed);
            Err(e)
        }
    }
}

/// Removes whatever exists of the files; nothing there (or no directory) is success.
/// A file of that name holding another fault's id in its attribute is left alone.
pub fn disarm(armed: &FillArmed) -> Result<()> {
    let entries = match std::fs::read_dir(&armed.dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("listing {}", armed.dir.display()), e)),
    };
    let mut first_err = None;
    for entry in entries {
        let entry = entry.ctx(|| format!("listing {}", armed.dir.display()))?;
        if !armed.owns(entry.file_name().as_bytes()) {
            continue;
        }
        let path = entry.path();
        let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        if !regular || marked(&path).is_some_and(|id| id != armed.fault_id.as_bytes()) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first_err.get_or_insert(Error::io(format!("removing {}", path.display()), e));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// What a fill made.
struct Filled {
    taken: u64,
    avail_after: u64,
    files: u32,
    method: FillMethod,
}

/// Makes the files for `armed` and corrects them to the measured space.
fn fill(armed: &FillArmed, calls: &mut impl Calls) -> Result<Filled> {
    let start = calls.space()?;
    let take = start.to_take(armed.amount).map_err(|(field, problem)| {
        Error::invalid(
            field,
            format!("{problem} (measured when filling)"),
            "give an amount that fits, e.g. --free 100M or --percent 95",
        )
    })?;
    let block = start.block.max(1);
    // Whole blocks: the filesystem counts nothing smaller.
    let target = start.used + take.div_ceil(block) * block;
    let mut files = Files::new(armed);
    files.grow(calls, target - start.used)?;
    let mut now = files.measure(calls)?;
    let gained = now.used.saturating_sub(start.used);
    // What was made: less than asked when the filesystem filled up first.
    let made: u64 = files.open.iter().map(|(_, size)| size).sum();
    if made >= 64 * block && gained < made / 2 {
        return Err(Error::io(
            format!(
                "filling {}: {made} bytes made took only {gained} bytes of space (a \
                 compressing or deduplicating filesystem?)",
                armed.dir.display(),
            ),
            io::ErrorKind::Unsupported.into(),
        ));
    }
    for _ in 0..PASSES {
        if now.used == target {
            break;
        }
        if now.used < target {
            files.grow(calls, target - now.used)?;
        } else {
            files.shrink(now.used - target)?;
        }
        now = files.measure(calls)?;
    }
    files.finish()?;
    Ok(Filled {
        taken: now.used.saturating_sub(start.used),
        avail_after: now.avail,
        files: files.open.len() as u32,
        method: files.method,
    })
}

/// The calls a fill makes on its files and its filesystem: the real ones, or a test's.
trait Calls {
    /// `fallocate(2)` (mode 0) of `len` bytes at `offset`.
    fn fallocate(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()>;
    /// Writes up to `len` bytes at `offset`; the count written.
    fn write(&mut self, file: &File, offset: u64, len: u64) -> io::Result<u64>;
    /// The filesystem's space now.
    fn space(&mut self) -> Result<FsSpace>;
}

/// The system calls.
struct RealCalls {
    dir: PathBuf,
    /// Incompressible data to write (made on first use).
    noise: Vec<u8>,
    /// Bytes written so far, stamped into every block so that no two are alike.
    written: u64,
}

impl Calls for RealCalls {
    fn fallocate(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        let off = |v: u64| i64::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG));
        fallocate(file, FallocateFlags::empty(), off(offset)?, off(len)?).map_err(io::Error::from)
    }

    fn write(&mut self, file: &File, offset: u64, len: u64) -> io::Result<u64> {
        if self.noise.is_empty() {
            self.noise = noise(WRITE_CHUNK);
        }
        let len = (len as usize).min(self.noise.len());
        for (i, blk) in self.noise[..len].chunks_mut(4096).enumerate() {
            let stamp = (self.written + (i * 4096) as u64).to_le_bytes();
            let n = stamp.len().min(blk.len());
            blk[..n].copy_from_slice(&stamp[..n]);
        }
        let n = file.write_at(&self.noise[..len], offset)? as u64;
        self.written += n;
        Ok(n)
    }

    fn space(&mut self) -> Result<FsSpace> {
        FsSpace::of(&self.dir)
    }
}

/// `len` pseudo-random bytes (SplitMix64 seeded from the clock and pid: unpredictability is not
/// the point, incompressibility is).
fn noise(len: usize) -> Vec<u8> {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()).rotate_left(32);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Marks `file` as fault `fault_id`'s; filesystems without user attributes keep only the name.
fn mark(file: &File, fault_id: &str) -> io::Result<()> {
    // SAFETY: fsetxattr reads the NUL-terminated name and `len` bytes of the value, both alive.
    let r = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            XATTR.as_ptr(),
            fault_id.as_ptr().cast(),
            fault_id.len(),
            0,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Ok(()),
        _ => Err(e),
    }
}

/// The fault id in `path`'s attribute, if it has one.
fn marked(path: &Path) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: lgetxattr writes at most `buf.len()` bytes into `buf`; the strings are alive.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            XATTR.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

/// The fill's files as they are being made: open, with their sizes.
struct Files<'a> {
    armed: &'a FillArmed,
    open: Vec<(File, u64)>,
    /// The largest a file grows on this filesystem, once `EFBIG` showed it.
    cap: u64,
    method: FillMethod,
}

impl<'a> Files<'a> {
    fn new(armed: &'a FillArmed) -> Self {
        Files {
            armed,
            open: Vec::new(),
            cap: i64::MAX as u64,
            method: FillMethod::Fallocate,
        }
    }

    /// Makes the next file, marked as ours.
    fn create(&mut self) -> Result<()> {
        let path = self.armed.file(self.open.len() as u32);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .ctx(|| format!("creating {}", path.display()))?;
        mark(&file, &self.armed.fault_id)
            .ctx(|| format!("marking {} as ours ({XATTR:?})", path.display()))?;
        self.open.push((file, 0));
        Ok(())
    }

    /// Takes `n` more bytes: grows the last file, then new ones when it is as large as the
    /// filesystem allows.
    fn grow(&mut self, calls: &mut impl Calls, mut n: u64) -> Result<()> {
        while n > 0 {
            if self.open.last().is_none_or(|(_, size)| *size >= self.cap) {
                self.create()?;
            }
            let last = self.open.len() - 1;
            let path = || self.armed.file(last as u32).display().to_string();
            let (file, size) = &mut self.open[last];
            let mut len = n.min(self.cap - *size);
            loop {
                let done = match self.method {
                    FillMethod::Fallocate => calls.fallocate(file, *size, len).map(|()| len),
                    FillMethod::Write => calls.write(file, *size, len),
                };
                match done.map_err(|e| e.raw_os_error().unwrap_or(0)) {
                    Ok(0) => {
                        return Err(Error::io(
                            format!("filling {}", path()),
                            io::ErrorKind::WriteZero.into(),
                        ));
                    }
                    Ok(k) => {
                        *size += k;
                        n -= k;
                    }
                    Err(libc::EOPNOTSUPP | libc::ENOSYS)
                        if self.method == FillMethod::Fallocate =>
                    {
                        tracing::info!(file = %path(), "no fallocate here: writing");
                        self.method = FillMethod::Write;
                        continue;
                    }
                    // Past the largest file: try less, down to a block; then the file is full.
                    Err(libc::EFBIG) if self.method == FillMethod::Fallocate && len > 4096 => {
                        len = (len / 2).div_ceil(4096) * 4096;
                        continue;
                    }
                    Err(libc::EFBIG) if *size > 0 => self.cap = *size,
                    // Less room than measured: others wrote meanwhile, or the filesystem took
                    // blocks of its own for the file's extents. Try less, down to a block;
                    // then the filesystem is full, the most a fill can do: `fill` measures
                    // and corrects from there (shrinking if others' writes overshot).
                    Err(libc::ENOSPC) if len > 4096 => {
                        len = (len / 2).div_ceil(4096) * 4096;
                        continue;
                    }
                    Err(libc::ENOSPC) => {
                        tracing::info!(file = %path(), "the filesystem is full");
                        return Ok(());
                    }
                    Err(errno) => {
                        return Err(Error::io(
                            format!("filling {}", path()),
                            io::Error::from_raw_os_error(errno),
                        ));
                    }
                }
                break;
            }
        }
        Ok(())
    }

    /// Gives back `n` bytes: shortens the last file, removing those that would be empty.
    fn shrink(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let last = self.open.len();
            let Some((file, size)) = self.open.last_mut() else {
                return Ok(());
            };
            if *size <= n {
                n -= *size;
                self.open.pop();
                let path = self.armed.file(last as u32 - 1);
                std::fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
            } else {
                *size -= n;
                file.set_len(*size)
                    .ctx(|| format!("shortening {}", self.armed.file(last as u32 - 1).display()))?;
                n = 0;
            }
        }
        Ok(())
    }

    /// Flushes the files (so that the filesystem's counts include everything) and measures.
    fn measure(&self, calls: &mut impl Calls) -> Result<FsSpace> {
        for (i, (file, _)) in self.open.iter().enumerate() {
            file.sync_all()
                .ctx(|| format!("syncing {}", self.armed.file(i as u32).display()))?;
        }
        calls.space()
    }

    /// Makes the files' names durable.
    fn finish(&self) -> Result<()> {
        File::open(&self.armed.dir)
            .and_then(|d| d.sync_all())
            .ctx(|| format!("syncing {}", self.armed.dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    const BLOCK: u64 = 4096;

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!(
                "chaos-fill-unit-{}-{tag}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Scratch(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A filesystem simulated over sparse files: used space is `base` plus each fill file's
    /// size in blocks plus `overhead` blocks of metadata per started `per_overhead` bytes.
    struct Fake {
        dir: PathBuf,
        base: u64,
        total: u64,
        reserved: u64,
        /// Largest file (EFBIG beyond).
        max_file: u64,
        fallocate: bool,
        overhead: u64,
        per_overhead: u64,
        /// Fail with this errno once this many bytes were asked for.
        fail_after: Option<(u64, i32)>,
        asked: u64,
        calls: u32,
    }

    impl Fake {
        fn new(dir: &Path) -> Fake {
            Fake {
                dir: dir.to_owned(),
                base: 100 * BLOCK,
                total: 1000 * BLOCK,
                reserved: 50 * BLOCK,
                max_file: u64::MAX,
                fallocate: true,
                overhead: 0,
                per_overhead: 1,
                fail_after: None,
                asked: 0,
                calls: 0,
            }
        }

        fn files(&self) -> Vec<(String, u64)> {
            let mut v: Vec<_> = std::fs::read_dir(&self.dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().unwrap().size(),
                    )
                })
                .collect();
            v.sort();
            v
        }

        fn extend(&mut self, file: &File, offset: u64, len: u64) -> io::Result<u64> {
            self.calls += 1;
            if offset >= self.max_file {
                return Err(io::Error::from_raw_os_error(libc::EFBIG));
            }
            self.asked += len;
            if let Some((n, errno)) = self.fail_after
                && self.asked > n
            {
                return Err(io::Error::from_raw_os_error(errno));
            }
            let end = offset + len;
            file.set_len(end.max(file.metadata()?.size()))?;
            Ok(len)
        }
    }

    impl Calls for Fake {
        fn fallocate(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
            if !self.fallocate {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            if offset + len > self.max_file {
                self.calls += 1;
                return Err(io::Error::from_raw_os_error(libc::EFBIG));
            }
            self.extend(file, offset, len).map(drop)
        }

        fn write(&mut self, file: &File, offset: u64, len: u64) -> io::Result<u64> {
            let len = len
                .min(WRITE_CHUNK as u64)
                .min(self.max_file.saturating_sub(offset).max(1));
            self.extend(file, offset, len)
        }

        fn space(&mut self) -> Result<FsSpace> {
            let data: u64 = self.files().iter().map(|(_, s)| s.div_ceil(BLOCK)).sum();
            let meta = self.overhead * (data * BLOCK).div_ceil(self.per_overhead);
            let used = self.base + data * BLOCK + meta * BLOCK;
            Ok(FsSpace {
                total: self.total,
                used,
                avail: (self.total - used).saturating_sub(self.reserved),
                block: BLOCK,
            })
        }
    }

    fn armed(dir: &Path, amount: FillAmount) -> FillArmed {
        prepare(
            "f-0badcafe",
            &FillPlan {
                dir: dir.to_owned(),
                amount,
                space: FsSpace {
                    total: 0,
                    used: 0,
                    avail: 0,
                    block: BLOCK,
                },
                bytes: 0,
            },
        )
        .unwrap()
    }

    #[test]
    fn names_are_the_fault_s_and_only_its() {
        let a = armed(Path::new("/data"), FillAmount::Bytes(1));
        assert_eq!(a.file(0), Path::new("/data/.chaos-fill-f-0badcafe"));
        assert_eq!(a.file(3), Path::new("/data/.chaos-fill-f-0badcafe.3"));
        for yes in [".chaos-fill-f-0badcafe", ".chaos-fill-f-0badcafe.12"] {
            assert!(a.owns(yes.as_bytes()), "{yes}");
        }
        for no in [
            ".chaos-fill-f-0badcafe.",
            ".chaos-fill-f-0badcafe.1x",
            ".chaos-fill-f-0badcafe0",
            ".chaos-fill-f-0badcaf",
            "chaos-fill-f-0badcafe",
        ] {
            assert!(!a.owns(no.as_bytes()), "{no}");
        }
        let plan = FillPlan {
            dir: "/data".into(),
            amount: FillAmount::Bytes(1),
            space: FsSpace {
                total: 0,
                used: 0,
                avail: 0,
                block: 1,
            },
            bytes: 1,
        };
        assert!(prepare("../x", &plan).is_err());
        assert!(prepare("", &plan).is_err());
    }

    #[test]
    fn fills_to_the_block_and_corrects_for_metadata() {
        let s = Scratch::new("meta");
        let mut fake = Fake::new(&s.0);
        // One block of metadata per 64 blocks of data.
        fake.overhead = 1;
        fake.per_overhead = 64 * BLOCK;
        let mut a = armed(&s.0, FillAmount::Free(100 * BLOCK + 10));
        apply_with(&mut a, &mut fake).unwrap();
        let space = fake.space().unwrap();
        // Asked to leave 100 blocks and 10 bytes: whole blocks, so 100 blocks.
        assert_eq!(space.avail, 100 * BLOCK, "{space:?}");
        assert_eq!(a.avail_after, space.avail);
        assert_eq!(a.taken, space.used - 100 * BLOCK);
        assert_eq!((a.files, a.method), (1, FillMethod::Fallocate));
        disarm(&a).unwrap();
        assert!(fake.files().is_empty());
        // Percent 100 takes what unprivileged users could use, not the reserved blocks.
        let mut a = armed(&s.0, FillAmount::Percent(100.0));
        apply_with(&mut a, &mut fake).unwrap();
        assert_eq!(fake.space().unwrap().avail, 0);
        assert_eq!(fake.space().unwrap().used, 1000 * BLOCK - 50 * BLOCK);
        disarm(&a).unwrap();
    }

    #[test]
    fn splits_into_files_as_large_as_the_filesystem_allows() {
        let s = Scratch::new("efbig");
        let mut fake = Fake::new(&s.0);
        fake.max_file = 30 * BLOCK + 100;
        let mut a = armed(&s.0, FillAmount::Bytes(100 * BLOCK));
        apply_with(&mut a, &mut fake).unwrap();
        let files = fake.files();
        assert_eq!(files.len(), 4, "{files:?}");
        assert_eq!(a.files, 4);
        assert!(files.iter().all(|(_, size)| *size <= fake.max_file));
        assert_eq!(files.iter().map(|(_, s)| s).sum::<u64>(), 100 * BLOCK);
        assert_eq!(files[0].0, ".chaos-fill-f-0badcafe");
        assert_eq!(files[3].0, ".chaos-fill-f-0badcafe.3");
        assert_eq!(a.taken, 100 * BLOCK);
        // Removed by name, even with a stranger beside them; twice is fine.
        std::fs::write(s.0.join(".chaos-fill-f-00000000"), b"not ours").unwrap();
        disarm(&a).unwrap();
        disarm(&a).unwrap();
        assert_eq!(fake.files().len(), 1);
    }

    #[test]
    fn writes_where_fallocate_is_unsupported() {
        let s = Scratch::new("write");
        let mut fake = Fake::new(&s.0);
        fake.fallocate = false;
        fake.total = 4000 * BLOCK;
        fake.max_file = 1000 * BLOCK;
        let mut a = armed(&s.0, FillAmount::Bytes(1500 * BLOCK));
        apply_with(&mut a, &mut fake).unwrap();
        assert_eq!(a.method, FillMethod::Write);
        assert_eq!(a.files, 2);
        assert_eq!(a.taken, 1500 * BLOCK);
        disarm(&a).unwrap();
    }

    #[test]
    fn an_error_midway_leaves_nothing() {
        let s = Scratch::new("eio");
        let mut fake = Fake::new(&s.0);
        fake.max_file = 10 * BLOCK;
        fake.fail_after = Some((25 * BLOCK, libc::EIO));
        let mut a = armed(&s.0, FillAmount::Bytes(100 * BLOCK));
        let e = apply_with(&mut a, &mut fake).unwrap_err().to_string();
        assert!(
            e.contains("filling") && e.contains("Input/output error"),
            "{e}"
        );
        assert!(fake.files().is_empty(), "{:?}", fake.files());
        // Too much for the space now: refused before anything is made.
        let mut fake = Fake::new(&s.0);
        let mut a = armed(&s.0, FillAmount::Bytes(2000 * BLOCK));
        let e = apply_with(&mut a, &mut fake).unwrap_err().to_string();
        assert!(e.starts_with("invalid bytes:"), "{e}");
        assert_eq!(fake.calls, 0);
    }

    #[test]
    fn less_room_than_measured_fills_the_filesystem() {
        // The filesystem refuses more than 25 blocks, though it said 100 were free: the fill
        // stops there, armed, with what it could take.
        let s = Scratch::new("enospc");
        let mut fake = Fake::new(&s.0);
        fake.max_file = 10 * BLOCK;
        fake.fail_after = Some((25 * BLOCK, libc::ENOSPC));
        let mut a = armed(&s.0, FillAmount::Bytes(100 * BLOCK));
        apply_with(&mut a, &mut fake).unwrap();
        let taken: u64 = fake.files().iter().map(|(_, size)| size).sum();
        assert!(
            (20 * BLOCK..=25 * BLOCK).contains(&taken),
            "{taken} bytes: {:?}",
            fake.files()
        );
        assert_eq!(a.taken, taken);
        disarm(&a).unwrap();
        assert!(fake.files().is_empty());
    }

    #[test]
    fn disarm_finds_what_a_crash_left() {
        let s = Scratch::new("crash");
        let a = armed(&s.0, FillAmount::Bytes(1));
        for n in [0, 1, 2, 7] {
            std::fs::write(a.file(n), b"x").unwrap();
        }
        std::fs::create_dir(a.file(3)).unwrap();
        disarm(&a).unwrap();
        let left: Vec<_> = std::fs::read_dir(&s.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, vec![a.file(3)], "a directory is not a fill file");
        let gone = armed(&s.0.join("missing"), FillAmount::Bytes(1));
        disarm(&gone).unwrap();
    }
}
