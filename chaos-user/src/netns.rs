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

/// A network namespace, identified by the file that names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetNs {
    /// `/run/netns/NAME`, `/proc/PID/ns/net` or any bind mount of a netns.
    pub path: PathBuf,
    /// Device and inode of the namespace: equal for two paths naming the same namespace.
    pub id: (u64, u64),
}

impl NetNs {
    /// Resolves `NAME` (under /run/netns) or a path; `field` names the spec field for errors.
    pub fn resolve(name_or_path: &str, field: &'static str) -> Result<NetNs> {
        let path = if name_or_path.contains('/') {
            PathBuf::from(name_or_path)
        } else {
            Path::new("/run/netns").join(name_or_path)
        };
        let meta = std::fs::metadata(&path).map_err(|e| {
            Error::invalid(
                field,
                format!(
                    "no network namespace {name_or_path} ({}: {e})",
                    path.display()
                ),
                "give a name from `ip netns list` or a path such as /proc/PID/ns/net",
            )
        })?;
        let ns = NetNs {
            path,
            id: (meta.dev(), meta.ino()),
        };
        // Joining it is the only real proof that it is a network namespace.
        ns.run(|| Ok(())).map_err(|e| {
            Error::invalid(
                field,
                format!("{name_or_path} is not a network namespace we can enter: {e}"),
                "give a name from `ip netns list` or a path such as /proc/PID/ns/net",
            )
        })?;
        Ok(ns)
    }

    /// The namespace of this process.
    pub fn current() -> Result<NetNs> {
        let path = PathBuf::from("/proc/self/ns/net");
        let meta = std::fs::metadata(&path).ctx(|| "reading /proc/self/ns/net")?;
        Ok(NetNs {
            path: PathBuf::from(format!("/proc/{}/ns/net", std::process::id())),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = &self.path;
        on_thread(move || {
            let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
            setns(&file, CloneFlags::CLONE_NEWNET)
                .ctx(|| format!("entering network namespace {}", path.display()))?;
            f()
        })
    }
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
