//! What a fault must not hit without `--force` because it would take the injector itself down:
//! its own processes (this command, the deadline and delay keepers, a daemon) and the ports they
//! listen on (a daemon's API). The plans apply these next to their own guards (init, the root
//! cgroup, port 22, the default route's interface, the root filesystem).

use std::path::PathBuf;

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

/// TCP ports a process of ours listens on (in whatever namespace), sorted and deduplicated.
pub fn listener_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    for pid in our_processes() {
        let inodes = socket_inodes(pid);
        if inodes.is_empty() {
            continue;
        }
        for table in ["tcp", "tcp6"] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
                ports.extend(listening(&text, &inodes));
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Inodes of the sockets `pid` holds.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|fd| {
        let target = std::fs::read_link(fd.ok()?.path()).ok()?;
        target
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// Local ports of the listening rows of a `/proc/net/tcp{,6}` table whose socket inode is in
/// `inodes`.
fn listening(table: &str, inodes: &[u64]) -> Vec<u16> {
    const TCP_LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            if *state != TCP_LISTEN || !inodes.contains(&inode.parse().ok()?) {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_ours() {
        assert!(is_ours(std::process::id()));
        assert!(our_processes().contains(&std::process::id()));
        assert!(!is_ours(1), "init runs another executable");
    }

    #[test]
    fn listening_rows_of_our_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F91 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1";
        // Port 8080 (0x1F90) is ours and listening; 22 listens but is not ours; 8081 is ours
        // but an established connection.
        assert_eq!(listening(table, &[4242, 4243]), vec![8080]);
        assert_eq!(listening(table, &[]), Vec::<u16>::new());
    }

    #[test]
    fn a_listener_of_ours_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // The test binary is "ours" to itself: its listener counts.
        assert!(listener_ports().contains(&port), "{port}");
    }
}
