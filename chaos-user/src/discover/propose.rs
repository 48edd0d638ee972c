//! From an [`Observation`] to the catalog: each parameter a scenario may need, filled from
//! what was seen (with the evidence), and each scenario of the service's domain and the generic
//! ones, ready to run (`chaos run --scenario ID --set ...`, checked as `chaos run` checks it) or
//! with the values still missing named. Pure: no I/O.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    DirFinding, Observation,
    procfs::{Proto, reachable},
};
use crate::{
    catalog::{self, Domain, Scenario, Severity},
    checkup::facts::{Fact, fact_for, filled_by},
};

/// A scenario proposed for the service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The scenario's id.
    pub scenario: String,
    /// Its title.
    pub title: String,
    /// Its severity.
    pub severity: Severity,
    /// The values found for its parameters, with their evidence.
    pub set: BTreeMap<String, Fact>,
    /// Its required parameters nothing seen fills: give them with `--set`.
    pub missing: Vec<String>,
    /// Why the drill made from the values found is not valid, if it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The command that runs it, when nothing is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl Proposal {
    /// Whether it can run as proposed.
    pub fn ready(&self) -> bool {
        self.command.is_some()
    }
}

/// What `chaos discover` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// What was seen.
    pub observation: Observation,
    /// The parameter values found that the proposed scenarios take, by parameter name.
    pub values: BTreeMap<String, Fact>,
    /// The scenarios of the service's domain, then the generic ones; ready ones first, each
    /// group by severity.
    pub proposals: Vec<Proposal>,
    /// The health check of the service's profile with what was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkup: Option<String>,
}

fn fact(value: impl Into<String>, source: impl Into<String>) -> Fact {
    Fact {
        value: value.into(),
        source: source.into(),
    }
}

/// The first directory among `dirs` (ranked) whose path satisfies `pick`.
fn dir_where(dirs: &[DirFinding], pick: impl Fn(&Path) -> bool) -> Option<&DirFinding> {
    dirs.iter().find(|d| pick(&d.path))
}

/// The ancestor of `path` (or itself) named `name`.
fn ancestor_named(path: &Path, name: &str) -> Option<PathBuf> {
    path.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == name))
        .map(Path::to_path_buf)
}

/// Whether a file name looks like a binary log (`mysql-bin.000001`, `binlog.000042`).
fn is_binlog(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, seq)| {
        seq.len() >= 6
            && seq.bytes().all(|b| b.is_ascii_digit())
            && (stem.ends_with("-bin") || stem.contains("binlog"))
    })
}

/// Every parameter value the observation gives.
pub fn values(obs: &Observation) -> BTreeMap<String, Fact> {
    let mut v = BTreeMap::new();
    let pid = obs.pid;
    let mut put = |names: &[&str], f: Fact| {
        for n in names {
            v.insert((*n).to_owned(), f.clone());
        }
    };
    put(filled_by("pid"), fact(pid.to_string(), "--pid"));
    if let Some(cg) = &obs.cgroup {
        // The service's own cgroup; `app_cgroup` is its clients', not seen here.
        put(&["cgroup"], fact(cg, format!("/proc/{pid}/cgroup")));
    }
    // The main address: the TCP listener with the most connections, then the lowest port.
    let mut own_address = None;
    if let Some(l) = obs.listening.iter().find(|l| l.proto == Proto::Tcp) {
        let addr = reachable(l.address);
        let why = format!(
            "listening on {} ({} connections seen)",
            l.address, l.connections
        );
        let address = fact(addr.to_string(), why.clone());
        own_address = Some(address.clone());
        put(filled_by("address"), address);
        put(
            filled_by("port"),
            fact(addr.port().to_string(), why.clone()),
        );
        put(filled_by("host"), fact(addr.ip().to_string(), why));
    }
    if let Some(c) = obs.clients.first() {
        put(
            &["clients"],
            fact(
                c.address.ip().to_string(),
                format!("{} connections from it", c.connections),
            ),
        );
    }
    // Peers: where it connects to, DNS apart; a database connecting to its own kind's port is
    // a replica following its primary.
    let own_ports: Vec<u16> = obs.listening.iter().map(|l| l.address.port()).collect();
    if let Some(p) = obs.outgoing.first() {
        let why = format!("{} connections to {}", p.connections, p.address);
        put(
            &["dependency_ip", "peers", "brokers"],
            fact(p.address.ip().to_string(), why.clone()),
        );
        put(
            &["dependency_port"],
            fact(p.address.port().to_string(), why),
        );
    }
    let db_ports: &[u16] = match obs.domain {
        Domain::Postgresql => &[5432],
        Domain::Mysql => &[3306],
        _ => &[],
    };
    if let Some(p) = obs
        .outgoing
        .iter()
        .find(|p| db_ports.contains(&p.address.port()) || own_ports.contains(&p.address.port()))
        .filter(|_| !db_ports.is_empty())
    {
        let why = format!(
            "connected to {} (a replica's link to its primary)",
            p.address
        );
        put(
            &["primary_ip"],
            fact(p.address.ip().to_string(), why.clone()),
        );
        put(&["primary_port"], fact(p.address.port().to_string(), why));
        if let Some(own) = own_address {
            put(&["standby_addr", "replica_addr"], own);
        }
    }
    if let Some(d) = obs.dns.first() {
        put(
            &["resolver_ip"],
            fact(
                d.address.ip().to_string(),
                format!("{} DNS queries sent to it", d.connections),
            ),
        );
    }
    // Directories.
    let dirs = &obs.directories;
    let described =
        |d: &DirFinding| format!("{} files, {} writes, {} syncs", d.files, d.writes, d.syncs);
    let data_dir = obs
        .cwd
        .as_ref()
        .filter(|cwd| *cwd != Path::new("/") && dirs.iter().any(|d| d.path.starts_with(cwd)))
        .map(|cwd| {
            fact(
                cwd.display().to_string(),
                "its working directory, written in",
            )
        })
        .or_else(|| {
            dirs.first()
                .map(|d| fact(d.path.display().to_string(), described(d)))
        });
    if let Some(d) = &data_dir {
        let device = dirs
            .iter()
            .find(|x| x.path.starts_with(&d.value) && x.device.is_some())
            .and_then(|x| x.device.clone().map(|dev| (dev, x.path.clone())));
        if let Some((dev, under)) = device {
            put(
                &["device"],
                fact(dev, format!("the device of {}", under.display())),
            );
        }
        put(&["data_dir"], d.clone());
    }
    // The write-ahead log: PostgreSQL's pg_wal, else the directory synced the most.
    if let Some(d) = dir_where(dirs, |p| p.ends_with("pg_wal") || p.ends_with("pg_xlog"))
        .or_else(|| dirs.iter().find(|d| d.syncs > 0))
    {
        put(
            &["wal_dir"],
            fact(d.path.display().to_string(), described(d)),
        );
    }
    if let Some(f) = obs.files.iter().find(|f| {
        f.path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_binlog)
    }) && let Some(parent) = f.path.parent()
    {
        put(
            &["binlog_dir"],
            fact(
                parent.display().to_string(),
                format!("binary log {} written", f.path.display()),
            ),
        );
    }
    for (param, name) in [
        ("clog_dir", "clog"),
        ("ilog_dir", "ilog"),
        ("slog_dir", "slog"),
    ] {
        if let Some(d) = dirs.iter().find_map(|d| ancestor_named(&d.path, name)) {
            put(
                &[param],
                fact(
                    d.display().to_string(),
                    format!("{name} files written in it"),
                ),
            );
        }
    }
    // Logs: where `.log` files or a `log`/`logs` directory are written, else (a queue broker's
    // log segments) the directory written the most.
    let logish = |p: &Path| {
        p.components()
            .any(|c| matches!(c.as_os_str().to_str(), Some("log" | "logs")))
    };
    let log_dir = obs
        .files
        .iter()
        .find(|f| f.usage.writes > 0 && (f.path.extension().is_some_and(|e| e == "log")))
        .and_then(|f| f.path.parent().map(Path::to_path_buf))
        .or_else(|| dir_where(dirs, logish).map(|d| d.path.clone()))
        .or_else(|| {
            (obs.domain == Domain::Queue)
                .then(|| dirs.iter().max_by_key(|d| d.writes).map(|d| d.path.clone()))
                .flatten()
        });
    if let Some(d) = log_dir {
        put(
            &["log_dir"],
            fact(d.display().to_string(), "log files written in it"),
        );
    }
    v
}

/// The scenario `s` with the values found: ready (validated) or what is missing.
fn proposal(s: &Scenario, values: &BTreeMap<String, Fact>) -> Proposal {
    let mut set = BTreeMap::new();
    let mut missing = Vec::new();
    for p in &s.parameters {
        match values.get(&p.name) {
            Some(f) if p.ty.check(&f.value).is_ok() => {
                set.insert(p.name.clone(), f.clone());
            }
            _ if p.required() => missing.push(p.name.clone()),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let mut command = None;
    if missing.is_empty() {
        let given: BTreeMap<String, String> = set
            .iter()
            .map(|(k, f)| (k.clone(), f.value.clone()))
            .collect();
        match s.experiment(&given) {
            Ok(_) => command = Some(run_command(&s.id, &given)),
            Err(errors) => problems = errors.0.iter().map(ToString::to_string).collect(),
        }
    }
    Proposal {
        scenario: s.id.clone(),
        title: s.title.clone(),
        severity: s.severity,
        set,
        missing,
        problems,
        command,
    }
}

/// A value as one shell word.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,[]%+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn sets(values: &BTreeMap<String, String>) -> String {
    values
        .iter()
        .map(|(k, v)| format!(" --set {}", shell_word(&format!("{k}={v}"))))
        .collect()
}

fn run_command(id: &str, values: &BTreeMap<String, String>) -> String {
    format!("chaos run --scenario {id}{}", sets(values))
}

/// The scenarios that apply to what was seen, with the values filled in.
pub fn propose(obs: Observation) -> Discovery {
    let mut domains = vec![obs.domain];
    if obs.domain != Domain::Generic {
        domains.push(Domain::Generic);
    }
    let scenarios: Vec<&Scenario> = domains
        .iter()
        .flat_map(|d| catalog::list(Some(*d)))
        .collect();
    // Only the values these scenarios take (one address fills several names).
    let mut values = values(&obs);
    values.retain(|name, _| scenarios.iter().any(|s| s.parameter(name).is_some()));
    let mut proposals: Vec<Proposal> = scenarios.iter().map(|s| proposal(s, &values)).collect();
    // Stable: the domain's own scenarios before the generic ones within each group.
    proposals.sort_by_key(|p| (!p.ready(), std::cmp::Reverse(p.severity)));
    let checkup = checkup_command(&obs, &values);
    Discovery {
        observation: obs,
        values,
        proposals,
        checkup,
    }
}

/// `chaos checkup` for the service's profile: the probe is the main address; `--set` gives
/// what the checkup does not find by itself.
fn checkup_command(obs: &Observation, values: &BTreeMap<String, Fact>) -> Option<String> {
    let probe = values.get("health_addr")?;
    let mut extra = BTreeMap::new();
    for s in catalog::list(Some(obs.domain)) {
        for p in &s.parameters {
            if fact_for(&p.name).is_none()
                && let Some(f) = values.get(&p.name)
            {
                extra.insert(p.name.clone(), f.value.clone());
            }
        }
    }
    Some(format!(
        "chaos checkup --profile {} --pid {} --probe {}{}",
        obs.domain.as_str(),
        obs.pid,
        shell_word(&probe.value),
        sets(&extra)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{FileFinding, Listener, Peer, tracker::FileUse};

    fn dir(path: &str, files: u64, writes: u64, syncs: u64) -> DirFinding {
        DirFinding {
            path: path.into(),
            files,
            writes,
            syncs,
            device: Some("/dev/loop7".into()),
        }
    }

    fn postgres() -> Observation {
        Observation {
            pid: 4242,
            comm: "postgres".into(),
            exe: "/usr/lib/postgresql/15/bin/postgres".into(),
            domain: Domain::Postgresql,
            seconds: 10.0,
            processes: vec![4242, 4243],
            cwd: Some("/srv/pg".into()),
            cgroup: Some("system.slice/postgresql.service".into()),
            files: vec![FileFinding {
                path: "/srv/pg/log/postgresql.log".into(),
                usage: FileUse {
                    opens_for_write: 1,
                    writes: 12,
                    syncs: 0,
                    directory: false,
                },
            }],
            directories: vec![
                dir("/srv/pg/pg_wal", 2, 900, 850),
                dir("/srv/pg/base/5", 40, 300, 20),
                dir("/srv/pg/log", 1, 12, 0),
            ],
            listening: vec![Listener {
                proto: Proto::Tcp,
                address: "0.0.0.0:5433".parse().unwrap(),
                connections: 8,
            }],
            clients: vec![Peer {
                address: "127.0.0.1:0".parse().unwrap(),
                connections: 8,
            }],
            outgoing: vec![Peer {
                address: "10.1.1.1:5432".parse().unwrap(),
                connections: 1,
            }],
            dns: Vec::new(),
            events: 1000,
            lost_events: 0,
        }
    }

    #[test]
    fn a_postgresql_standby_fills_its_scenarios() {
        let v = values(&postgres());
        assert_eq!(v["pg_addr"].value, "127.0.0.1:5433");
        assert_eq!(v["pg_port"].value, "5433");
        assert_eq!(v["wal_dir"].value, "/srv/pg/pg_wal");
        assert_eq!(v["data_dir"].value, "/srv/pg");
        assert_eq!(v["device"].value, "/dev/loop7");
        assert_eq!(v["log_dir"].value, "/srv/pg/log");
        assert_eq!(v["primary_ip"].value, "10.1.1.1");
        assert_eq!(v["standby_addr"].value, "127.0.0.1:5433");
        let d = propose(postgres());
        // Only the names the proposed scenarios take.
        assert!(d.values.contains_key("wal_dir") && !d.values.contains_key("redis_addr"));
        let wal = d
            .proposals
            .iter()
            .find(|p| p.scenario == "postgresql-wal-dir-full")
            .unwrap();
        assert!(wal.ready(), "{wal:?}");
        assert!(
            wal.command
                .as_deref()
                .unwrap()
                .contains("--set wal_dir=/srv/pg/pg_wal"),
            "{wal:?}"
        );
        // Only the domain's scenarios and the generic ones; ready ones first.
        assert!(
            d.proposals.iter().all(
                |p| p.scenario.starts_with("postgresql-") || p.scenario.starts_with("generic-")
            )
        );
        let first_not_ready = d.proposals.iter().position(|p| !p.ready());
        if let Some(i) = first_not_ready {
            assert!(d.proposals[i..].iter().all(|p| !p.ready()));
        }
        // The application's cgroup is not the database's: it stays to be given.
        let refused = d
            .proposals
            .iter()
            .find(|p| p.scenario == "postgresql-connections-refused")
            .unwrap();
        assert_eq!(refused.missing, ["app_cgroup", "app_addr"]);
        let checkup = d.checkup.unwrap();
        assert!(
            checkup.starts_with(
                "chaos checkup --profile postgresql --pid 4242 --probe 127.0.0.1:5433"
            ),
            "{checkup}"
        );
        assert!(
            checkup.contains("--set wal_dir=/srv/pg/pg_wal"),
            "{checkup}"
        );
    }

    #[test]
    fn binlogs_and_oceanbase_directories_are_recognised() {
        assert!(is_binlog("mysql-bin.000001"));
        assert!(is_binlog("binlog.000042"));
        assert!(!is_binlog("ib_logfile0"));
        assert!(!is_binlog("mysql-bin.index"));
        let mut obs = postgres();
        obs.domain = Domain::Oceanbase;
        obs.directories = vec![
            dir("/ob/store/clog/tenant_1", 3, 10, 10),
            dir("/ob/store/slog", 1, 5, 5),
        ];
        let v = values(&obs);
        assert_eq!(v["clog_dir"].value, "/ob/store/clog");
        assert_eq!(v["slog_dir"].value, "/ob/store/slog");
        assert!(!v.contains_key("ilog_dir"));
    }

    #[test]
    fn nothing_seen_leaves_everything_to_give() {
        let mut obs = postgres();
        obs.listening.clear();
        obs.clients.clear();
        obs.outgoing.clear();
        obs.directories.clear();
        obs.files.clear();
        obs.cwd = None;
        let d = propose(obs);
        assert!(d.checkup.is_none());
        let wal = d
            .proposals
            .iter()
            .find(|p| p.scenario == "postgresql-wal-dir-full")
            .unwrap();
        assert_eq!(wal.missing, ["wal_dir"]);
        assert!(wal.command.is_none());
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("a=/x/y"), "a=/x/y");
        assert_eq!(shell_word("a=b c"), "'a=b c'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
