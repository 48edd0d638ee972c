//! What `/proc` tells about the watched processes: their descendants, their descriptors, and
//! their sockets (listening, accepted, connected) from `/proc/PID/net/{tcp,tcp6,udp,udp6}`,
//! which list the sockets of the process's own network namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

/// The processes below `pid` (children, their children, ...), from every `/proc/N/stat`.
pub fn descendants(pid: u32) -> BTreeSet<u32> {
    let mut parent = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(pp) = std::fs::read_to_string(format!("/proc/{n}/stat"))
            .ok()
            .as_deref()
            .and_then(ppid)
        {
            parent.insert(n, pp);
        }
    }
    let mut found = BTreeSet::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, pp) in &parent {
            if *pp == p && found.insert(*child) {
                frontier.push(*child);
            }
        }
    }
    found
}

/// The parent pid in a `/proc/N/stat` line (the field after the `(comm)`, which may hold
/// spaces and parentheses).
fn ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The file behind descriptor `fd` of `pid`, now.
pub fn fd_path(pid: u32, fd: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
}

/// The working directory of `pid`.
pub fn cwd(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// The socket inodes among the descriptors of `pid`.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let s = link.to_str()?;
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Transport protocol of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One line of `/proc/net/{tcp,udp}[6]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketLine {
    /// Local address.
    pub local: SocketAddr,
    /// Remote address (unspecified, port 0, when none).
    pub remote: SocketAddr,
    /// The kernel's TCP state number (10 listen, 1 established); 7 for an unconnected UDP socket.
    pub state: u8,
    /// The socket's inode.
    pub inode: u64,
}

/// TCP_LISTEN.
pub const LISTEN: u8 = 10;
/// TCP_ESTABLISHED.
pub const ESTABLISHED: u8 = 1;

/// An address as `/proc/net/tcp` writes it: the IP as 32-bit words in host order, in hex,
/// then the port in hex.
fn hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(octets);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The sockets of a `/proc/net/{tcp,udp}[6]` text.
pub fn parse_sockets(text: &str) -> Vec<SocketLine> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(SocketLine {
                local: hex_addr(f.get(1)?)?,
                remote: hex_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The sockets of the processes, as seen now: `(protocol, line)` for each socket one of them
/// holds.
pub fn sockets_of(pids: &BTreeSet<u32>) -> Vec<(Proto, SocketLine)> {
    let mut out = Vec::new();
    // Processes in one network namespace list the same tables: read them once per namespace.
    let mut namespaces = BTreeMap::<PathBuf, (u32, BTreeSet<u64>)>::new();
    for &pid in pids {
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let entry = namespaces.entry(ns).or_insert((pid, BTreeSet::new()));
        entry.1.extend(socket_inodes(pid));
    }
    for (reader, inodes) in namespaces.values() {
        for (proto, files) in [(Proto::Tcp, ["tcp", "tcp6"]), (Proto::Udp, ["udp", "udp6"])] {
            for f in files {
                let Ok(text) = std::fs::read_to_string(format!("/proc/{reader}/net/{f}")) else {
                    continue;
                };
                out.extend(
                    parse_sockets(&text)
                        .into_iter()
                        .filter(|s| inodes.contains(&s.inode))
                        .map(|s| (proto, s)),
                );
            }
        }
    }
    out
}

/// The address a client would use for a listening socket: a wildcard becomes loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Where clients reach the service made of `pids`, now: its TCP listener with the most
/// connections accepted, then the lowest port (a wildcard address as loopback).
pub fn main_listener(pids: &BTreeSet<u32>) -> Option<SocketAddr> {
    let sockets = sockets_of(pids);
    let listeners = sockets
        .iter()
        .filter(|(p, s)| *p == Proto::Tcp && s.state == LISTEN)
        .map(|(_, s)| s.local);
    let accepted = |port: u16| {
        sockets
            .iter()
            .filter(|(p, s)| *p == Proto::Tcp && s.state == ESTABLISHED && s.local.port() == port)
            .count()
    };
    listeners
        .min_by_key(|l| (std::cmp::Reverse(accepted(l.port())), l.port(), l.is_ipv6()))
        .map(reachable)
}

/// The processes of the service: `pid` and its descendants.
pub fn service(pid: u32) -> BTreeSet<u32> {
    let mut all = descendants(pid);
    all.insert(pid);
    all
}

/// The command name and executable of `pid`, and its command line's words.
pub fn identity(pid: u32) -> (String, String, Vec<String>) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let args = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (comm, exe, args)
}

/// The block device holding `path`, as `/dev/NAME` (or `MAJ:MIN` when it has no name), or
/// `None` when its file system is not on a block device (tmpfs, overlay...).
pub fn device_of(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // The file may be gone (a WAL segment recycled): its directory tells as well.
    let meta = std::fs::metadata(path)
        .ok()
        .or_else(|| std::fs::metadata(path.parent()?).ok())?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    Some(
        uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map_or_else(|| format!("{major}:{minor}"), |n| format!("/dev/{n}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names() {
        assert_eq!(ppid("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(ppid("1 (init) S 0 1 1"), Some(0));
        assert_eq!(ppid("garbage"), None);
    }

    #[test]
    fn proc_net_lines() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   100        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:18EB 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000   100        0 12346 1\n";
        let s = parse_sockets(tcp);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local, "127.0.0.1:6379".parse().unwrap());
        assert_eq!((s[0].state, s[0].inode), (LISTEN, 12345));
        assert_eq!(s[1].remote, "127.0.0.1:41668".parse().unwrap());
        let tcp6 = "header\n   0: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0 777\n   1: 0000000000000000FFFF00000100007F:1538 0000000000000000FFFF00000200007F:D431 01 0 0 0 0 0 0 778\n";
        let s = parse_sockets(tcp6);
        assert_eq!(s[0].local, "[::1]:5432".parse().unwrap());
        // IPv4-mapped addresses read as IPv4.
        assert_eq!(s[1].remote, "127.0.0.2:54321".parse().unwrap());
    }

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id();
        let (comm, exe, args) = identity(me);
        assert!(!comm.is_empty() && !exe.is_empty() && !args.is_empty());
        assert!(cwd(me).is_some());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let socks = sockets_of(&service(me));
        assert!(
            socks
                .iter()
                .any(|(p, s)| *p == Proto::Tcp && s.state == LISTEN && s.local.port() == port),
            "{socks:?}"
        );
        // Another test's listener may be there too: ours, with three clients, comes first.
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let accepted: Vec<_> = clients.iter().map(|_| l.accept().unwrap()).collect();
        assert_eq!(
            main_listener(&BTreeSet::from([me])),
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        );
        drop((clients, accepted));
        assert_eq!(
            reachable("[::]:5432".parse().unwrap()),
            "[::1]:5432".parse::<SocketAddr>().unwrap()
        );
    }
}
