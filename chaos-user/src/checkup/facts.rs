//! What a checkup knows about its target before any drill: the values that fill the catalog's
//! parameters, each with where it came from (`docs/checkup.md`, "Filling the parameters").
//!
//! - `pid`: `--pid`, or with `--cgroup` the lowest pid in the cgroup's `cgroup.procs`;
//! - `cgroup`: `--cgroup`, or with `--pid` the process's cgroup v2 from `/proc/PID/cgroup`
//!   (none when it is the root cgroup);
//! - `address`, `host`, `port`: from `--probe` (`HOST:PORT`, or an `http://` URL);
//! - `data_dir`: the process's working directory (`/proc/PID/cwd`; Redis, PostgreSQL and
//!   MySQL run in their data directory), unless it is `/`;
//! - `resolver_ip`: the first `nameserver` of `/etc/resolv.conf`.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::Error;

/// What the checkup is pointed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A process.
    Pid(u32),
    /// A cgroup, as `--cgroup` takes it (relative to the hierarchies' roots, or absolute).
    Cgroup(String),
}

/// One value found, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// The value, as `--set` would give it.
    pub value: String,
    /// Where it came from (`--pid`, `/proc/4242/cwd`, ...).
    pub source: String,
}

/// The facts by name: `pid`, `cgroup`, `address`, `host`, `port`, `data_dir`, `resolver_ip`.
pub type Facts = BTreeMap<String, Fact>;

/// The catalog parameter names each fact fills.
pub const FILLS: &[(&str, &[&str])] = &[
    ("pid", &["pid", "observer_pid"]),
    ("cgroup", &["cgroup", "app_cgroup"]),
    (
        "address",
        &[
            "health_addr",
            "redis_addr",
            "sql_addr",
            "pg_addr",
            "mysql_addr",
            "broker_addr",
        ],
    ),
    ("host", &["pg_host"]),
    ("port", &["redis_port", "pg_port", "broker_port"]),
    ("data_dir", &["data_dir", "device"]),
    ("resolver_ip", &["resolver_ip"]),
];

/// The fact that fills parameter `param`, if any.
pub fn fact_for(param: &str) -> Option<&'static str> {
    FILLS
        .iter()
        .find(|(_, params)| params.contains(&param))
        .map(|(fact, _)| *fact)
}

/// The catalog parameter names fact `fact` fills (none for a name that is not a fact).
pub fn filled_by(fact: &str) -> &'static [&'static str] {
    FILLS
        .iter()
        .find(|(f, _)| *f == fact)
        .map_or(&[], |(_, params)| *params)
}

fn fact(value: impl Into<String>, source: impl Into<String>) -> Fact {
    Fact {
        value: value.into(),
        source: source.into(),
    }
}

/// `HOST:PORT` from a probe given as an address or an `http://` URL.
pub fn probe_address(probe: &str) -> Result<(String, String, u16), Error> {
    let fix =
        "give the service's health endpoint: HOST:PORT (127.0.0.1:6379) or http://HOST:PORT/PATH";
    let hostport = match probe.strip_prefix("http://") {
        Some(rest) => {
            let hp = rest.split('/').next().unwrap_or("");
            if hp.contains(':') && !hp.ends_with(']') {
                hp.to_owned()
            } else {
                format!("{hp}:80")
            }
        }
        None => probe.to_owned(),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| Error::invalid("probe", format!("`{probe}` has no port"), fix))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::invalid("probe", format!("`{probe}`: bad port `{port}`"), fix))?;
    if host.is_empty() {
        return Err(Error::invalid(
            "probe",
            format!("`{probe}` has no host"),
            fix,
        ));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Ok((hostport.clone(), bare.to_owned(), port))
}

/// The cgroup v2 of `pid`, relative to the hierarchy's root; `None` for the root cgroup.
pub(crate) fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rel = path.trim().trim_start_matches('/');
    (!rel.is_empty()).then(|| rel.to_owned())
}

/// The live pids in cgroup `cg` (v2 first, else the first v1 hierarchy that has some).
pub fn cgroup_pids(cg: &str) -> std::collections::BTreeSet<u32> {
    crate::experiment::target::cgroup_dirs(cg)
        .into_iter()
        .map(|dir| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<std::collections::BTreeSet<u32>>()
        })
        .find(|pids| !pids.is_empty())
        .unwrap_or_default()
}

/// The lowest live pid in cgroup `cg`.
fn first_pid(cg: &str) -> Option<u32> {
    cgroup_pids(cg).first().copied()
}

/// The first `nameserver` of a resolv.conf text.
pub fn resolver(resolv_conf: &str) -> Option<String> {
    resolv_conf.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next().map(str::to_owned))
            .flatten()
    })
}

/// The facts about `target` and `probe`, read now (a checkup reads them again before each
/// drill, so a restarted process is found under its new pid).
pub fn gather(target: &Target, probe: &str) -> Result<Facts, Error> {
    let mut facts = Facts::new();
    let (address, host, port) = probe_address(probe)?;
    facts.insert("address".into(), fact(address, "--probe"));
    facts.insert("host".into(), fact(host, "--probe"));
    facts.insert("port".into(), fact(port.to_string(), "--probe"));
    let pid = match target {
        Target::Pid(pid) => {
            facts.insert("pid".into(), fact(pid.to_string(), "--pid"));
            if let Some(cg) = cgroup_of(*pid) {
                facts.insert("cgroup".into(), fact(cg, format!("/proc/{pid}/cgroup")));
            }
            Some(*pid)
        }
        Target::Cgroup(cg) => {
            facts.insert("cgroup".into(), fact(cg.clone(), "--cgroup"));
            let pid = first_pid(cg);
            if let Some(pid) = pid {
                facts.insert(
                    "pid".into(),
                    fact(pid.to_string(), format!("the lowest pid in cgroup {cg}")),
                );
            }
            pid
        }
    };
    if let Some(pid) = pid
        && let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd"))
        && cwd != Path::new("/")
    {
        facts.insert(
            "data_dir".into(),
            fact(cwd.display().to_string(), format!("/proc/{pid}/cwd")),
        );
    }
    if let Some(ip) = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .as_deref()
        .and_then(resolver)
    {
        facts.insert("resolver_ip".into(), fact(ip, "/etc/resolv.conf"));
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_as_addresses_and_urls() {
        assert_eq!(
            probe_address("127.0.0.1:6379").unwrap(),
            ("127.0.0.1:6379".into(), "127.0.0.1".into(), 6379)
        );
        assert_eq!(
            probe_address("http://10.0.0.1/health").unwrap(),
            ("10.0.0.1:80".into(), "10.0.0.1".into(), 80)
        );
        assert_eq!(
            probe_address("http://[::1]:8080/x").unwrap(),
            ("[::1]:8080".into(), "::1".into(), 8080)
        );
        assert!(probe_address("localhost").is_err());
        assert!(probe_address("127.0.0.1:0").is_err());
    }

    #[test]
    fn the_resolver_is_the_first_nameserver() {
        let conf = "# comment\nsearch x\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(resolver(conf).as_deref(), Some("10.0.0.2"));
        assert_eq!(resolver("search x\n"), None);
    }

    #[test]
    fn every_filled_parameter_has_one_fact() {
        assert_eq!(fact_for("redis_addr"), Some("address"));
        assert_eq!(fact_for("observer_pid"), Some("pid"));
        assert_eq!(fact_for("device"), Some("data_dir"));
        assert_eq!(fact_for("peers"), None);
        let mut names: Vec<&str> = FILLS.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a parameter is filled by two facts");
    }

    #[test]
    fn a_process_is_found_with_its_working_directory() {
        let me = std::process::id();
        let facts = gather(&Target::Pid(me), "127.0.0.1:1").unwrap();
        assert_eq!(facts["pid"].value, me.to_string());
        let cwd = std::env::current_dir().unwrap();
        if cwd != Path::new("/") {
            assert_eq!(facts["data_dir"].value, cwd.display().to_string());
        }
        assert_eq!(facts["port"].value, "1");
    }
}
