//! Turns the kernel's events (`chaos_common::discover`) into what the processes did: the files
//! they wrote and synced, with counts, the addresses they connected and bound to, the DNS
//! servers they asked. Pure bookkeeping: where a descriptor's file is not known from an open
//! seen, it asks a [`Resolve`] (in production `/proc/PID/fd/N`, in tests a table).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use chaos_common::discover::{DiscEvent, kind};

use crate::seccomp::notify::normalize;
use serde::{Deserialize, Serialize};

/// `AT_FDCWD`.
const AT_FDCWD: i32 = -100;
/// Open flags that mean the file is opened to be changed: `O_WRONLY`, `O_RDWR`, `O_CREAT`,
/// `O_TRUNC`, `O_APPEND`.
const WRITE_FLAGS: u32 = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000;
/// `O_DIRECTORY`.
const O_DIRECTORY: u32 = 0o200000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Where the tracker learns what it has not seen opened.
pub trait Resolve {
    /// The file behind descriptor `fd` of process `tgid`, now (`/proc/TGID/fd/FD`).
    fn fd(&self, tgid: u32, fd: i32) -> Option<PathBuf>;
    /// The working directory of process `tgid`.
    fn cwd(&self, tgid: u32) -> Option<PathBuf>;
    /// `path` with the symbolic links of its directory resolved, as `/proc/PID/fd` shows paths
    /// (`pg_wal` linked to another disk); `None` when the directory is gone.
    fn real(&self, _path: &Path) -> Option<PathBuf> {
        None
    }
}

/// What was done to one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileUse {
    /// Opens for writing (write, read-write, create, truncate or append).
    pub opens_for_write: u64,
    /// write-family calls.
    pub writes: u64,
    /// fsync, fdatasync and sync_file_range calls.
    pub syncs: u64,
    /// Opened as a directory (a database syncs its directories after creating files in them).
    pub directory: bool,
}

/// What the events told, by file and by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracker {
    /// Files written, synced or opened for writing, by absolute path.
    pub files: BTreeMap<PathBuf, FileUse>,
    /// connect(2) destinations (IP sockets), with how many times.
    pub connects: BTreeMap<SocketAddr, u64>,
    /// bind(2) addresses (IP sockets).
    pub binds: BTreeSet<SocketAddr>,
    /// DNS servers queried (connect or sendto to port 53), with how many times.
    pub dns: BTreeMap<IpAddr, u64>,
    /// Processes born of watched ones during the watch.
    pub new_processes: BTreeSet<u32>,
    /// Every process an event came from.
    pub active: BTreeSet<u32>,
    /// Events seen.
    pub events: u64,
    /// The file behind each open descriptor, as learnt.
    fds: HashMap<(u32, i32), Option<PathBuf>>,
}

/// A path worth reporting: absolute, and not a device, a kernel file system or a socket.
fn reportable(path: &Path) -> bool {
    path.is_absolute()
        && !["/dev", "/proc", "/sys"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// The NUL-terminated path of an event.
fn event_path(e: &DiscEvent) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let end = e.path.iter().position(|b| *b == 0).unwrap_or(e.path.len());
    PathBuf::from(std::ffi::OsStr::from_bytes(&e.path[..end]))
}

/// The IP socket address of an event, if it has one.
fn event_addr(e: &DiscEvent) -> Option<SocketAddr> {
    let ip = match e.family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(e.addr);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, e.port))
}

impl Tracker {
    /// Takes one event in.
    pub fn event(&mut self, e: &DiscEvent, resolve: &dyn Resolve) {
        self.events += 1;
        self.active.insert(e.tgid);
        match e.kind {
            kind::OPEN => {
                let given = event_path(e);
                let base = if given.is_absolute() {
                    None
                } else if e.dirfd == AT_FDCWD {
                    resolve.cwd(e.tgid)
                } else {
                    self.file_of(e.tgid, e.dirfd, resolve)
                };
                let path = match base {
                    Some(b) => normalize(&b.join(&given)),
                    None if given.is_absolute() => normalize(&given),
                    None => {
                        self.fds.insert((e.tgid, e.fd), None);
                        return;
                    }
                };
                let path = resolve.real(&path).unwrap_or(path);
                let keep = reportable(&path);
                if keep && e.flags & WRITE_FLAGS != 0 {
                    self.files.entry(path.clone()).or_default().opens_for_write += 1;
                }
                if keep && e.flags & O_DIRECTORY != 0 {
                    self.files.entry(path.clone()).or_default().directory = true;
                }
                self.fds.insert((e.tgid, e.fd), keep.then_some(path));
            }
            kind::WRITE | kind::SYNC => {
                // The counts come with DONE or at the end; this makes sure the descriptor's
                // file is learnt while it is open.
                if let Some(path) = self.file_of(e.tgid, e.fd, resolve) {
                    self.files.entry(path).or_default();
                }
            }
            kind::DONE => {
                let path = self.file_of(e.tgid, e.fd, resolve);
                self.fds.remove(&(e.tgid, e.fd));
                if let Some(path) = path {
                    self.add_counts(path, e.writes, e.syncs);
                }
            }
            kind::DUP => {
                let file = self.file_of(e.tgid, e.dirfd, resolve);
                self.fds.insert((e.tgid, e.fd), file);
            }
            kind::CONNECT => {
                if let Some(a) = event_addr(e) {
                    if a.port() == 53 {
                        *self.dns.entry(a.ip()).or_default() += 1;
                    } else if a.port() != 0 {
                        *self.connects.entry(a).or_default() += 1;
                    }
                }
            }
            kind::BIND => {
                if let Some(a) = event_addr(e) {
                    self.binds.insert(a);
                }
            }
            kind::DNS => {
                if let Some(a) = event_addr(e) {
                    *self.dns.entry(a.ip()).or_default() += 1;
                }
            }
            kind::NEW_PROCESS => {
                self.new_processes.insert(e.tgid);
            }
            _ => {}
        }
    }

    /// Counts read from the kernel's table at the end, for descriptors still open.
    pub fn open_counts(&mut self, tgid: u32, fd: i32, writes: u64, syncs: u64, r: &dyn Resolve) {
        if let Some(path) = self.file_of(tgid, fd, r) {
            self.add_counts(path, writes, syncs);
        }
    }

    fn add_counts(&mut self, path: PathBuf, writes: u64, syncs: u64) {
        let u = self.files.entry(path).or_default();
        u.writes += writes;
        u.syncs += syncs;
    }

    /// The reportable file behind `fd` of `tgid`: from the open seen, or asked and remembered.
    fn file_of(&mut self, tgid: u32, fd: i32, resolve: &dyn Resolve) -> Option<PathBuf> {
        self.fds
            .entry((tgid, fd))
            .or_insert_with(|| resolve.fd(tgid, fd).filter(|p| reportable(p)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaos_common::discover::DISC_PATH_LEN;

    /// A fixed world: descriptors and working directories.
    #[derive(Default)]
    struct Table {
        fds: HashMap<(u32, i32), PathBuf>,
        cwd: HashMap<u32, PathBuf>,
    }

    impl Resolve for Table {
        fn fd(&self, tgid: u32, fd: i32) -> Option<PathBuf> {
            self.fds.get(&(tgid, fd)).cloned()
        }
        fn cwd(&self, tgid: u32) -> Option<PathBuf> {
            self.cwd.get(&tgid).cloned()
        }
        fn real(&self, path: &Path) -> Option<PathBuf> {
            // One link: /pg/data/pg_wal -> /wal.
            path.strip_prefix("/pg/data/pg_wal")
                .ok()
                .map(|rest| Path::new("/wal").join(rest))
        }
    }

    fn ev(kind: u32, tgid: u32, fd: i32) -> DiscEvent {
        DiscEvent {
            kind,
            tgid,
            fd,
            flags: 0,
            dirfd: AT_FDCWD,
            family: 0,
            port: 0,
            writes: 0,
            syncs: 0,
            addr: [0; 16],
            path: [0; DISC_PATH_LEN],
        }
    }

    fn open(tgid: u32, fd: i32, path: &str, flags: u32) -> DiscEvent {
        let mut e = ev(kind::OPEN, tgid, fd);
        e.flags = flags;
        e.path[..path.len()].copy_from_slice(path.as_bytes());
        e
    }

    fn done(tgid: u32, fd: i32, writes: u64, syncs: u64) -> DiscEvent {
        let mut e = ev(kind::DONE, tgid, fd);
        e.writes = writes;
        e.syncs = syncs;
        e
    }

    #[test]
    fn relative_opens_are_made_absolute_and_counts_land_on_their_file() {
        let mut world = Table::default();
        world.cwd.insert(7, "/var/lib/redis".into());
        let mut t = Tracker::default();
        t.event(&open(7, 5, "appendonlydir/../aof.1", 0o1 | 0o2000), &world);
        t.event(&ev(kind::WRITE, 7, 5), &world);
        t.event(&ev(kind::SYNC, 7, 5), &world);
        t.event(&done(7, 5, 10, 9), &world);
        // The descriptor is reused for another file: counts do not follow the number.
        t.event(&open(7, 5, "/var/lib/redis/dump.rdb", 0o101), &world);
        t.event(&done(7, 5, 1, 1), &world);
        let aof = &t.files[Path::new("/var/lib/redis/aof.1")];
        assert_eq!((aof.opens_for_write, aof.writes, aof.syncs), (1, 10, 9));
        assert_eq!(t.files[Path::new("/var/lib/redis/dump.rdb")].writes, 1);
    }

    #[test]
    fn descriptors_opened_before_the_watch_are_resolved_and_devices_left_out() {
        let mut world = Table::default();
        world.fds.insert((3, 9), "/data/wal/000001".into());
        world.fds.insert((3, 1), "/dev/null".into());
        let mut t = Tracker::default();
        t.event(&ev(kind::WRITE, 3, 9), &world);
        t.event(&ev(kind::WRITE, 3, 1), &world);
        // The file is renamed away before the end: what was learnt at the first write stays.
        world.fds.clear();
        t.open_counts(3, 9, 100, 50, &world);
        t.open_counts(3, 1, 7, 0, &world);
        assert_eq!(t.files.len(), 1);
        assert_eq!(t.files[Path::new("/data/wal/000001")].syncs, 50);
    }

    #[test]
    fn directories_and_opens_relative_to_a_directory_descriptor() {
        let mut world = Table::default();
        world.fds.insert((4, 20), "/pg/data".into());
        let mut t = Tracker::default();
        let mut e = open(4, 21, "pg_wal", O_DIRECTORY);
        e.dirfd = 20;
        t.event(&e, &world);
        t.event(&done(4, 21, 0, 1), &world);
        // pg_wal is a link to another disk: the file is reported where it is, as /proc would.
        let d = &t.files[Path::new("/wal")];
        assert!(d.directory);
        assert_eq!((d.opens_for_write, d.syncs), (0, 1));
        t.event(&open(4, 22, "/pg/data/pg_wal/000001", 0o2), &world);
        assert!(t.files.contains_key(Path::new("/wal/000001")));
    }

    #[test]
    fn a_shell_redirection_writes_through_a_copy() {
        // `sh -c 'echo x >> out'`: open on 3, dup2(3, 1), close(3), write(1), exit.
        let world = Table::default();
        let mut t = Tracker::default();
        t.event(&open(9, 3, "/spool/out", 0o1 | 0o100 | 0o2000), &world);
        let mut dup = ev(kind::DUP, 9, 1);
        dup.dirfd = 3;
        t.event(&dup, &world);
        t.event(&ev(kind::WRITE, 9, 1), &world);
        // The process exits without closing: the count is read from the kernel's table.
        t.open_counts(9, 1, 1, 0, &world);
        let out = &t.files[Path::new("/spool/out")];
        assert_eq!((out.opens_for_write, out.writes), (1, 1));
    }

    #[test]
    fn connects_binds_and_dns() {
        let world = Table::default();
        let mut t = Tracker::default();
        let mut c = ev(kind::CONNECT, 1, 3);
        c.family = AF_INET;
        c.port = 5432;
        c.addr[..4].copy_from_slice(&[10, 0, 0, 7]);
        t.event(&c, &world);
        t.event(&c, &world);
        let mut d = c;
        d.port = 53;
        t.event(&d, &world);
        let mut s = ev(kind::DNS, 1, 4);
        s.family = AF_INET6;
        s.port = 53;
        s.addr = Ipv6Addr::LOCALHOST.octets();
        t.event(&s, &world);
        let mut b = ev(kind::BIND, 1, 5);
        b.family = AF_INET6;
        b.port = 6379;
        t.event(&b, &world);
        assert_eq!(t.connects[&"10.0.0.7:5432".parse().unwrap()], 2);
        assert_eq!(t.dns.len(), 2);
        assert!(t.binds.contains(&"[::]:6379".parse().unwrap()));
    }
}
