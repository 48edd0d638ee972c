//! Named network namespaces, compatible with `ip netns` (bind mounts under `/run/netns`).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::{ChildProcess, unique_name};

/// Where `ip netns` keeps its namespace bind mounts.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace made for a test, named `chaos-t-<pid>-<n>` and visible to
/// `ip netns list`. `lo` is up. Drop kills every process still inside it and deletes it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl NetNs {
    /// Makes a new namespace with a unique name and brings `lo` up.
    pub fn new() -> io::Result<Self> {
        Self::create(&unique_name())
    }

    fn create(name: &str) -> io::Result<Self> {
        ensure_run_dir()?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))?;
        // unshare() on a thread of our own: the test's thread keeps its namespace, and the bind
        // mount keeps the new namespace alive after that thread ends.
        let bound = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<()> {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io::Error::other(format!("unshare(CLONE_NEWNET): {e}")))?;
                let tid = nix::unistd::gettid();
                let own = format!("/proc/self/task/{tid}/ns/net");
                mount(
                    Some(own.as_str()),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| io::Error::other(format!("bind {own} on {}: {e}", path.display())))
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        });
        if let Err(e) = bound {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let fd = match File::open(&path) {
            Ok(f) => Arc::new(OwnedFd::from(f)),
            Err(e) => {
                remove_bind(&path);
                return Err(e);
            }
        };
        let ns = NetNs {
            name: name.to_owned(),
            path,
            fd,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of its bind mount, `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inode number of the namespace (what `/proc/<pid>/ns/net` links to as `net:[<ino>]`).
    pub fn inode(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))?.ino())
    }

    /// Runs `f` inside the namespace on a dedicated thread (which bears the caller's thread name,
    /// so skips and logs name the test) and returns its result. A panic in `f` is resumed on the
    /// caller's thread. Sockets made inside `f` stay in the namespace after it returns.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.fd.as_fd();
        let mut builder = std::thread::Builder::new();
        if let Some(name) = std::thread::current().name() {
            builder = builder.name(name.to_owned());
        }
        std::thread::scope(|s| {
            let handle = builder
                .spawn_scoped(s, move || {
                    setns(fd, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
                    f()
                })
                .expect("spawn a thread");
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Moves the calling thread into the namespace until the returned guard is dropped. Prefer
    /// [`NetNs::run`]; this suits code that must run on the test's own thread.
    pub fn enter(&self) -> io::Result<NetNsGuard> {
        let original = OwnedFd::from(File::open(format!(
            "/proc/self/task/{}/ns/net",
            nix::unistd::gettid()
        ))?);
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(NetNsGuard {
            original,
            _not_send: PhantomData,
        })
    }

    /// A [`Command`] that runs inside the namespace (like `ip netns exec <name>`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_with_fd(self.fd.clone(), program)
    }

    /// Runs `argv` inside the namespace and returns its stdout; fails on a non-zero exit.
    pub fn exec(&self, argv: &[&str]) -> io::Result<String> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::other("empty argv"))?;
        let mut cmd = self.command(program);
        cmd.args(args);
        crate::cmd::run(&mut cmd)
    }

    /// Starts `cmd` inside the namespace; the process is killed and reaped when the returned
    /// guard drops (and killed, at the latest, when the namespace drops).
    pub fn spawn(&self, cmd: Command) -> io::Result<ChildProcess> {
        ChildProcess::builder(cmd).netns(self).spawn()
    }

    pub(crate) fn fd(&self) -> Arc<OwnedFd> {
        self.fd.clone()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(ino) = self.inode() {
            kill_processes_in(ino);
        }
        remove_bind(&self.path);
    }
}

/// Returned by [`NetNs::enter`]: puts the thread back into its original namespace on drop.
#[derive(Debug)]
pub struct NetNsGuard {
    original: OwnedFd,
    _not_send: PhantomData<*const ()>,
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Staying in the test namespace would make later code act on the wrong world.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

/// A [`Command`] that runs inside the namespace named `name` under `/run/netns` (made by us or
/// by `ip netns add`).
pub fn command_in_netns(name: &str, program: impl AsRef<OsStr>) -> io::Result<Command> {
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let fd = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(command_with_fd(Arc::new(OwnedFd::from(fd)), program))
}

fn command_with_fd(fd: Arc<OwnedFd>, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: setns is a plain syscall, async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Makes `/run/netns` and, as iproute2 does, a shared mount point so that namespaces made later
/// are seen from other mount namespaces too.
fn ensure_run_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR)?;
    let flags = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(
        None::<&str>,
        NETNS_RUN_DIR,
        Some("none"),
        flags,
        None::<&str>,
    )
    .is_ok()
    {
        return Ok(());
    }
    // Not a mount point yet: bind it on itself, then make it shared.
    mount(
        Some(NETNS_RUN_DIR),
        NETNS_RUN_DIR,
        Some("none"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("bind {NETNS_RUN_DIR} on itself: {e}")))?;
    mount(
        None::<&str>,
        NETNS_RUN_DIR,
        Some("none"),
        flags,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("make {NETNS_RUN_DIR} shared: {e}")))
}

/// Unmounts and removes a namespace bind mount.
pub(crate) fn remove_bind(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// SIGKILLs every process (other than this one) whose network namespace has inode `ino`, and
/// waits up to 2 s for them to leave it. Processes are not reaped here: their
/// [`ChildProcess`] guards do that.
pub(crate) fn kill_processes_in(ino: u64) {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids = processes_in(ino, me);
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn processes_in(ino: u64, me: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid as u32 != me)
        // A zombie has no namespaces: reading its link fails, so it no longer counts.
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .ok()
                .map(|m| m.ino())
                == Some(ino)
        })
        .collect()
}
