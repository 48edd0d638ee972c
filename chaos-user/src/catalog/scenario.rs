//! One scenario of the catalog: a known risk, the drill that tries it, and the advice.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::{self, Parameter};
use crate::{
    Error,
    experiment::{self, ExperimentSpec, Schedule, SpecErrors},
};

/// The kind of system a scenario is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// OceanBase (observer processes, clog/ilog/slog, data disks, inter-node links).
    Oceanbase,
    /// MySQL.
    Mysql,
    /// PostgreSQL.
    Postgresql,
    /// Redis.
    Redis,
    /// Message queues (Kafka, RabbitMQ, Pulsar...).
    Queue,
    /// Any service.
    Generic,
}

impl Domain {
    /// Every domain, in the catalog's order.
    pub const ALL: [Domain; 6] = [
        Domain::Oceanbase,
        Domain::Mysql,
        Domain::Postgresql,
        Domain::Redis,
        Domain::Queue,
        Domain::Generic,
    ];

    /// The domain's name, as written in scenario files and `--domain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Oceanbase => "oceanbase",
            Domain::Mysql => "mysql",
            Domain::Postgresql => "postgresql",
            Domain::Redis => "redis",
            Domain::Queue => "queue",
            Domain::Generic => "generic",
        }
    }
}

impl std::str::FromStr for Domain {
    type Err = Error;

    fn from_str(s: &str) -> Result<Domain, Error> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "domain",
                    format!("`{s}` is not a domain of the catalog"),
                    format!("give one of {}", Domain::ALL.map(Domain::as_str).join(", ")),
                )
            })
    }
}

/// How bad it is when the risk comes true unprepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A nuisance.
    Low,
    /// Degraded service.
    Medium,
    /// An outage.
    High,
    /// Data loss or a long outage.
    Critical,
}

impl Severity {
    /// The severity's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A scenario, as its file in `catalog/` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its id: the file's name without `.yaml`.
    pub id: String,
    /// The kind of system.
    pub domain: Domain,
    /// One line.
    pub title: String,
    /// How bad it is.
    pub severity: Severity,
    /// The risk, in plain words.
    pub risk: String,
    /// What to fill in.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// The drill: an experiment as `chaos run` reads it (`docs/experiments.md`), with `${name}`
    /// placeholders; its `name` is the scenario's id and its `description` the risk when the
    /// file gives none.
    pub experiment: Value,
    /// What a resilient system does.
    pub expected: String,
    /// How to see it happen in production.
    pub detect: Vec<String>,
    /// How to make it less likely or less harmful.
    pub prevention: Vec<String>,
    /// What to do when it happens.
    pub emergency: Vec<String>,
}

impl Scenario {
    /// The parameter named `name`.
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// The experiment's text with the parameters filled in from `set` and the defaults, not yet
    /// read as a spec.
    pub fn fill(&self, set: &BTreeMap<String, String>) -> Result<Value, SpecErrors> {
        let values = params::bind(&self.parameters, set).map_err(SpecErrors)?;
        let mut value = params::substitute(&self.experiment, &values);
        if let Value::Object(top) = &mut value {
            top.entry("name").or_insert_with(|| self.id.clone().into());
            top.entry("description")
                .or_insert_with(|| self.risk.trim().to_owned().into());
        }
        Ok(value)
    }

    /// The drill with the parameters filled in, read and validated exactly as `chaos run` reads
    /// a file: every error is reported, a bad parameter as `set.NAME`.
    pub fn experiment(
        &self,
        set: &BTreeMap<String, String>,
    ) -> Result<(ExperimentSpec, Schedule), SpecErrors> {
        let spec = experiment::from_value(self.fill(set)?)?;
        let schedule = spec.validate()?;
        Ok((spec, schedule))
    }

    /// The parameters' examples, as `--set` pairs.
    pub fn examples(&self) -> BTreeMap<String, String> {
        self.parameters
            .iter()
            .map(|p| (p.name.clone(), p.example.clone()))
            .collect()
    }

    /// The scenario's own consistency: fields not empty, parameter names well-formed and
    /// unique, every placeholder a parameter and every parameter used, each example and
    /// default of its type, and the drill made from the examples valid. Every problem, one
    /// line each.
    pub fn check(&self, file_id: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.id != file_id {
            problems.push(format!(
                "id is `{}` but the file is {file_id}.yaml",
                self.id
            ));
        }
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            problems.push(format!(
                "id `{}` must be 1-64 lowercase letters, digits and `-`",
                self.id
            ));
        }
        for (field, text) in [
            ("title", &self.title),
            ("risk", &self.risk),
            ("expected", &self.expected),
        ] {
            if text.trim().is_empty() {
                problems.push(format!("{field} is empty"));
            }
        }
        for (field, list) in [
            ("detect", &self.detect),
            ("prevention", &self.prevention),
            ("emergency", &self.emergency),
        ] {
            if list.is_empty() || list.iter().any(|s| s.trim().is_empty()) {
                problems.push(format!("{field} must list at least one non-empty line"));
            }
        }
        let mut declared = BTreeSet::new();
        for p in &self.parameters {
            let name_ok = !p.name.is_empty()
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !name_ok {
                problems.push(format!(
                    "parameter `{}`: a name is lowercase letters, digits and `_`",
                    p.name
                ));
            }
            if !declared.insert(p.name.clone()) {
                problems.push(format!("parameter `{}` is declared twice", p.name));
            }
            if p.description.trim().is_empty() {
                problems.push(format!("parameter `{}` has no description", p.name));
            }
            for (what, v) in [
                ("example", Some(&p.example)),
                ("default", p.default.as_ref()),
            ] {
                if let Some(v) = v
                    && let Err(e) = p.ty.check(v)
                {
                    problems.push(format!("parameter `{}`: its {what} {e}", p.name));
                }
            }
        }
        let mut used = BTreeSet::new();
        params::placeholders_in(&self.experiment, &mut used);
        for name in used.difference(&declared) {
            problems.push(format!(
                "the experiment uses ${{{name}}}, which is not a declared parameter"
            ));
        }
        for name in declared.difference(&used) {
            problems.push(format!(
                "parameter `{name}` is declared but the experiment does not use it"
            ));
        }
        if let Value::Object(top) = &self.experiment {
            if top.contains_key("name") {
                problems.push("the experiment gives a name; the scenario's id is its name".into());
            }
        } else {
            problems.push("the experiment is not a mapping".into());
        }
        match self.experiment(&self.examples()) {
            Ok(_) => {}
            Err(errors) => problems.extend(
                errors
                    .0
                    .iter()
                    .map(|e| format!("the drill made from the examples: {e}")),
            ),
        }
        problems
    }
}
