//! A drill's target: found on the running system at admission, and filled into the faults that
//! name no target of their own, as `docs/experiments.md` ("target") tabulates it.

use std::{net::TcpStream, path::Path, time::Duration};

use super::Target;
use crate::{
    FaultSpec,
    mounts::CgroupMounts,
    spec::{DiskSpec, IoSpec, NetSpec, SyscallSpec},
};

/// A target as found on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A live process.
    Pid(u32),
    /// A cgroup, as written (relative to the hierarchy's root, or absolute).
    Cgroup(String),
    /// Processes named `comm`; `pid` is the only one, if there is exactly one.
    Comm {
        /// The name.
        comm: String,
        /// The processes so named.
        pids: Vec<u32>,
    },
    /// A container: its cgroup (cgroup v2, relative) and its first process.
    Container {
        /// The cgroup v2 path, relative to the root.
        cgroup: String,
        /// Its init (lowest pid in it).
        pid: u32,
    },
    /// A service address.
    Address {
        /// `HOST:PORT` as written.
        address: String,
    },
}

/// Finds `target` on this host; the error says what is missing, in words.
pub fn find(target: &Target) -> Result<Found, String> {
    if let Some(pid) = target.pid {
        return Ok(Found::Pid(pid));
    }
    if let Some(cg) = &target.cgroup {
        return Ok(Found::Cgroup(cg.clone()));
    }
    if let Some(comm) = &target.comm {
        return Ok(Found::Comm {
            comm: comm.clone(),
            pids: pids_named(comm),
        });
    }
    if let Some(id) = &target.container {
        return container(id);
    }
    if let Some(address) = &target.address {
        return Ok(Found::Address {
            address: address.clone(),
        });
    }
    Err("the target names nothing".into())
}

/// Checks that the target is alive; says what was found.
pub fn alive(found: &Found) -> Result<String, String> {
    match found {
        Found::Pid(pid) => {
            let state = process_state(*pid).ok_or(format!("no process {pid}"))?;
            if state == 'Z' {
                return Err(format!("process {pid} has exited (zombie)"));
            }
            Ok(format!("process {pid} is running"))
        }
        Found::Cgroup(cg) => {
            let mut n = 0;
            for dir in cgroup_dirs(cg) {
                n = n.max(procs_in(&dir));
            }
            if n == 0 {
                return Err(format!("cgroup {cg} has no process (or does not exist)"));
            }
            Ok(format!("cgroup {cg}: {n} processes"))
        }
        Found::Comm { comm, pids } => match pids.as_slice() {
            [] => Err(format!("no process is named {comm:?}")),
            _ => Ok(format!("{} processes named {comm:?}", pids.len())),
        },
        Found::Container { cgroup, pid } => Ok(format!("container cgroup {cgroup}, init {pid}")),
        Found::Address { address } => {
            let addrs = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
                .map_err(|e| format!("{address}: {e}"))?;
            for a in addrs {
                if TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok() {
                    return Ok(format!("{address} accepts TCP connections"));
                }
            }
            Err(format!("{address} does not accept a TCP connection"))
        }
    }
}

/// `fault` with the target filled in, unless it names its own; the error says why the target
/// cannot be filled in (a `comm` naming several processes for a fault that needs one pid).
pub fn inherit(fault: &FaultSpec, found: &Found) -> Result<FaultSpec, String> {
    let one_pid = || -> Result<Option<u32>, String> {
        match found {
            Found::Pid(p) => Ok(Some(*p)),
            Found::Container { pid, .. } => Ok(Some(*pid)),
            Found::Comm { comm, pids } => match pids.as_slice() {
                [p] => Ok(Some(*p)),
                [] => Err(format!("no process is named {comm:?}")),
                _ => Err(format!(
                    "{} processes are named {comm:?}, and this fault takes one",
                    pids.len()
                )),
            },
            _ => Ok(None),
        }
    };
    let cgroup = || match found {
        Found::Cgroup(c) => Some(c.clone()),
        Found::Container { cgroup, .. } => Some(cgroup.clone()),
        _ => None,
    };
    Ok(match fault {
        FaultSpec::Syscall(s) => {
            let mut s: SyscallSpec = s.clone();
            if s.pid.is_none() && s.cgroup.is_none() && s.comm.is_none() {
                match found {
                    Found::Comm { comm, .. } => s.comm = Some(comm.clone()),
                    _ => {
                        s.cgroup = cgroup();
                        if s.cgroup.is_none() {
                            s.pid = one_pid()?;
                        }
                    }
                }
            }
            FaultSpec::Syscall(s)
        }
        FaultSpec::Io(s) => {
            let mut s: IoSpec = s.clone();
            if s.pid.is_none() && s.cgroup.is_none() {
                s.cgroup = cgroup();
                if s.cgroup.is_none() {
                    s.pid = one_pid()?;
                }
            }
            FaultSpec::Io(s)
        }
        FaultSpec::Disk(s) => {
            let mut s: DiskSpec = s.clone();
            if s.virtual_fill && s.pid.is_none() && s.cgroup.is_none() {
                s.cgroup = cgroup();
                if s.cgroup.is_none() {
                    s.pid = one_pid()?;
                }
            }
            FaultSpec::Disk(s)
        }
        FaultSpec::Net(s) => {
            let mut s: NetSpec = s.clone();
            let own = s.pid.is_some()
                || !s.cgroup.is_empty()
                || s.target_pid.is_some()
                || s.netns.is_some()
                || !s.dst.is_empty();
            if !own {
                match found {
                    Found::Address { address } => {
                        let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
                        s.dst = vec![host.trim_matches(['[', ']']).to_owned()];
                        if s.dport.is_none() && !port.is_empty() {
                            s.dport = Some(port.to_owned());
                            s.proto.get_or_insert(crate::spec::Proto::Tcp);
                        }
                    }
                    Found::Cgroup(c) => s.cgroup = vec![c.clone()],
                    Found::Container { pid, .. } => s.target_pid = Some(*pid),
                    _ => s.pid = one_pid()?,
                }
            }
            FaultSpec::Net(s)
        }
    })
}

/// The fault's own target, in words, for the exclusive check (`None`: the whole host).
pub fn key(fault: &FaultSpec) -> Vec<String> {
    let mut keys = Vec::new();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            keys.push(format!("{k}={v}"));
        }
    };
    match fault {
        FaultSpec::Net(s) => {
            add("pid", s.pid.map(|p| p.to_string()));
            add("target_pid", s.target_pid.map(|p| p.to_string()));
            add("netns", s.netns.clone());
            add("interface", s.interface.clone());
            for c in &s.cgroup {
                add("cgroup", Some(c.clone()));
            }
            for d in &s.dst {
                add("dst", Some(d.clone()));
            }
        }
        FaultSpec::Syscall(s) => {
            add("pid", s.pid.map(|p| p.to_string()));
            add("cgroup", s.cgroup.clone());
            add("comm", s.comm.clone());
        }
        FaultSpec::Io(s) => {
            add("pid", s.pid.map(|p| p.to_string()));
            add("cgroup", s.cgroup.clone());
            add("device", s.device.clone());
            add("path", s.path.clone());
        }
        FaultSpec::Disk(s) => {
            add("pid", s.pid.map(|p| p.to_string()));
            add("cgroup", s.cgroup.clone());
            add("path", Some(s.path.clone()));
        }
    }
    keys
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Live processes whose `/proc/PID/comm` is `comm`.
fn pids_named(comm: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
                && process_state(*pid) != Some('Z')
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The cgroup directories `cg` names: in the v2 hierarchy and in each v1 one.
pub(crate) fn cgroup_dirs(cg: &str) -> Vec<std::path::PathBuf> {
    let Ok(m) = CgroupMounts::read() else {
        return Vec::new();
    };
    m.v2.into_iter()
        .chain(m.v1.into_values())
        .map(|root| {
            if Path::new(cg).starts_with(&root) {
                Path::new(cg).to_path_buf()
            } else {
                root.join(cg.trim_start_matches('/'))
            }
        })
        .filter(|p| p.is_dir())
        .collect()
}

fn procs_in(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A container by id: the cgroup v2 whose path holds the id, and its lowest pid.
fn container(id: &str) -> Result<Found, String> {
    let mut found: Option<(u32, String)> = None;
    for entry in std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
            continue;
        };
        if path.contains(id) && found.as_ref().is_none_or(|(p, _)| pid < *p) {
            found = Some((pid, path.trim().trim_start_matches('/').to_owned()));
        }
    }
    found
        .map(|(pid, cgroup)| Found::Container { cgroup, pid })
        .ok_or_else(|| format!("no running container {id} (no process in a cgroup naming it)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(json: &str) -> FaultSpec {
        crate::spec::from_json(json).unwrap()
    }

    #[test]
    fn an_address_fills_dst_and_port_of_a_net_fault_without_its_own() {
        let f = net(r#"{"kind":"net","action":"partition"}"#);
        let found = Found::Address {
            address: "10.0.2.7:5432".into(),
        };
        let FaultSpec::Net(n) = inherit(&f, &found).unwrap() else {
            panic!()
        };
        assert_eq!(n.dst, vec!["10.0.2.7".to_owned()]);
        assert_eq!(n.dport.as_deref(), Some("5432"));
        // Its own target wins.
        let own = net(r#"{"kind":"net","action":"loss","percent":5,"dst":["10.9.9.9"]}"#);
        let FaultSpec::Net(n) = inherit(&own, &found).unwrap() else {
            panic!()
        };
        assert_eq!(n.dst, vec!["10.9.9.9".to_owned()]);
        assert_eq!(n.dport, None);
    }

    #[test]
    fn a_cgroup_fills_syscall_and_io_faults() {
        let found = Found::Cgroup("drill".into());
        let s = net(r#"{"kind":"syscall","action":"fail","syscall":["fsync"]}"#);
        let FaultSpec::Syscall(s) = inherit(&s, &found).unwrap() else {
            panic!()
        };
        assert_eq!(s.cgroup.as_deref(), Some("drill"));
        let io = net(r#"{"kind":"io","action":"hang","device":"/dev/loop0"}"#);
        let FaultSpec::Io(io) = inherit(&io, &found).unwrap() else {
            panic!()
        };
        assert_eq!(io.cgroup.as_deref(), Some("drill"));
    }

    #[test]
    fn a_comm_naming_several_processes_cannot_fill_a_pid() {
        let found = Found::Comm {
            comm: "x".into(),
            pids: vec![10, 11],
        };
        let io = net(r#"{"kind":"io","action":"hang","device":"/dev/loop0"}"#);
        assert!(inherit(&io, &found).unwrap_err().contains("2 processes"));
        let s = net(r#"{"kind":"syscall","action":"fail","syscall":["fsync"]}"#);
        let FaultSpec::Syscall(s) = inherit(&s, &found).unwrap() else {
            panic!()
        };
        assert_eq!(s.comm.as_deref(), Some("x"));
    }

    #[test]
    fn this_process_is_alive_and_pid_0_is_not_found() {
        assert!(alive(&Found::Pid(std::process::id())).is_ok());
        assert!(alive(&Found::Pid(u32::MAX - 1)).is_err());
    }
}
