//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations, committed
//! as `docs/openapi.json` (a unit test fails when it is stale) and served at
//! `GET /v1/openapi.json`. The catalog's scenarios ([`ScenarioDoc`]) are described by hand too.
//!
//! The answers are the library's own types ([`crate::Armed`], [`crate::Status`]...), which do
//! not derive `ToSchema` (that would spread utoipa over the spec, store and strategy modules).
//! Their schemas here are written by hand: [`ArmedDoc`] and [`RecoveredDoc`] list every field
//! (a unit test checks they match what serde writes); [`StatusDoc`] lists the common fields and
//! leaves the backends' records free-form; [`FaultSpecDoc`] requires `kind` and `action` and
//! leaves the rest (each kind's fields, checked by the server exactly as the CLI checks them)
//! free-form.

use std::{borrow::Cow, sync::OnceLock};

use utoipa::{
    OpenApi, PartialSchema, ToSchema,
    openapi::{
        RefOr, Type,
        schema::{AdditionalProperties, ObjectBuilder, Schema},
    },
};

use super::api;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "chaos",
        description = "The chaos fault injector's daemon (`chaos serve`): arm, list, inspect and recover faults; run drills and fetch their reports. Over TCP every route but /healthz needs `Authorization: Bearer <token>`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        api::create_fault,
        api::list_faults,
        api::get_fault,
        api::delete_fault,
        api::create_experiment,
        api::list_experiments,
        api::get_experiment,
        api::delete_experiment,
        api::experiment_report,
        api::experiment_report_html,
        api::recover_all,
        api::list_catalog,
        api::get_catalog_scenario,
        api::run_catalog_scenario,
        api::discover,
        api::probe,
        api::healthz,
        api::metrics,
        api::openapi_doc,
    ),
    components(schemas(api::ErrorBody))
)]
pub struct ApiDoc;

/// The document as pretty JSON, made once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        s.push('\n');
        s
    })
}

/// `POST /v1/faults`'s body: `kind` and `action`, and each kind's own fields.
pub struct FaultSpecDoc;

impl PartialSchema for FaultSpecDoc {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "A fault, as `chaos inject spec` takes it: the flags' names with `_` for `-`. \
                 Unknown, mistyped or missing fields are refused with 400 naming the field.",
            ))
            .property(
                "kind",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(crate::spec::KINDS)),
            )
            .required("kind")
            .property(
                "action",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("e.g. loss, delay, fail, slow, fill")),
            )
            .required("action")
            .property(
                "duration",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "How long the fault lasts (30s, 5m, 1h); 10m if not given",
                    )),
            )
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)))
            .into()
    }
}

impl ToSchema for FaultSpecDoc {
    fn name() -> Cow<'static, str> {
        "FaultSpec".into()
    }
}

/// A fault just armed ([`crate::Armed`]).
#[derive(utoipa::ToSchema)]
#[schema(as = Armed)]
#[expect(dead_code, reason = "a schema only: the answers are crate::Armed")]
pub struct ArmedDoc {
    /// Its id.
    id: String,
    /// How it is made, e.g. `tcx-bpf`.
    strategy: String,
    /// When it ends by itself, in the kernel, ms since the epoch.
    deadline_unix_ms: u64,
}

/// What a recovery removed ([`crate::Recovered`]).
#[derive(utoipa::ToSchema)]
#[schema(as = Recovered)]
#[expect(dead_code, reason = "a schema only: the answers are crate::Recovered")]
pub struct RecoveredDoc {
    /// Fault ids recovered.
    faults: Vec<String>,
    /// Attachments detached.
    attachments: u64,
    /// Unreadable state files removed.
    unreadable: Option<Vec<String>>,
    /// Traces no record named, removed.
    swept: Option<Vec<String>>,
}

/// Per-fault counters ([`crate::Counters`]).
#[derive(utoipa::ToSchema)]
#[schema(as = Counters)]
#[expect(dead_code, reason = "a schema only: the answers are crate::Counters")]
pub struct CountersDoc {
    /// Packets or calls the rule examined.
    seen: u64,
    /// Those of its target, within the deadline.
    matched: u64,
    /// Those it acted on.
    acted: u64,
}

/// A fault's record, state and counters ([`crate::Status`]).
#[derive(utoipa::ToSchema)]
#[schema(as = Status)]
#[expect(dead_code, reason = "a schema only: the answers are crate::Status")]
pub struct StatusDoc {
    /// Fault id.
    id: String,
    /// The spec it was armed with.
    spec: FaultSpecDoc,
    /// How it is made.
    strategy: String,
    /// `arming`, `armed` or `recovered`.
    state: String,
    /// When it was armed, ms since the epoch.
    created_unix_ms: u64,
    /// Its deadline, ms since the epoch.
    deadline_unix_ms: u64,
    /// Its deadline on `CLOCK_BOOTTIME`, ns.
    deadline_boot_ns: u64,
    /// Whether the deadline has passed.
    expired: bool,
    /// Time left, ms.
    remaining_ms: u64,
    /// Counters, for network, syscall and block-layer I/O faults.
    counters: Option<CountersDoc>,
    /// Block I/O measured on the watched devices.
    #[schema(value_type = Option<Vec<Object>>)]
    io: Option<Vec<serde_json::Value>>,
    /// The network backend's record.
    #[schema(value_type = Option<Object>)]
    net: Option<serde_json::Value>,
    /// The syscall backend's record.
    #[schema(value_type = Option<Object>)]
    syscall: Option<serde_json::Value>,
    /// The block backend's record.
    #[schema(value_type = Option<Object>)]
    block: Option<serde_json::Value>,
    /// Who armed it: `{"kind": "cli"|"daemon"|"library", "pid", "start_ticks"}`.
    #[schema(value_type = Option<Object>)]
    owner: Option<serde_json::Value>,
    /// When it was recovered, ms since the epoch (state `recovered`).
    recovered_unix_ms: Option<u64>,
    /// Who recovered it, as `owner`.
    #[schema(value_type = Option<Object>)]
    recovered_by: Option<serde_json::Value>,
    /// Its counters just before it was recovered.
    final_counters: Option<CountersDoc>,
}

/// `POST /v1/experiments`'s body: an experiment, as `chaos run` reads it.
pub struct ExperimentSpecDoc;

impl PartialSchema for ExperimentSpecDoc {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "An experiment (docs/experiments.md): name, target, probes, admission, traffic, \
                 baseline, duration, faults (each a FaultSpec with its window), expect, \
                 recovery, abort. Every error is reported with its field path.",
            ))
            .property("name", ObjectBuilder::new().schema_type(Type::String))
            .required("name")
            .property(
                "duration",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("Length of the fault phase, e.g. 2m")),
            )
            .required("duration")
            .property(
                "faults",
                ObjectBuilder::new()
                    .schema_type(Type::Array)
                    .description(Some("Each: name, fault (a FaultSpec), start, duration")),
            )
            .required("faults")
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)))
            .into()
    }
}

impl ToSchema for ExperimentSpecDoc {
    fn name() -> Cow<'static, str> {
        "ExperimentSpec".into()
    }
}

/// A drill run by the daemon ([`super::experiments::ExperimentStatus`]).
#[derive(utoipa::ToSchema)]
#[schema(as = ExperimentStatus)]
#[expect(dead_code, reason = "a schema only: the answers are ExperimentStatus")]
pub struct ExperimentStatusDoc {
    /// Its id.
    id: String,
    /// The spec's name.
    name: String,
    /// `running` or `done`.
    state: String,
    /// When it was started, ms since the epoch.
    started_unix_ms: u64,
    /// The phase running: admission, traffic, inject, recover, verify, report.
    phase: Option<String>,
    /// Asked to abort.
    abort_requested: bool,
    /// Once done: passed, failed, aborted, refused.
    verdict: Option<String>,
    /// Once done, unless passed: the first cause.
    reason: Option<String>,
    /// What happened so far, oldest first: objects tagged by `event` (phase_start, check,
    /// armed, ended, abort, recovered, ...), as `chaos run --json` prints them.
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// The last second's figures.
    #[schema(value_type = Option<Object>)]
    last_second: Option<serde_json::Value>,
    /// Where the report is, once done.
    report: Option<String>,
}

/// A parameter of a catalog scenario ([`crate::catalog::Parameter`]).
#[derive(utoipa::ToSchema)]
#[schema(as = ScenarioParameter)]
#[expect(
    dead_code,
    reason = "a schema only: the answers are crate::catalog::Parameter"
)]
pub struct ParameterDoc {
    /// Its name: `${name}` in the drill, a key of `set`.
    name: String,
    /// What it holds: pid, cgroup, path, device, port, address, ip, interface, duration,
    /// size, percent, count, url, text.
    #[schema(rename = "type")]
    ty: String,
    /// What to give.
    description: String,
    /// A value that fits.
    example: String,
    /// The value when none is given; without one it is required.
    default: Option<String>,
}

/// A scenario of the risk catalog ([`crate::catalog::Scenario`]).
#[derive(utoipa::ToSchema)]
#[schema(as = Scenario)]
#[expect(
    dead_code,
    reason = "a schema only: the answers are crate::catalog::Scenario"
)]
pub struct ScenarioDoc {
    /// Its id.
    id: String,
    /// oceanbase, mysql, postgresql, redis, queue or generic.
    domain: String,
    /// One line.
    title: String,
    /// low, medium, high or critical.
    severity: String,
    /// The risk, in plain words.
    risk: String,
    /// What to fill in.
    parameters: Vec<ParameterDoc>,
    /// The drill, an ExperimentSpec with `${name}` placeholders.
    #[schema(value_type = Object)]
    experiment: serde_json::Value,
    /// What a resilient system does.
    expected: String,
    /// How to see it in production.
    detect: Vec<String>,
    /// Prevention advice.
    prevention: Vec<String>,
    /// What to do when it happens.
    emergency: Vec<String>,
}

/// `chaos probe --json`.
#[derive(utoipa::ToSchema)]
#[schema(as = Probe)]
#[expect(dead_code, reason = "a schema only")]
pub struct ProbeDoc {
    /// Kernel release, one row per feature, probe time.
    #[schema(value_type = Object)]
    probe: serde_json::Value,
    /// Per fault kind: the strategy that serves it here, or why none can.
    #[schema(value_type = Vec<Object>)]
    faults: Vec<serde_json::Value>,
}

/// `chaos discover --json` (docs/discover.md).
#[derive(utoipa::ToSchema)]
#[schema(as = Discovery)]
#[expect(dead_code, reason = "a schema only")]
pub struct DiscoveryDoc {
    /// What was seen: `pid`, `comm`, `exe`, `domain`, `seconds`, `processes`, `cwd`, `cgroup`,
    /// `files`, `directories`, `listening`, `clients`, `outgoing`, `dns`, `events`,
    /// `lost_events`.
    #[schema(value_type = Object)]
    observation: serde_json::Value,
    /// Each parameter found: `{value, source}`.
    #[schema(value_type = Object)]
    values: serde_json::Value,
    /// The scenarios: `scenario`, `title`, `severity`, `set`, `missing`, `problems`, and
    /// `command` when ready to run.
    #[schema(value_type = Vec<Object>)]
    proposals: Vec<serde_json::Value>,
    /// The `chaos checkup` command for the service's profile, when it listens on TCP.
    checkup: Option<String>,
}

/// `GET /healthz`.
#[derive(utoipa::ToSchema)]
#[schema(as = Health)]
#[expect(dead_code, reason = "a schema only")]
pub struct HealthDoc {
    /// `ok`.
    status: String,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

    /// `docs/openapi.json` is the generated document. `CHAOS_WRITE_OPENAPI=1` rewrites it.
    #[test]
    fn committed_document_is_current() {
        let generated = document();
        if std::env::var_os("CHAOS_WRITE_OPENAPI").is_some() {
            std::fs::write(COMMITTED, generated).expect("writing docs/openapi.json");
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not the generated document; regenerate it with\n  \
             CHAOS_WRITE_OPENAPI=1 AYA_BUILD_SKIP=1 cargo test -p chaos-user --lib \
             daemon::openapi\nand commit it"
        );
    }

    /// The property names of schema `name` in the document.
    fn properties(name: &str) -> BTreeSet<String> {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name} in {doc:#}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys(v: impl serde::Serialize) -> BTreeSet<String> {
        serde_json::to_value(v)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// The hand-written schemas name exactly the fields serde writes.
    #[test]
    fn schemas_match_the_types() {
        let armed = crate::Armed {
            id: "x".into(),
            strategy: crate::strategy::Strategy::Syscall(
                crate::strategy::SyscallStrategy::SeccompNotify,
            ),
            deadline_unix_ms: 1,
        };
        assert_eq!(keys(&armed), properties("Armed"));
        let recovered = crate::Recovered {
            unreadable: vec!["a".into()],
            swept: vec!["b".into()],
            ..Default::default()
        };
        assert_eq!(keys(&recovered), properties("Recovered"));
        assert_eq!(keys(crate::Counters::default()), properties("Counters"));
        assert_eq!(
            keys(api::ErrorBody {
                error: "e".into(),
                field: Some("f".into()),
                errors: vec![api::ErrorBody {
                    error: "e".into(),
                    field: None,
                    errors: Vec::new(),
                }],
            }),
            properties("ErrorBody")
        );
        let drill =
            super::super::experiments::ExperimentStatus::starting("x-1".into(), "n".into(), 0);
        assert_eq!(keys(&drill), properties("ExperimentStatus"));
        let scenario = crate::catalog::all()
            .iter()
            .find(|s| s.parameters.iter().any(|p| p.default.is_some()))
            .expect("a scenario with a default");
        assert_eq!(keys(scenario), properties("Scenario"));
        let param = scenario
            .parameters
            .iter()
            .find(|p| p.default.is_some())
            .unwrap();
        assert_eq!(keys(param), properties("ScenarioParameter"));
        let mut obs = crate::discover::Observation::nothing(1);
        obs.listening.push(crate::discover::Listener {
            proto: crate::discover::procfs::Proto::Tcp,
            address: "127.0.0.1:80".parse().unwrap(),
            connections: 1,
        });
        let found = crate::discover::propose::propose(obs);
        assert!(found.checkup.is_some());
        assert_eq!(keys(&found), properties("Discovery"));
    }

    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        for p in [
            "/v1/faults",
            "/v1/faults/{id}",
            "/v1/experiments",
            "/v1/experiments/{id}",
            "/v1/experiments/{id}/report",
            "/v1/experiments/{id}/report.html",
            "/v1/catalog",
            "/v1/catalog/{id}",
            "/v1/catalog/{id}/run",
            "/v1/probe",
            "/v1/discover",
            "/healthz",
            "/metrics",
            "/v1/openapi.json",
        ] {
            assert!(doc["paths"][p].is_object(), "{p} missing");
        }
    }
}
