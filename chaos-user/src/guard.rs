//! What a fault must not hit without `--force` because it would take the injector itself down:
//! its own processes (this command, the deadline and delay keepers, a daemon) and the ports they
//! listen on (a daemon's API). The plans apply these next to their own guards (init, the root
//! cgroup, port 22, the default route's interface, the root filesystem).

use std::{
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::PathBuf,
};

/// The executable of this process.
fn own_exe() -> Option<PathBuf> {
    std::fs::read_link("/proc/self/exe").ok()
}

/// Whether `pid` runs the same executable as this process: a controller of ours.
pub fn is_ours(pid: u32) -> bool {
    pid == std::process::id()
        || own_exe().is_some_and(|me| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == me)
        })
}

/// Every live process running this executable.
pub fn our_processes() -> Vec<u32> {
    let Some(me) = own_exe() else {
        return vec![std::process::id()];
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![std::process::id()];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == me))
        .collect()
}

/// TCP ports a process of ours listens on in its own network namespace (a daemon's API; not a
/// server it runs in a namespace it made, like the demo's echo server, which its faults target),
/// sorted and deduplicated.
///
/// Each socket is asked itself, through a copy of its descriptor
/// ([`crate::sockets::for_each_socket`]): reading `/proc/PID/net/tcp` instead walks the namespace's whole
/// connection table, and took 15 ms of every arming in a process holding sockets (a daemon, the
/// bench) on a host with a large one.
pub fn listener_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    for pid in our_processes() {
        let Some(netns) = netns_of_pid(pid) else {
            continue;
        };
        // A process that went away, or whose descriptors cannot be taken, has no port to keep.
        let _ = crate::sockets::for_each_socket(pid, |fd| {
            ports.extend(listening_port(fd, netns));
        });
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The inode of `pid`'s network namespace.
fn netns_of_pid(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The inode of the network namespace socket `fd` lives in (`SIOCGSKNS`, Linux 4.9+).
fn netns_of_socket(fd: BorrowedFd<'_>) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor of the namespace, or -1.
    let ns = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSKNS) };
    if ns < 0 {
        return None;
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    let ns = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(ns) });
    ns.metadata().ok().map(|m| m.ino())
}

/// The local port of `fd` if it is a listening IPv4/IPv6 stream socket in network namespace
/// `netns` (an inode).
fn listening_port(fd: BorrowedFd<'_>, netns: u64) -> Option<u16> {
    use nix::sys::socket::{SockaddrLike as _, SockaddrStorage, getsockname, getsockopt, sockopt};
    if !getsockopt(&fd, sockopt::AcceptConn).ok()? || netns_of_socket(fd)? != netns {
        return None;
    }
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    match addr.family()? {
        nix::sys::socket::AddressFamily::Inet => addr.as_sockaddr_in().map(|a| a.port()),
        nix::sys::socket::AddressFamily::Inet6 => addr.as_sockaddr_in6().map(|a| a.port()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;

    #[test]
    fn this_process_is_ours() {
        assert!(is_ours(std::process::id()));
        assert!(our_processes().contains(&std::process::id()));
        assert!(!is_ours(1), "init runs another executable");
    }

    #[test]
    fn only_listening_inet_sockets_have_a_port() {
        use std::net::{TcpListener, TcpStream, UdpSocket};
        let own = netns_of_pid(std::process::id()).unwrap();
        let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = TcpListener::bind("[::1]:0").ok();
        let conn = TcpStream::connect(l4.local_addr().unwrap()).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let unix = std::os::unix::net::UnixListener::bind(
            std::env::temp_dir().join(format!("chaos-guard-{}.sock", std::process::id())),
        );
        assert_eq!(
            listening_port(l4.as_fd(), own),
            Some(l4.local_addr().unwrap().port())
        );
        if let Some(l6) = &l6 {
            assert_eq!(
                listening_port(l6.as_fd(), own),
                Some(l6.local_addr().unwrap().port())
            );
        }
        assert_eq!(listening_port(conn.as_fd(), own), None, "a connection");
        assert_eq!(listening_port(udp.as_fd(), own), None, "a datagram socket");
        if let Ok(unix) = &unix {
            assert_eq!(listening_port(unix.as_fd(), own), None, "a unix listener");
            let _ = std::fs::remove_file(unix.local_addr().unwrap().as_pathname().unwrap());
        }
    }

    #[test]
    fn a_listener_in_another_namespace_does_not_count() {
        // A thread of its own enters a new network namespace (root only), listens there and
        // hands the listener back.
        let other = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            std::net::TcpListener::bind("0.0.0.0:0").ok()
        })
        .join()
        .unwrap();
        let Some(other) = other else {
            eprintln!("skipped: cannot make a network namespace here");
            return;
        };
        let own = netns_of_pid(std::process::id()).unwrap();
        let theirs = netns_of_socket(other.as_fd()).unwrap();
        assert_ne!(own, theirs);
        let port = other.local_addr().unwrap().port();
        assert_eq!(listening_port(other.as_fd(), theirs), Some(port));
        assert_eq!(listening_port(other.as_fd(), own), None);
        assert!(!listener_ports().contains(&port), "{port}");
    }

    #[test]
    fn a_listener_of_ours_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // The test binary is "ours" to itself: its listener counts.
        assert!(listener_ports().contains(&port), "{port}");
    }

    /// Run by [`another_process_listener_is_found`] in a child: listens, prints the port, and
    /// waits for its stdin to close.
    #[test]
    #[ignore = "a helper the test below runs in a child process"]
    fn listen_until_stdin_closes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        println!("port {}", l.local_addr().unwrap().port());
        let mut sink = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
    }

    #[test]
    fn another_process_listener_is_found() {
        use std::io::BufRead as _;
        // A child running this same test binary is "ours".
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "guard::tests::listen_until_stdin_closes",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines
            .by_ref()
            .map_while(Result::ok)
            // libtest may have written "test NAME ... " on the same line first.
            .find_map(|l| {
                l.rsplit_once("port ")
                    .and_then(|(_, p)| p.trim().parse().ok())
            })
            .expect("the child's port");
        let found = listener_ports().contains(&port);
        drop(child.stdin.take());
        let _ = child.wait();
        assert!(found, "the child's listener on {port}");
    }
}
