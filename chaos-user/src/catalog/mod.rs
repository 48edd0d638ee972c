//! The risk catalog: known risks of common kinds of systems, each a scenario file in the
//! repository's `catalog/` directory, embedded in the binary (`docs/catalog.md`).
//!
//! A scenario holds the risk in plain words, a drill that tries it (an experiment as `chaos run`
//! reads it, with `${name}` placeholders for what differs between installations: pids, cgroups,
//! directories, devices, addresses), the behaviour a resilient system shows, how to detect the
//! risk in production, and prevention and emergency advice. [`Scenario::experiment`] fills the
//! parameters in from `--set` pairs (or the daemon's `set` object) and the defaults, checks
//! each against its type, and reads and validates the result exactly as `chaos run` reads a
//! file; the drill then runs as any other.

mod params;
mod scenario;

use std::sync::OnceLock;

pub use self::{
    params::{ParamType, Parameter, placeholders},
    scenario::{Domain, Scenario, Severity},
};

/// The scenario files, by id, embedded from `catalog/ID.yaml` (a unit test fails when a file
/// there is missing from this list).
macro_rules! files {
    ($($id:literal),* $(,)?) => {
        &[$(($id, include_str!(concat!("../../../catalog/", $id, ".yaml")))),*]
    };
}

/// Every scenario file: (id, YAML text).
pub const FILES: &[(&str, &str)] = files![
    "oceanbase-observer-io-hang",
    "oceanbase-clog-dir-full",
    "oceanbase-ilog-dir-full",
    "oceanbase-slog-dir-full",
    "oceanbase-data-disk-full",
    "oceanbase-internode-partition",
    "oceanbase-internode-delay",
    "oceanbase-internode-loss",
    "mysql-fsync-eio",
    "mysql-binlog-dir-full",
    "mysql-slow-data-disk",
    "mysql-connections-refused",
    "mysql-replication-partition",
    "postgresql-fsync-eio",
    "postgresql-wal-dir-full",
    "postgresql-slow-data-disk",
    "postgresql-connections-refused",
    "postgresql-replication-partition",
    "redis-aof-fsync-eio",
    "redis-aof-disk-full",
    "redis-slow-disk-appendfsync-always",
    "redis-client-network-delay",
    "queue-broker-disk-full",
    "queue-producer-broker-partition",
    "queue-slow-consumer-disk",
    "generic-dns-failure",
    "generic-dependency-timeout",
    "generic-connect-refused",
    "generic-fd-exhausted",
    "generic-fork-eagain",
    "generic-disk-read-errors",
];

/// Reads one scenario file.
pub fn parse(text: &str) -> Result<Scenario, String> {
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

/// Every scenario, in the catalog's order (by domain, then as listed in [`FILES`]).
pub fn all() -> &'static [Scenario] {
    static ALL: OnceLock<Vec<Scenario>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<Scenario> = FILES
            .iter()
            .map(|(id, text)| {
                // The files are part of the binary and the unit tests read each of them.
                parse(text).unwrap_or_else(|e| panic!("catalog/{id}.yaml: {e}"))
            })
            .collect();
        all.sort_by_key(|s| s.domain);
        all
    })
}

/// The scenarios of `domain`, or all of them.
pub fn list(domain: Option<Domain>) -> Vec<&'static Scenario> {
    all()
        .iter()
        .filter(|s| domain.is_none_or(|d| s.domain == d))
        .collect()
}

/// The scenario `id`; an unknown id is [`crate::Error::NotFound`], naming the known ones.
pub fn get(id: &str) -> crate::Result<&'static Scenario> {
    all().iter().find(|s| s.id == id).ok_or_else(|| {
        crate::Error::NotFound(format!(
            "no scenario `{id}` in the catalog; `chaos catalog list` shows them: {}",
            all()
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every file of `catalog/` is embedded, and nothing else.
    #[test]
    fn every_file_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../catalog");
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
            .expect("catalog/")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let listed: BTreeSet<String> = FILES.iter().map(|(id, _)| format!("{id}.yaml")).collect();
        assert_eq!(
            on_disk, listed,
            "catalog/ and catalog::FILES differ: add the file's id to FILES"
        );
    }

    /// Every scenario reads, is consistent, and its examples make a valid drill.
    #[test]
    fn every_scenario_is_a_valid_drill() {
        let mut problems = Vec::new();
        for (id, text) in FILES {
            match parse(text) {
                Ok(s) => problems.extend(s.check(id).into_iter().map(|p| format!("{id}: {p}"))),
                Err(e) => problems.push(format!("{id}: {e}")),
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// What the issue asks for: at least 25, unique ids, each domain present.
    #[test]
    fn the_catalog_covers_every_domain() {
        assert!(all().len() >= 25, "{} scenarios", all().len());
        let ids: BTreeSet<&str> = all().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), all().len(), "ids are not unique");
        for d in Domain::ALL {
            assert!(!list(Some(d)).is_empty(), "no scenario for {}", d.as_str());
        }
        assert!(
            list(Some(Domain::Redis))
                .iter()
                .all(|s| s.domain == Domain::Redis)
        );
    }

    /// The check finds what is wrong: a placeholder without a parameter, a parameter not
    /// used, a drill that does not validate, an id that is not the file's.
    #[test]
    fn a_broken_scenario_is_caught() {
        let mut s = get("generic-dependency-timeout").unwrap().clone();
        assert!(s.check(&s.id.clone()).is_empty());
        s.experiment["probes"][0]["tcp"] = "${nowhere}".into();
        s.experiment["traffic"][0]["tcp"]["address"] = "127.0.0.1:1".into();
        s.experiment["expect"][0]["fault"] = "no-such-fault".into();
        let problems = s.check("other-id").join("\n");
        for needle in [
            "the file is other-id.yaml",
            "${nowhere}, which is not a declared parameter",
            "`health_addr` is declared but the experiment does not use it",
            "expect[0].fault",
        ] {
            assert!(problems.contains(needle), "{needle} not in:\n{problems}");
        }
    }

    #[test]
    fn parameters_are_filled_in_with_their_types() {
        let s = get("generic-connect-refused").unwrap();
        let (spec, _) = s.experiment(&s.examples()).unwrap();
        assert_eq!(spec.name, s.id);
        let json = serde_json::to_value(&spec).unwrap();
        assert!(
            !json.to_string().contains("${"),
            "a placeholder is left: {json}"
        );
        let mut set = s.examples();
        set.insert("cgroup".into(), "a/../b".into());
        set.insert("colour".into(), "red".into());
        let errors = s.experiment(&set).unwrap_err();
        assert_eq!(errors.fields(), ["set.colour", "set.cgroup"]);
        let mut missing = s.examples();
        missing.remove("cgroup");
        let errors = s.experiment(&missing).unwrap_err();
        assert_eq!(errors.fields(), ["set.cgroup"]);
        assert!(errors.to_string().contains("--set cgroup="), "{errors}");
    }

    #[test]
    fn unknown_ids_and_domains_are_refused_with_the_choices() {
        let e = get("no-such").unwrap_err().to_string();
        assert!(e.contains("generic-connect-refused"), "{e}");
        let e = "nosql".parse::<Domain>().unwrap_err().to_string();
        assert!(e.contains("oceanbase, mysql"), "{e}");
        assert_eq!("redis".parse::<Domain>().unwrap(), Domain::Redis);
    }
}
