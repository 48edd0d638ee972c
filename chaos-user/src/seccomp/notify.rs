//! The supervisor of `chaos exec`: receives each notification of the seccomp listener, decides
//! (path prefix, after-N / every-N, max count, probability, deadline) and answers: `-errno` for a
//! fail, `SECCOMP_USER_NOTIF_FLAG_CONTINUE` to let the call run, now or, for a delay, when a
//! timer thread finds it due (so one delayed call never holds up the others).
//!
//! Paths are read from the caller's memory (`/proc/PID/mem`) and resolved against its working
//! directory or directory fd (`/proc/PID/cwd`, `/proc/PID/fd/N`); after reading, the
//! notification's id is checked again (`SECCOMP_IOCTL_NOTIF_ID_VALID`), since the pid may have
//! been reused meanwhile. The path check selects faults, it is not a security boundary: a call
//! let through with `CONTINUE` reads its arguments again, so another thread of the target could
//! change the path in between.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::fs::FileExt,
    },
    path::{Component, Path, PathBuf},
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use syscalls::Sysno;

use crate::{
    error::{Error, Result},
    injector::Counters,
    plan::{SyscallEffect, SyscallPlan},
};

/// Longest path read from a target's memory (`PATH_MAX`).
const PATH_MAX: usize = 4096;

/// `AT_FDCWD`, as the low 32 bits of a syscall argument.
const AT_FDCWD: i32 = -100;

/// The sizes of the notification structures this kernel uses (`SECCOMP_GET_NOTIF_SIZES`). Also
/// tells whether the kernel has seccomp user notification at all (5.0+).
pub fn notif_sizes() -> Result<libc::seccomp_notif_sizes> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: the kernel writes one `seccomp_notif_sizes` into `sizes`, which we own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0 as libc::c_uint,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if ret < 0 {
        return Err(Error::Unsupported {
            what: "run chaos exec".into(),
            why: format!(
                "seccomp user notification is unavailable (SECCOMP_GET_NOTIF_SIZES: {})",
                io::Error::last_os_error()
            ),
        });
    }
    Ok(sizes)
}

/// One notification: a call of a planned syscall, waiting for our answer.
#[derive(Clone, Copy, Debug)]
pub struct Notification {
    /// The kernel's cookie for this call.
    pub id: u64,
    /// The calling thread (in our pid namespace).
    pub pid: u32,
    /// The syscall number.
    pub nr: i32,
    /// Its arguments.
    pub args: [u64; 6],
}

/// The answer to a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Let the call run (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    Continue,
    /// Return `-errno` without running it.
    Fail(i32),
}

/// The listener fd and the ioctls on it.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// 8-byte words of the buffers handed to the kernel (at least its own sizes and ours).
    notif_words: usize,
    resp_words: usize,
}

fn words(kernel: u16, ours: usize) -> usize {
    usize::from(kernel).max(ours).div_ceil(8)
}

impl Listener {
    /// Wraps a listener fd (from `SECCOMP_FILTER_FLAG_NEW_LISTENER`), with the kernel's sizes.
    pub fn new(fd: OwnedFd, sizes: libc::seccomp_notif_sizes) -> Listener {
        Listener {
            fd,
            notif_words: words(sizes.seccomp_notif, size_of::<libc::seccomp_notif>()),
            resp_words: words(
                sizes.seccomp_notif_resp,
                size_of::<libc::seccomp_notif_resp>(),
            ),
        }
    }

    /// Receives one notification; `None` if the caller went away between poll and receive.
    pub fn recv(&self) -> io::Result<Option<Notification>> {
        // The kernel wants a zeroed buffer (EINVAL otherwise, 5.5+).
        let mut buf = vec![0u64; self.notif_words];
        loop {
            // SAFETY: `buf` is at least as large as both the kernel's and libc's
            // `seccomp_notif`, zeroed, 8-byte aligned, and ours for the call.
            let ret = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    buf.as_mut_ptr(),
                )
            };
            if ret == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOENT) => return Ok(None),
                _ => return Err(e),
            }
        }
        // SAFETY: the buffer holds an initialised `seccomp_notif` (plain integers) at its start.
        let n = unsafe { std::ptr::read(buf.as_ptr().cast::<libc::seccomp_notif>()) };
        Ok(Some(Notification {
            id: n.id,
            pid: n.pid,
            nr: n.data.nr,
            args: n.data.args,
        }))
    }

    /// Whether notification `id` still waits (its caller did not die or get interrupted).
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: the ioctl reads one u64 we own.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &id as *const u64,
            )
        };
        ret == 0
    }

    /// Answers notification `id`. A caller that went away meanwhile (`ENOENT`) is not an error.
    pub fn answer(&self, id: u64, answer: Answer) -> io::Result<()> {
        let mut buf = vec![0u64; self.resp_words];
        let resp = libc::seccomp_notif_resp {
            id,
            val: 0,
            error: match answer {
                Answer::Continue => 0,
                Answer::Fail(errno) => -errno,
            },
            flags: match answer {
                Answer::Continue => libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                Answer::Fail(_) => 0,
            },
        };
        // SAFETY: the buffer is at least `size_of::<seccomp_notif_resp>()` bytes, 8-aligned.
        unsafe { std::ptr::write(buf.as_mut_ptr().cast::<libc::seccomp_notif_resp>(), resp) };
        loop {
            // SAFETY: `buf` holds the response and is as large as the kernel's structure.
            let ret = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_SEND,
                    buf.as_mut_ptr(),
                )
            };
            if ret == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOENT) => return Ok(()),
                _ => return Err(e),
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A small PRNG (SplitMix64) for the probability: the decisions need to be uniform and cheap,
/// not secret, and this keeps the `rand` crate out of the dependencies.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the kernel (`getrandom`), or the clock if that fails.
    pub fn from_entropy() -> Rng {
        let mut seed = [0u8; 8];
        // SAFETY: the kernel writes at most 8 bytes into `seed`.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        if n == 8 {
            Rng(u64::from_ne_bytes(seed))
        } else {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Rng(t.as_nanos() as u64 ^ u64::from(std::process::id()))
        }
    }

    /// A fixed seed, for reproducible tests.
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `percent` / 100 (exactly never at 0, always at 100).
    pub fn chance(&mut self, percent: f64) -> bool {
        // 53 random bits -> [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 100.0 < percent
    }
}

/// What happens to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run it now.
    Continue,
    /// Return `-errno`.
    Fail(i32),
    /// Run it this late.
    Delay(Duration),
}

/// The counting and chance rules of a syscall fault, apart from the kernel.
///
/// Every notification is *seen*. Before the deadline, one whose path (if `path_prefix` is
/// given) lies under the prefix is *matched*. Matched calls number 1, 2, ...: the first `after`
/// run untouched; of the rest, every `every`th (the 1st, the `every+1`th, ...) is a candidate;
/// a candidate is *acted* on with probability `percent` while fewer than `max_count` were.
#[derive(Clone, Debug)]
pub struct Decider {
    effect: SyscallEffect,
    percent: f64,
    after: u64,
    every: u64,
    max_count: Option<u64>,
    deadline: Instant,
    rng: Rng,
    counters: Counters,
}

impl Decider {
    /// The rules of `plan`, in force until `deadline`.
    pub fn new(plan: &SyscallPlan, deadline: Instant, rng: Rng) -> Decider {
        Decider {
            effect: plan.effect,
            percent: plan.chance.percent,
            after: plan.after,
            every: plan.every.max(1),
            max_count: plan.max_count,
            deadline,
            rng,
            counters: Counters::default(),
        }
    }

    /// Judges one call at `now`; `selected` says whether its path is under the prefix (asked
    /// only before the deadline).
    pub fn judge(&mut self, now: Instant, selected: impl FnOnce() -> bool) -> Verdict {
        let c = &mut self.counters;
        c.seen += 1;
        if now >= self.deadline || !selected() {
            return Verdict::Continue;
        }
        c.matched += 1;
        let k = c.matched;
        if k <= self.after || !(k - self.after - 1).is_multiple_of(self.every) {
            return Verdict::Continue;
        }
        if self.max_count.is_some_and(|max| c.acted >= max) || !self.rng.chance(self.percent) {
            return Verdict::Continue;
        }
        c.acted += 1;
        match self.effect {
            SyscallEffect::Fail { errno } => Verdict::Fail(errno),
            SyscallEffect::Delay { latency } => Verdict::Delay(latency),
            // `exec` refuses these before anything starts.
            SyscallEffect::Signal { .. } => Verdict::Continue,
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

/// Where a call names its file: path arguments (with the directory fd they are relative to) or
/// a file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileArg {
    /// Path at argument `path`, relative to the directory fd at argument `dirfd` (None: cwd).
    Path { dirfd: Option<usize>, path: usize },
    /// The file descriptor at argument 0.
    Fd,
}

/// The file arguments of syscall `nr` (x86_64); empty for calls that name no file.
fn file_args(nr: i32) -> &'static [FileArg] {
    use FileArg::{Fd, Path};
    const CWD0: &[FileArg] = &[Path {
        dirfd: None,
        path: 0,
    }];
    const AT1: &[FileArg] = &[Path {
        dirfd: Some(0),
        path: 1,
    }];
    const CWD01: &[FileArg] = &[
        Path {
            dirfd: None,
            path: 0,
        },
        Path {
            dirfd: None,
            path: 1,
        },
    ];
    const AT13: &[FileArg] = &[
        Path {
            dirfd: Some(0),
            path: 1,
        },
        Path {
            dirfd: Some(2),
            path: 3,
        },
    ];
    const FD: &[FileArg] = &[Fd];
    let Some(s) = usize::try_from(nr).ok().and_then(Sysno::new) else {
        return &[];
    };
    match s {
        Sysno::open | Sysno::creat | Sysno::truncate | Sysno::unlink | Sysno::mkdir => CWD0,
        Sysno::rmdir => CWD0,
        Sysno::rename => CWD01,
        Sysno::openat | Sysno::openat2 | Sysno::unlinkat | Sysno::mkdirat => AT1,
        Sysno::renameat | Sysno::renameat2 => AT13,
        Sysno::read
        | Sysno::write
        | Sysno::pread64
        | Sysno::pwrite64
        | Sysno::readv
        | Sysno::writev
        | Sysno::preadv
        | Sysno::pwritev
        | Sysno::preadv2
        | Sysno::pwritev2
        | Sysno::fsync
        | Sysno::fdatasync
        | Sysno::sync_file_range
        | Sysno::ftruncate
        | Sysno::fallocate => FD,
        _ => &[],
    }
}

/// `path` with `.` and `..` applied, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Reads the NUL-terminated string at `addr` in the memory of `pid` (at most `PATH_MAX` bytes).
fn read_c_string(mem: &File, addr: u64) -> Option<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        // Stop at page ends: the next page may be unmapped.
        let chunk = (PAGE - at % PAGE) as usize;
        let mut buf = vec![0u8; chunk.min(PATH_MAX - out.len())];
        let n = mem.read_at(&mut buf, at).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Some(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    None
}

/// The files call `n` names, as absolute paths (what could not be read is left out).
fn call_paths(n: &Notification) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let proc = PathBuf::from(format!("/proc/{}", n.pid));
    let fd_link = |fd: i32| std::fs::read_link(proc.join(format!("fd/{fd}"))).ok();
    let mut mem = None;
    let mut out = Vec::new();
    for arg in file_args(n.nr) {
        match *arg {
            FileArg::Fd => {
                if let Some(p) = fd_link(n.args[0] as i32) {
                    out.push(p);
                }
            }
            FileArg::Path { dirfd, path } => {
                if mem.is_none() {
                    mem = File::open(proc.join("mem")).ok();
                }
                let Some(raw) = mem.as_ref().and_then(|m| read_c_string(m, n.args[path])) else {
                    continue;
                };
                let p = PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
                let p = if p.is_absolute() {
                    p
                } else {
                    let dir = match dirfd.map(|i| n.args[i] as i32) {
                        None | Some(AT_FDCWD) => std::fs::read_link(proc.join("cwd")).ok(),
                        Some(fd) => fd_link(fd),
                    };
                    match dir {
                        Some(d) => d.join(p),
                        None => continue,
                    }
                };
                out.push(normalize(&p));
            }
        }
    }
    out
}

/// Releases delayed calls when due, on its own thread.
#[derive(Debug)]
struct Delayer {
    tx: Option<mpsc::Sender<(Instant, u64)>>,
    thread: Option<JoinHandle<()>>,
}

impl Delayer {
    fn start(listener: Arc<Listener>) -> Result<Delayer> {
        let (tx, rx) = mpsc::channel::<(Instant, u64)>();
        let thread = std::thread::Builder::new()
            .name("chaos-delay".into())
            .spawn(move || {
                let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
                loop {
                    let next = match due.peek() {
                        None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                        Some(Reverse((at, _))) => {
                            rx.recv_timeout(at.saturating_duration_since(Instant::now()))
                        }
                    };
                    match next {
                        Ok(item) => due.push(Reverse(item)),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            // The supervisor is done: let whatever still waits run now.
                            for Reverse((_, id)) in due.drain() {
                                let _ = listener.answer(id, Answer::Continue);
                            }
                            return;
                        }
                    }
                    let now = Instant::now();
                    while due.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                        if let Some(Reverse((_, id))) = due.pop()
                            && let Err(e) = listener.answer(id, Answer::Continue)
                        {
                            tracing::warn!("releasing a delayed call: {e}");
                        }
                    }
                }
            })
            .map_err(|e| Error::io("starting the delay thread", e))?;
        Ok(Delayer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn delay(&self, id: u64, until: Instant) {
        if let Some(tx) = &self.tx {
            // The thread only ends once `tx` is dropped, so this cannot fail.
            let _ = tx.send((until, id));
        }
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers the notifications of one listener by the rules of a syscall plan.
#[derive(Debug)]
pub struct Supervisor {
    listener: Arc<Listener>,
    decider: Decider,
    /// The prefix as given and, if different, with its symlinks resolved.
    prefixes: Vec<PathBuf>,
    delayer: Option<Delayer>,
}

impl Supervisor {
    /// Supervises `listener` by `plan`'s rules until `deadline`, then lets every call run.
    pub fn new(listener: Listener, plan: &SyscallPlan, deadline: Instant) -> Result<Supervisor> {
        let listener = Arc::new(listener);
        let mut prefixes = Vec::new();
        if let Some(p) = &plan.path_prefix {
            prefixes.push(normalize(p));
            if let Ok(real) = std::fs::canonicalize(p)
                && !prefixes.contains(&real)
            {
                prefixes.push(real);
            }
        }
        let delayer = match plan.effect {
            SyscallEffect::Delay { .. } => Some(Delayer::start(listener.clone())?),
            _ => None,
        };
        Ok(Supervisor {
            listener,
            decider: Decider::new(plan, deadline, Rng::from_entropy()),
            prefixes,
            delayer,
        })
    }

    /// The listener, to poll.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Receives and answers one notification (call when the listener is readable).
    pub fn handle_one(&mut self) -> Result<()> {
        let Some(n) = self
            .listener
            .recv()
            .map_err(|e| Error::io("receiving a seccomp notification", e))?
        else {
            return Ok(());
        };
        let listener = &self.listener;
        let prefixes = &self.prefixes;
        let verdict = self.decider.judge(Instant::now(), || {
            if prefixes.is_empty() {
                return true;
            }
            let paths = call_paths(&n);
            // What we read belongs to the caller only if its call still waits (TOCTOU rule).
            listener.id_valid(n.id)
                && paths
                    .iter()
                    .any(|p| prefixes.iter().any(|pre| p.starts_with(pre)))
        });
        let answer = match verdict {
            Verdict::Continue => Answer::Continue,
            Verdict::Fail(errno) => Answer::Fail(errno),
            Verdict::Delay(latency) => {
                if let Some(d) = &self.delayer {
                    d.delay(n.id, Instant::now() + latency);
                    return Ok(());
                }
                Answer::Continue
            }
        };
        self.listener
            .answer(n.id, answer)
            .map_err(|e| Error::io("answering a seccomp notification", e))
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.decider.counters()
    }

    /// Lets every delayed call run now, stops the timer thread and gives the final counters.
    pub fn finish(mut self) -> Counters {
        drop(self.delayer.take());
        self.decider.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        plan::{Chance, Syscall, SyscallTarget},
        spec::SyscallAction,
    };

    fn plan(after: u64, every: u64, max_count: Option<u64>, percent: f64) -> SyscallPlan {
        SyscallPlan {
            action: SyscallAction::Fail,
            syscalls: vec![Syscall {
                name: "openat",
                nr: 257,
            }],
            effect: SyscallEffect::Fail { errno: 5 },
            chance: Chance::new(percent, 0.0),
            path_prefix: None,
            after,
            every,
            max_count,
            target: SyscallTarget::Exec,
            process_cgroup: None,
        }
    }

    fn acted_at(d: &mut Decider, calls: u64) -> Vec<u64> {
        let now = Instant::now();
        (1..=calls)
            .filter(|_| d.judge(now, || true) != Verdict::Continue)
            .collect()
    }

    #[test]
    fn after_every_and_max_count() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut d = Decider::new(&plan(3, 2, Some(3), 100.0), far, Rng::seeded(1));
        assert_eq!(acted_at(&mut d, 20), [4, 6, 8]);
        let c = d.counters();
        assert_eq!((c.seen, c.matched, c.acted), (20, 20, 3));
        let mut d = Decider::new(&plan(0, 1, None, 100.0), far, Rng::seeded(1));
        assert_eq!(acted_at(&mut d, 3), [1, 2, 3]);
        let mut d = Decider::new(&plan(0, 1, None, 0.0), far, Rng::seeded(1));
        assert!(acted_at(&mut d, 1000).is_empty());
    }

    #[test]
    fn unmatched_and_late_calls_run() {
        let now = Instant::now();
        let mut d = Decider::new(&plan(0, 1, None, 100.0), now, Rng::seeded(1));
        assert_eq!(d.judge(now, || true), Verdict::Continue, "deadline passed");
        let mut d = Decider::new(
            &plan(0, 1, None, 100.0),
            now + Duration::from_secs(60),
            Rng::seeded(1),
        );
        assert_eq!(d.judge(now, || false), Verdict::Continue);
        assert_eq!(d.judge(now, || true), Verdict::Fail(5));
        let c = d.counters();
        assert_eq!((c.seen, c.matched, c.acted), (2, 1, 1));
    }

    #[test]
    fn chance_is_near_its_percent() {
        let mut rng = Rng::seeded(42);
        let hits = (0..100_000).filter(|_| rng.chance(30.0)).count();
        // 99.9 % interval of Binomial(100000, 0.3): 30000 +- 3.29 * 144.9.
        assert!((29_523..=30_477).contains(&hits), "{hits}");
    }

    #[test]
    fn paths_are_compared_by_component() {
        assert_eq!(
            normalize(Path::new("/data/./a/../x")),
            PathBuf::from("/data/x")
        );
        assert_eq!(normalize(Path::new("/../data")), PathBuf::from("/data"));
        assert!(Path::new("/data/x").starts_with("/data"));
        assert!(!Path::new("/data/xy").starts_with("/data/x"));
        assert_eq!(file_args(257), file_args(Sysno::mkdirat.id()));
        assert_eq!(file_args(Sysno::fsync.id()), &[FileArg::Fd]);
        assert!(file_args(Sysno::connect.id()).is_empty());
    }

    #[test]
    fn reads_strings_from_own_memory() {
        let text = std::ffi::CString::new("/data/some/file").unwrap();
        let mem = File::open("/proc/self/mem").unwrap();
        let got = read_c_string(&mem, text.as_ptr() as u64).unwrap();
        assert_eq!(got, text.as_bytes());
    }
}
