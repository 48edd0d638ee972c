//! `chaos discover --pid PID [--seconds N]`: watches a running service with eBPF and proposes
//! the catalog's scenarios that apply to it, with their parameters filled in
//! (`docs/discover.md`).
//!
//! The flow: [`watch`] (kernel programs, ring buffer, `/proc` reads) -> [`tracker`] (events
//! into files, connections, DNS) -> [`Observation`] (what the service is and does: its
//! directories ranked by syncs and writes, devices, listening ports, clients, peers, DNS
//! servers) -> [`propose`] (catalog parameters filled from it, each with its evidence, and the
//! scenarios ready to run).

pub mod procfs;
pub mod propose;
pub mod tracker;
pub mod watch;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use self::propose::{Discovery, Proposal};
use self::{
    procfs::{ESTABLISHED, LISTEN, Proto},
    tracker::FileUse,
};
use crate::{Error, catalog::Domain};

/// The longest watch `--seconds` takes.
pub const MAX_SECONDS: u64 = 3600;

/// A file the service changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFinding {
    /// Absolute path.
    pub path: PathBuf,
    /// What was done to it.
    #[serde(flatten)]
    pub usage: FileUse,
}

/// A directory the service writes in: its files' uses added up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirFinding {
    /// Absolute path.
    pub path: PathBuf,
    /// Files written, synced or created in it.
    pub files: u64,
    /// Writes to its files.
    pub writes: u64,
    /// Syncs of its files and of the directory itself.
    pub syncs: u64,
    /// The block device it is on (`/dev/NAME`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A listening socket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    /// TCP or UDP.
    pub proto: Proto,
    /// The address it listens on (unspecified for all).
    pub address: SocketAddr,
    /// Connections accepted on it seen during the watch.
    pub connections: u64,
}

/// A host at the other end.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    /// Its address (for clients, only the IP counts; the port is theirs).
    pub address: SocketAddr,
    /// Connections seen.
    pub connections: u64,
}

/// What the service is and what it did during the watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The process watched.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its executable.
    pub exe: String,
    /// The kind of system it looks like (from its name and command line).
    pub domain: Domain,
    /// How long it was watched, in seconds.
    pub seconds: f64,
    /// The processes watched: it, and its descendants (those alive at the start, and those
    /// born during the watch).
    pub processes: Vec<u32>,
    /// Its working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Its cgroup v2, relative to the hierarchy's root (none for the root cgroup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The files it wrote, synced or opened for writing, most synced first.
    pub files: Vec<FileFinding>,
    /// The directories of those files, most synced first, then most written.
    pub directories: Vec<DirFinding>,
    /// The sockets it listens on.
    pub listening: Vec<Listener>,
    /// The hosts connected to it (on a listening port), most connections first.
    pub clients: Vec<Peer>,
    /// The addresses it connected to, most connections first (DNS apart).
    pub outgoing: Vec<Peer>,
    /// The DNS servers it asked, most queries first.
    pub dns: Vec<Peer>,
    /// Events the kernel sent.
    pub events: u64,
    /// Events lost to a full ring buffer (counts then are lower bounds).
    pub lost_events: u64,
}

impl Observation {
    /// An observation of `pid` that saw nothing (a generic service, no name).
    pub fn nothing(pid: u32) -> Observation {
        Observation {
            pid,
            comm: String::new(),
            exe: String::new(),
            domain: Domain::Generic,
            seconds: 0.0,
            processes: vec![pid],
            cwd: None,
            cgroup: None,
            files: Vec::new(),
            directories: Vec::new(),
            listening: Vec::new(),
            clients: Vec::new(),
            outgoing: Vec::new(),
            dns: Vec::new(),
            events: 0,
            lost_events: 0,
        }
    }
}

/// The kind of system `comm`, `exe` and `args` look like.
pub fn domain_of(comm: &str, exe: &str, args: &[String]) -> Domain {
    let base = Path::new(exe)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(comm);
    let is = |names: &[&str]| names.iter().any(|n| base == *n || comm == *n);
    let mentions = |words: &[&str]| {
        args.iter()
            .any(|a| words.iter().any(|w| a.to_ascii_lowercase().contains(w)))
    };
    if is(&["redis-server", "valkey-server", "keydb-server"]) {
        Domain::Redis
    } else if is(&["postgres", "postmaster"]) {
        Domain::Postgresql
    } else if is(&["mysqld", "mariadbd", "mysqld_safe"]) {
        Domain::Mysql
    } else if is(&["observer"]) {
        Domain::Oceanbase
    } else if is(&["nats-server", "beam.smp", "rabbitmq-server"])
        || (base.starts_with("java") && mentions(&["kafka", "rocketmq", "pulsar", "activemq"]))
    {
        Domain::Queue
    } else {
        Domain::Generic
    }
}

/// Watches `pid` for `length` (or until `stop`) and says what it saw.
pub fn observe(pid: u32, length: Duration, stop: &AtomicBool) -> crate::Result<Observation> {
    if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error::invalid(
            "pid",
            format!("no process {pid}"),
            "give the pid of a running process (pgrep redis-server)",
        ));
    }
    let (comm, exe, args) = procfs::identity(pid);
    let cwd = procfs::cwd(pid);
    let collected = watch::watch(pid, length, stop)?;
    let mut obs = Observation {
        domain: domain_of(&comm, &exe, &args),
        comm,
        exe,
        seconds: collected.elapsed.as_secs_f64(),
        processes: collected.processes.iter().copied().collect(),
        cwd,
        cgroup: crate::checkup::facts::cgroup_of(pid),
        events: collected.tracker.events,
        lost_events: collected.lost,
        ..Observation::nothing(pid)
    };
    digest_files(&mut obs, &collected.tracker.files);
    digest_sockets(&mut obs, &collected);
    Ok(obs)
}

/// Files and their directories, ranked.
fn digest_files(obs: &mut Observation, files: &BTreeMap<PathBuf, FileUse>) {
    let mut dirs: BTreeMap<PathBuf, DirFinding> = BTreeMap::new();
    for (path, usage) in files {
        // A directory's own syncs count for it; a file's for its parent. (Not every program
        // opens a directory with O_DIRECTORY to sync it: the file system says.)
        let (dir, is_file) = if usage.directory || path.is_dir() {
            (path.clone(), false)
        } else {
            match path.parent() {
                Some(p) => (p.to_path_buf(), true),
                None => continue,
            }
        };
        let d = dirs.entry(dir.clone()).or_insert_with(|| DirFinding {
            path: dir,
            files: 0,
            writes: 0,
            syncs: 0,
            device: None,
        });
        d.files += u64::from(is_file);
        d.writes += usage.writes;
        d.syncs += usage.syncs;
        if is_file {
            obs.files.push(FileFinding {
                path: path.clone(),
                usage: usage.clone(),
            });
        }
    }
    obs.files.sort_by_key(|f| {
        (
            std::cmp::Reverse((f.usage.syncs, f.usage.writes)),
            f.path.clone(),
        )
    });
    let mut dirs: Vec<DirFinding> = dirs
        .into_values()
        .filter(|d| d.files > 0 || d.syncs > 0)
        .collect();
    for d in &mut dirs {
        d.device = procfs::device_of(&d.path);
    }
    dirs.sort_by_key(|d| {
        (
            std::cmp::Reverse((d.syncs, d.writes, d.files)),
            d.path.clone(),
        )
    });
    obs.directories = dirs;
}

/// Listeners, clients and peers from the socket reads and the connect events.
fn digest_sockets(obs: &mut Observation, c: &watch::Collected) {
    let listening: BTreeSet<(Proto, SocketAddr)> = c
        .sockets
        .iter()
        .filter(|(proto, (_, remote, state))| {
            (*proto == Proto::Tcp && *state == LISTEN)
                || (*proto == Proto::Udp && remote.port() == 0 && *state != ESTABLISHED)
        })
        .map(|(proto, (local, _, _))| (*proto, *local))
        .collect();
    let listen_ports: BTreeSet<u16> = listening
        .iter()
        .filter(|(p, _)| *p == Proto::Tcp)
        .map(|(_, a)| a.port())
        .collect();
    let mut accepted: BTreeMap<u16, u64> = BTreeMap::new();
    let mut clients: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut outgoing: BTreeMap<SocketAddr, u64> = BTreeMap::new();
    for (proto, (local, remote, state)) in &c.sockets {
        if *proto != Proto::Tcp || *state != ESTABLISHED {
            continue;
        }
        if listen_ports.contains(&local.port()) {
            *accepted.entry(local.port()).or_default() += 1;
            *clients.entry(remote.ip()).or_default() += 1;
        } else {
            outgoing.entry(*remote).or_insert(1);
        }
    }
    // A connect seen counts each attempt, also those that failed or were short-lived.
    for (addr, n) in &c.tracker.connects {
        if !listen_ports.contains(&addr.port()) || !is_own(addr, &listening) {
            let e = outgoing.entry(*addr).or_default();
            *e = (*e).max(*n);
        }
    }
    obs.listening = listening
        .into_iter()
        .map(|(proto, address)| Listener {
            proto,
            address,
            connections: if proto == Proto::Tcp {
                accepted.get(&address.port()).copied().unwrap_or(0)
            } else {
                0
            },
        })
        .collect();
    obs.listening.sort_by_key(|l| {
        (
            l.proto,
            std::cmp::Reverse(l.connections),
            l.address.port(),
            l.address,
        )
    });
    obs.clients = ranked(
        clients
            .into_iter()
            .map(|(ip, n)| (SocketAddr::new(ip, 0), n)),
    );
    obs.outgoing = ranked(outgoing.into_iter());
    obs.dns = ranked(
        c.tracker
            .dns
            .iter()
            .map(|(ip, n)| (SocketAddr::new(*ip, 53), *n)),
    );
}

/// Whether `addr` is one of the service's own listening sockets (it connecting to itself).
fn is_own(addr: &SocketAddr, listening: &BTreeSet<(Proto, SocketAddr)>) -> bool {
    listening.iter().any(|(p, l)| {
        *p == Proto::Tcp
            && l.port() == addr.port()
            && (l.ip().is_unspecified() || l.ip() == addr.ip())
    })
}

/// Peers, most connections first.
fn ranked(peers: impl Iterator<Item = (SocketAddr, u64)>) -> Vec<Peer> {
    let mut v: Vec<Peer> = peers
        .map(|(address, connections)| Peer {
            address,
            connections,
        })
        .collect();
    v.sort_by_key(|p| (std::cmp::Reverse(p.connections), p.address));
    v
}

/// Watches `pid` and proposes the scenarios that apply.
pub fn discover(pid: u32, length: Duration, stop: &AtomicBool) -> crate::Result<Discovery> {
    Ok(propose::propose(observe(pid, length, stop)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_told_apart_by_name() {
        let none: Vec<String> = Vec::new();
        assert_eq!(
            domain_of("redis-server", "/usr/bin/redis-check-rdb", &none),
            Domain::Redis
        );
        assert_eq!(
            domain_of("postgres", "/usr/lib/postgresql/15/bin/postgres", &none),
            Domain::Postgresql
        );
        assert_eq!(
            domain_of("mariadbd", "/usr/sbin/mariadbd", &none),
            Domain::Mysql
        );
        let kafka = vec!["java".to_owned(), "kafka.Kafka".to_owned()];
        assert_eq!(domain_of("java", "/usr/bin/java", &kafka), Domain::Queue);
        assert_eq!(domain_of("java", "/usr/bin/java", &none), Domain::Generic);
        assert_eq!(
            domain_of("nginx", "/usr/sbin/nginx", &none),
            Domain::Generic
        );
    }

    fn file(path: &str, writes: u64, syncs: u64, directory: bool) -> (PathBuf, FileUse) {
        (
            path.into(),
            FileUse {
                opens_for_write: 0,
                writes,
                syncs,
                directory,
            },
        )
    }

    #[test]
    fn directories_add_up_their_files_and_their_own_syncs() {
        let mut obs = Observation::nothing(1);
        let files = BTreeMap::from([
            file("/pg/data/pg_wal/0001", 100, 90, false),
            file("/pg/data/pg_wal/0002", 50, 40, false),
            file("/pg/data/pg_wal", 0, 2, true),
            file("/pg/data/base/1/1259", 10, 1, false),
            file("/pg/log/postgresql.log", 30, 0, false),
        ]);
        digest_files(&mut obs, &files);
        let d = &obs.directories;
        assert_eq!(d[0].path, Path::new("/pg/data/pg_wal"));
        assert_eq!((d[0].files, d[0].writes, d[0].syncs), (2, 150, 132));
        assert_eq!(d[1].path, Path::new("/pg/data/base/1"));
        assert_eq!(d[2].path, Path::new("/pg/log"));
        assert_eq!(obs.files[0].path, Path::new("/pg/data/pg_wal/0001"));
        // The directory itself is not listed as a file.
        assert!(obs.files.iter().all(|f| !f.usage.directory));
    }

    #[test]
    fn sockets_make_listeners_clients_and_peers() {
        let mut obs = Observation::nothing(1);
        let mut c = watch::Collected::default();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        c.sockets
            .insert((Proto::Tcp, (a("0.0.0.0:6379"), a("0.0.0.0:0"), LISTEN)));
        for port in [40000, 40001] {
            c.sockets.insert((
                Proto::Tcp,
                (
                    a("127.0.0.1:6379"),
                    a(&format!("127.0.0.2:{port}")),
                    ESTABLISHED,
                ),
            ));
        }
        c.sockets.insert((
            Proto::Tcp,
            (a("127.0.0.1:50000"), a("10.0.0.9:9092"), ESTABLISHED),
        ));
        c.tracker.connects.insert(a("10.0.0.9:9092"), 3);
        c.tracker.connects.insert(a("127.0.0.1:6379"), 1);
        c.tracker.dns.insert("10.0.0.2".parse().unwrap(), 4);
        digest_sockets(&mut obs, &c);
        assert_eq!(obs.listening.len(), 1);
        assert_eq!(obs.listening[0].connections, 2);
        assert_eq!(obs.clients[0].address.ip().to_string(), "127.0.0.2");
        assert_eq!(obs.clients[0].connections, 2);
        assert_eq!(obs.outgoing.len(), 1, "{:?}", obs.outgoing);
        assert_eq!(obs.outgoing[0].connections, 3);
        assert_eq!(obs.dns[0].address, a("10.0.0.2:53"));
    }
}
