//! Network namespaces: resolving a user's `--netns` and running work inside one.
//!
//! Namespaces are per thread, so work that must see another namespace's interfaces (name lookups,
//! netlink, TC attach) runs on a short-lived thread that joins it; the calling thread, and every
//! other thread of a library user, stay where they are.

use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{Error, IoContext, Result};

/// A network namespace, named by a file and identified by its cookie.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetNs {
    /// `/run/netns/NAME`, `/proc/PID/ns/net` or any bind mount of a netns.
    pub path: PathBuf,
    /// Equal for two paths naming the same namespace, different for two namespaces that
    /// existed at different times.
    pub id: NsId,
}

/// Identity of a network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsId {
    /// `SO_NETNS_COOKIE` (5.14+): unique for the whole uptime.
    Cookie(u64),
    /// Device and inode of the nsfs file, on older kernels. Inodes are recycled once a
    /// namespace is gone, so this identity holds only while the namespace lives.
    Inode(u64, u64),
}

/// The calling thread's namespace identity: its cookie, or the nsfs inode of `path`.
fn identify(path: &Path) -> Result<NsId> {
    if let Some(cookie) = cookie() {
        return Ok(NsId::Cookie(cookie));
    }
    let meta = std::fs::metadata(path).ctx(|| format!("reading {}", path.display()))?;
    Ok(NsId::Inode(meta.dev(), meta.ino()))
}

/// `SO_NETNS_COOKIE` of the calling thread's network namespace, where the kernel has it.
fn cookie() -> Option<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // Any socket of the namespace answers; the wildcard address exists even with `lo` down.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
        .ok()?;
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let ret = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    (ret == 0).then_some(value)
}

impl NetNs {
    /// Resolves `NAME` (under /run/netns) or a path; `field` names the spec field for errors.
    pub fn resolve(name_or_path: &str, field: &'static str) -> Result<NetNs> {
        let path = if name_or_path.contains('/') {
            PathBuf::from(name_or_path)
        } else {
            Path::new("/run/netns").join(name_or_path)
        };
        let fix = "give a name from `ip netns list` or a path such as /proc/PID/ns/net";
        if let Err(e) = std::fs::metadata(&path) {
            return Err(Error::invalid(
                field,
                format!(
                    "no network namespace {name_or_path} ({}: {e})",
                    path.display()
                ),
                fix,
            ));
        }
        // Joining it is the only real proof that it is a network namespace.
        let id = in_namespace(&path, || identify(&path)).map_err(|e| {
            Error::invalid(
                field,
                format!("{name_or_path} is not a network namespace we can enter: {e}"),
                fix,
            )
        })?;
        Ok(NetNs { path, id })
    }

    /// The namespace of this process.
    pub fn current() -> Result<NetNs> {
        let path = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        let id = identify(&path)?;
        Ok(NetNs { path, id })
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        in_namespace(&self.path, f)
    }
}

fn in_namespace<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    on_thread(move || {
        let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .ctx(|| format!("entering network namespace {}", path.display()))?;
        f()
    })
}

/// Runs `f` inside `ns`, or in the caller's namespace (on the same kind of thread) when `None`.
pub fn run_in<T: Send>(ns: Option<&NetNs>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    match ns {
        Some(ns) => ns.run(f),
        None => on_thread(f),
    }
}

/// Runs `f` on a thread inside a new, empty network namespace that disappears with the thread.
/// The probe uses it to try TC and qdiscs on a private `lo`, never on the host's interfaces.
pub fn run_in_scratch<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    on_thread(move || {
        unshare(CloneFlags::CLONE_NEWNET).ctx(|| "creating a scratch network namespace")?;
        f()
    })
}

fn on_thread<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}
