//! The routes, their handlers, and the one place where library errors become HTTP statuses.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/faults` | 201 [`Armed`], as `chaos inject --json` |
//! | `GET /v1/faults` | [`Status`] list, as `chaos list --json` |
//! | `GET /v1/faults/{id}` | [`Status`], as `chaos status ID --json` (state `recovered` once recovered, while this daemon runs) |
//! | `DELETE /v1/faults/{id}` | [`Recovered`], as `chaos recover ID --json` |
//! | `POST /v1/experiments` | 202 [`ExperimentStatus`]: the drill is validated and started |
//! | `GET /v1/experiments` | every drill, without events |
//! | `GET /v1/experiments/{id}` | [`ExperimentStatus`]: phase, events, last second, verdict |
//! | `GET /v1/experiments/{id}/report` | the report (`chaos.report/v1`), 409 while it runs |
//! | `GET /v1/experiments/{id}/report.html` | the report's page |
//! | `DELETE /v1/experiments/{id}` | aborts a running drill, forgets a finished one |
//! | `DELETE /v1/faults` | [`Recovered`], as `chaos recover --all --json` |
//! | `GET /v1/catalog` | the risk catalog's scenarios (`?domain=`), as `chaos catalog list --json` |
//! | `GET /v1/catalog/{id}` | one scenario, as `chaos catalog show ID --json` |
//! | `POST /v1/catalog/{id}/run` | 202 [`ExperimentStatus`]: `{"set": {...}}` filled in, started as a drill |
//! | `POST /v1/discover` | `{"pid": N, "seconds": S}`: watches the service S seconds (default 10, at most 300) and answers as `chaos discover --json` |
//! | `GET /v1/probe` | the probe report and strategy table, as `chaos probe --json` |
//! | `GET /v1/openapi.json` | the OpenAPI document |
//! | `GET /healthz` | `{"status": "ok"}` |
//! | `GET /metrics` | Prometheus text ([`super::metrics`]) |
//!
//! Errors are `{"error": "...", "field": "..."}` ([`ErrorBody`]); an experiment spec with
//! several errors lists each in `errors`.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State, rejection::BytesRejection},
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use super::{
    BODY_LIMIT, auth,
    experiments::{ExperimentStatus, Experiments, StartError},
    metrics, openapi,
};
#[cfg(doc)]
use crate::{Armed, Recovered, Status};
use crate::{Error, Injector, experiment, spec, strategy};

/// The body of every error answer.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One line: the problem and, where there is one, the fix (the CLI's message).
    pub error: String,
    /// The spec field at fault, for bad input (`percent`, `dst[1]`, `spec` for the whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every error, when there are several (an experiment spec): each with its own field path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(no_recursion)]
    pub errors: Vec<ErrorBody>,
}

/// An error answer: a status and its body.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ErrorBody,
}

/// The HTTP status for a library error: bad input 400, unknown fault 404, not possible on this
/// kernel 422, missing privilege 403, anything else (the kernel or the store failed) 500.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Invalid { .. } | Error::InvalidField { .. } => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Unsupported { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Privilege(_) => StatusCode::FORBIDDEN,
        Error::NoEbpfObject | Error::Bpf { .. } | Error::Io { .. } | Error::Store { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError {
            status: status_of(&e),
            body: ErrorBody {
                error: e.to_string(),
                field: e.field().map(str::to_owned),
                errors: Vec::new(),
            },
        }
    }
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
                errors: Vec::new(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type Shared = State<Arc<Injector>>;

/// Runs a blocking injector call on tokio's blocking pool (it takes the store's file lock and
/// makes BPF syscalls).
async fn blocking<T: Send + 'static>(
    injector: &Arc<Injector>,
    f: impl FnOnce(&Injector) -> crate::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let injector = injector.clone();
    tokio::task::spawn_blocking(move || f(&injector))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker: {e}")))?
        .map_err(ApiError::from)
}

/// The router for `injector` and the drills of `experiments`; with a token, every route but
/// `/healthz` requires it.
pub fn router(
    injector: Arc<Injector>,
    experiments: Arc<Experiments>,
    token: Option<auth::Token>,
) -> Router {
    let drills = Router::new()
        .route(
            "/v1/experiments",
            get(list_experiments).post(create_experiment),
        )
        .route(
            "/v1/experiments/{id}",
            get(get_experiment).delete(delete_experiment),
        )
        .route("/v1/experiments/{id}/report", get(experiment_report))
        .route("/v1/catalog", get(list_catalog))
        .route("/v1/catalog/{id}", get(get_catalog_scenario))
        .route(
            "/v1/catalog/{id}/run",
            axum::routing::post(run_catalog_scenario),
        )
        .route(
            "/v1/experiments/{id}/report.html",
            get(experiment_report_html),
        )
        .with_state(experiments);
    let r = Router::new()
        .route(
            "/v1/faults",
            get(list_faults).post(create_fault).delete(recover_all),
        )
        .route("/v1/faults/{id}", get(get_fault).delete(delete_fault))
        .route("/v1/probe", get(probe))
        .route("/v1/discover", axum::routing::post(discover))
        .route("/v1/openapi.json", get(openapi_doc))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(injector)
        .merge(drills)
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    match token {
        Some(t) => r.layer(middleware::from_fn_with_state(t, auth::require)),
        None => r,
    }
}

/// Arm a fault: the body is the spec `chaos inject spec` takes.
#[utoipa::path(
    post, path = "/v1/faults", tag = "faults",
    request_body(content = openapi::FaultSpecDoc, description = "The fault, as `chaos inject spec` takes it: the flags' names with `_` for `-`, e.g. {\"kind\": \"net\", \"action\": \"loss\", \"percent\": 30, \"interface\": \"eth0\", \"duration\": \"60s\"}"),
    responses(
        (status = 201, description = "Armed", body = openapi::ArmedDoc),
        (status = 400, description = "The spec is invalid; `field` names the field", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 422, description = "This kernel cannot make the fault", body = ErrorBody),
        (status = 500, description = "Arming failed; nothing is left armed", body = ErrorBody),
    )
)]
pub async fn create_fault(
    State(injector): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::from(Error::InvalidField {
            field: "spec".into(),
            problem: format!("the body is not UTF-8 ({e})"),
            fix: "send the spec as JSON".into(),
        })
    })?;
    let spec = spec::from_json(text)?;
    let armed = blocking(&injector, move |i| i.arm(&spec)).await?;
    // The fault acts already: answer now, and move its packets to the cheaper TCX path after.
    let later = injector.clone();
    tokio::task::spawn_blocking(move || later.hand_over_or_log());
    Ok((StatusCode::CREATED, Json(armed)).into_response())
}

/// Every known fault with its counters.
#[utoipa::path(
    get, path = "/v1/faults", tag = "faults",
    responses(
        (status = 200, description = "As `chaos list --json`", body = [openapi::StatusDoc]),
        (status = 500, description = "The store or the kernel failed", body = ErrorBody),
    )
)]
pub async fn list_faults(State(injector): Shared) -> Result<Response, ApiError> {
    let list = blocking(&injector, |i| i.list()).await?;
    Ok(Json(list).into_response())
}

/// One fault with its counters.
#[utoipa::path(
    get, path = "/v1/faults/{id}", tag = "faults",
    params(("id" = String, Path, description = "Fault id")),
    responses(
        (status = 200, description = "As `chaos status ID --json`", body = openapi::StatusDoc),
        (status = 404, description = "No such fault", body = ErrorBody),
        (status = 500, description = "The store or the kernel failed", body = ErrorBody),
    )
)]
pub async fn get_fault(
    State(injector): Shared,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let status = blocking(&injector, move |i| i.status(&id)).await?;
    Ok(Json(status).into_response())
}

/// Recover a fault.
#[utoipa::path(
    delete, path = "/v1/faults/{id}", tag = "faults",
    params(("id" = String, Path, description = "Fault id")),
    responses(
        (status = 200, description = "As `chaos recover ID --json`", body = openapi::RecoveredDoc),
        (status = 404, description = "No such fault", body = ErrorBody),
        (status = 500, description = "Recovery failed", body = ErrorBody),
    )
)]
pub async fn delete_fault(
    State(injector): Shared,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let out = blocking(&injector, move |i| i.recover(&id)).await?;
    Ok(Json(out).into_response())
}

/// Start a drill: the body is an experiment spec (`docs/experiments.md`), as JSON, or as YAML
/// or TOML with that `Content-Type`.
#[utoipa::path(
    post, path = "/v1/experiments", tag = "experiments",
    request_body(content = openapi::ExperimentSpecDoc, description = "The experiment, as `chaos run` reads it from a file: JSON, or YAML or TOML sent with `Content-Type: application/yaml` or `application/toml`", content_type = "application/json"),
    responses(
        (status = 202, description = "Validated and started; follow it at /v1/experiments/{id}", body = openapi::ExperimentStatusDoc),
        (status = 400, description = "The spec is invalid: `errors` lists every error with its field path", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 429, description = "Too many drills are running", body = ErrorBody),
        (status = 503, description = "The daemon is stopping", body = ErrorBody),
    )
)]
pub async fn create_experiment(
    State(experiments): State<Arc<Experiments>>,
    headers: header::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::from(Error::InvalidField {
            field: "experiment".into(),
            problem: format!("the body is not UTF-8 ({e})"),
            fix: "send the experiment as JSON, YAML or TOML".into(),
        })
    })?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let parsed = if kind.contains("yaml") {
        experiment::from_yaml(text)
    } else if kind.contains("toml") {
        experiment::from_toml(text)
    } else {
        experiment::from_json(text)
    };
    start_drill(&experiments, parsed).await
}

/// Starts `parsed` (or refuses its errors) and answers as `POST /v1/experiments` does.
async fn start_drill(
    experiments: &Arc<Experiments>,
    parsed: Result<experiment::ExperimentSpec, experiment::SpecErrors>,
) -> Result<Response, ApiError> {
    let started = match parsed {
        Ok(spec) => {
            let exps = experiments.clone();
            tokio::task::spawn_blocking(move || exps.start(spec))
                .await
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker: {e}"))
                })?
        }
        Err(errors) => Err(StartError::Spec(errors)),
    };
    match started {
        Ok(status) => Ok((StatusCode::ACCEPTED, Json(status)).into_response()),
        Err(StartError::Spec(errors)) => Err(spec_errors(errors)),
        Err(StartError::Busy) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} drills are running, the most this daemon runs at once; wait for one to end \
                 or DELETE /v1/experiments/ID",
                super::experiments::MAX_RUNNING
            ),
        )),
        Err(StartError::Closed) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping",
        )),
        Err(StartError::Spawn(e)) => Err(e.into()),
    }
}

/// An experiment spec's errors: the first as the answer's `error` and `field`, all in `errors`.
fn spec_errors(errors: experiment::SpecErrors) -> ApiError {
    let mut all: Vec<ErrorBody> = errors
        .0
        .into_iter()
        .map(|e| ApiError::from(e).body)
        .collect();
    let mut body = if all.is_empty() {
        ErrorBody {
            error: "the experiment is invalid".into(),
            field: None,
            errors: Vec::new(),
        }
    } else {
        all[0].clone()
    };
    if all.len() > 1 {
        body.error = format!(
            "{} (and {} more errors, in `errors`)",
            body.error,
            all.len() - 1
        );
        body.errors = std::mem::take(&mut all);
    }
    ApiError {
        status: StatusCode::BAD_REQUEST,
        body,
    }
}

/// Every drill this daemon ran or runs, oldest first, without their events.
#[utoipa::path(
    get, path = "/v1/experiments", tag = "experiments",
    responses((status = 200, description = "The drills", body = [openapi::ExperimentStatusDoc]))
)]
pub async fn list_experiments(State(experiments): State<Arc<Experiments>>) -> Response {
    Json(experiments.list()).into_response()
}

/// One drill: its phase, events, last second and, once over, its verdict.
#[utoipa::path(
    get, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = String, Path, description = "Drill id")),
    responses(
        (status = 200, description = "The drill", body = openapi::ExperimentStatusDoc),
        (status = 404, description = "No such drill", body = ErrorBody),
    )
)]
pub async fn get_experiment(
    State(experiments): State<Arc<Experiments>>,
    Path(id): Path<String>,
) -> Result<Json<ExperimentStatus>, ApiError> {
    experiments.get(&id).map(Json).ok_or_else(|| no_drill(&id))
}

/// Abort a running drill (it is recovered and reported, with verdict `aborted`), or forget a
/// finished one.
#[utoipa::path(
    delete, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = String, Path, description = "Drill id")),
    responses(
        (status = 202, description = "Abort requested; the drill recovers and reports", body = openapi::ExperimentStatusDoc),
        (status = 200, description = "The finished drill is forgotten", body = openapi::ExperimentStatusDoc),
        (status = 404, description = "No such drill", body = ErrorBody),
    )
)]
pub async fn delete_experiment(
    State(experiments): State<Arc<Experiments>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let status = experiments
        .abort_or_forget(&id)
        .ok_or_else(|| no_drill(&id))?;
    let code = match status.state {
        super::experiments::RunState::Running => StatusCode::ACCEPTED,
        super::experiments::RunState::Done => StatusCode::OK,
    };
    Ok((code, Json(status)).into_response())
}

/// A finished drill's report, `chaos.report/v1` as `report.json` holds it.
#[utoipa::path(
    get, path = "/v1/experiments/{id}/report", tag = "experiments",
    params(("id" = String, Path, description = "Drill id")),
    responses(
        (status = 200, description = "The report (docs/experiments.md)", body = Object),
        (status = 404, description = "No such drill", body = ErrorBody),
        (status = 409, description = "The drill is still running", body = ErrorBody),
    )
)]
pub async fn experiment_report(
    State(experiments): State<Arc<Experiments>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = finished_report(&experiments, &id)?;
    Ok(Json(&*report).into_response())
}

/// A finished drill's report as one self-contained HTML page.
#[utoipa::path(
    get, path = "/v1/experiments/{id}/report.html", tag = "experiments",
    params(("id" = String, Path, description = "Drill id")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 404, description = "No such drill", body = ErrorBody),
        (status = 409, description = "The drill is still running", body = ErrorBody),
    )
)]
pub async fn experiment_report_html(
    State(experiments): State<Arc<Experiments>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = finished_report(&experiments, &id)?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        experiment::html::render(&report),
    )
        .into_response())
}

fn finished_report(
    experiments: &Experiments,
    id: &str,
) -> Result<Arc<experiment::report::Report>, ApiError> {
    match experiments.report(id) {
        None => Err(no_drill(id)),
        Some(None) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("drill {id} is still running; its report is ready when `state` is done"),
        )),
        Some(Some(r)) => Ok(r),
    }
}

fn no_drill(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no drill with id {id}; GET /v1/experiments lists them"),
    )
}

/// Recover every fault and remove every trace of the injector, as `chaos recover --all`.
#[utoipa::path(
    delete, path = "/v1/faults", tag = "faults",
    responses(
        (status = 200, description = "As `chaos recover --all --json`", body = openapi::RecoveredDoc),
        (status = 500, description = "Recovery failed", body = ErrorBody),
    )
)]
pub async fn recover_all(State(injector): Shared) -> Result<Response, ApiError> {
    let out = blocking(&injector, |i| i.recover_all()).await?;
    Ok(Json(out).into_response())
}

/// The risk catalog's scenarios, in full (as `chaos catalog list --json`).
#[utoipa::path(
    get, path = "/v1/catalog", tag = "catalog",
    params(("domain" = Option<String>, Query, description = "Only this domain: oceanbase, mysql, postgresql, redis, queue, generic")),
    responses(
        (status = 200, description = "The scenarios", body = [openapi::ScenarioDoc]),
        (status = 400, description = "Unknown domain; the message lists them", body = ErrorBody),
    )
)]
pub async fn list_catalog(
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let mut domain = None;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("domain", d)) => domain = Some(d.parse::<crate::catalog::Domain>()?),
            _ => {
                return Err(ApiError::from(Error::InvalidField {
                    field: "query".into(),
                    problem: format!("unknown query parameter `{pair}`"),
                    fix: "give only ?domain=D".into(),
                }));
            }
        }
    }
    Ok(Json(crate::catalog::list(domain)).into_response())
}

/// One scenario of the risk catalog (as `chaos catalog show ID --json`).
#[utoipa::path(
    get, path = "/v1/catalog/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Scenario id")),
    responses(
        (status = 200, description = "The scenario", body = openapi::ScenarioDoc),
        (status = 404, description = "No such scenario; the message lists them", body = ErrorBody),
    )
)]
pub async fn get_catalog_scenario(Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(crate::catalog::get(&id)?).into_response())
}

/// `POST /v1/catalog/{id}/run`'s body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogRun {
    /// The scenario's parameters, by name, values as strings; those with a default may be
    /// left out.
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
}

/// Run a scenario of the risk catalog: its parameters filled in from `set`, validated and
/// started as a drill, as `chaos run --scenario ID --set ...` does.
#[utoipa::path(
    post, path = "/v1/catalog/{id}/run", tag = "catalog",
    params(("id" = String, Path, description = "Scenario id")),
    request_body(content = CatalogRun, description = "The parameters, e.g. {\"set\": {\"pid\": \"4242\"}}; an empty body gives none", content_type = "application/json"),
    responses(
        (status = 202, description = "Validated and started; follow it at /v1/experiments/{id}", body = openapi::ExperimentStatusDoc),
        (status = 400, description = "A parameter is missing, unknown or of the wrong type (`field` is `set.NAME`, `errors` lists every one), or the body is not {\"set\": {...}}", body = ErrorBody),
        (status = 404, description = "No such scenario; the message lists them", body = ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = ErrorBody),
        (status = 429, description = "Too many drills are running", body = ErrorBody),
        (status = 503, description = "The daemon is stopping", body = ErrorBody),
    )
)]
pub async fn run_catalog_scenario(
    State(experiments): State<Arc<Experiments>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let scenario = crate::catalog::get(&id)?;
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let run: CatalogRun = if body.iter().all(u8::is_ascii_whitespace) {
        CatalogRun::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::from(Error::InvalidField {
                field: "set".into(),
                problem: format!("the body is not a parameters object ({e})"),
                fix: "send {\"set\": {\"NAME\": \"VALUE\", ...}}, every value a string".into(),
            })
        })?
    };
    let parsed = scenario.fill(&run.set).and_then(experiment::from_value);
    start_drill(&experiments, parsed).await
}

/// `POST /v1/discover`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoverRequest {
    /// The service's main process (its descendants are watched too), as the daemon's pid
    /// namespace numbers it.
    pub pid: u32,
    /// How long to watch, 1 to [`MAX_DISCOVER_SECONDS`]; 10 if not given.
    #[serde(default = "default_discover_seconds")]
    #[schema(minimum = 1, maximum = 300, default = 10)]
    pub seconds: u64,
}

/// The longest watch one request may ask (it holds the request open).
pub const MAX_DISCOVER_SECONDS: u64 = 300;

fn default_discover_seconds() -> u64 {
    10
}

/// Watch a live service with eBPF and propose the catalog scenarios that apply, filled in (as
/// `chaos discover --json`). The answer comes when the watch ends.
#[utoipa::path(
    post, path = "/v1/discover", tag = "catalog",
    request_body(content = DiscoverRequest, description = "e.g. {\"pid\": 4242, \"seconds\": 30}", content_type = "application/json"),
    responses(
        (status = 200, description = "What was seen, the values found, the scenarios ready to run", body = openapi::DiscoveryDoc),
        (status = 400, description = "No such process, `seconds` out of range, or the body is not {\"pid\": N, \"seconds\": S}", body = ErrorBody),
        (status = 500, description = "The kernel refused the programs", body = ErrorBody),
    )
)]
pub async fn discover(body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let req: DiscoverRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::from(Error::InvalidField {
            field: "pid".into(),
            problem: format!("the body is not a discovery request ({e})"),
            fix: "send {\"pid\": N, \"seconds\": S}".into(),
        })
    })?;
    if !(1..=MAX_DISCOVER_SECONDS).contains(&req.seconds) {
        return Err(ApiError::from(Error::invalid(
            "seconds",
            format!("{} is out of range", req.seconds),
            format!("give 1 to {MAX_DISCOVER_SECONDS} seconds"),
        )));
    }
    let found = tokio::task::spawn_blocking(move || {
        let never = std::sync::atomic::AtomicBool::new(false);
        crate::discover::discover(req.pid, std::time::Duration::from_secs(req.seconds), &never)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker: {e}")))??;
    Ok(Json(found).into_response())
}

/// What the kernel allows, and which strategy serves each fault kind (the daemon's probe, made
/// once at start).
#[utoipa::path(
    get, path = "/v1/probe", tag = "probe",
    responses((status = 200, description = "As `chaos probe --json`", body = openapi::ProbeDoc))
)]
pub async fn probe(State(injector): Shared) -> Response {
    let report = injector.probe();
    Json(serde_json::json!({ "probe": report, "faults": strategy::table(report) })).into_response()
}

/// Liveness.
#[utoipa::path(
    get, path = "/healthz", tag = "daemon",
    responses((status = 200, description = "The daemon answers", body = openapi::HealthDoc))
)]
pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "daemon",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4: chaos_faults_active, chaos_fault_{seen,matched,acted}_total{id,kind,strategy}", body = String, content_type = "text/plain"),
        (status = 500, description = "The store or the kernel failed", body = ErrorBody),
    )
)]
pub async fn metrics(State(injector): Shared) -> Result<Response, ApiError> {
    let list = blocking(&injector, |i| i.list()).await?;
    Ok((
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&list),
    )
        .into_response())
}

/// The OpenAPI document.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "daemon",
    responses((status = 200, description = "This document", body = Object))
)]
pub async fn openapi_doc() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; GET /v1/openapi.json lists them",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; GET /v1/openapi.json lists them",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses() {
        let cases = [
            (
                Error::invalid("percent", "150 is over 100", "give 0-100"),
                400,
                Some("percent"),
            ),
            (
                Error::InvalidField {
                    field: "dst[1]".into(),
                    problem: "not a CIDR".into(),
                    fix: "e.g. 10.0.0.0/8".into(),
                },
                400,
                Some("dst[1]"),
            ),
            (Error::NotFound("abc".into()), 404, None),
            (
                Error::Unsupported {
                    what: "net loss".into(),
                    why: "no tc".into(),
                },
                422,
                None,
            ),
            (Error::Privilege("needs CAP_BPF".into()), 403, None),
            (Error::NoEbpfObject, 500, None),
            (Error::io("x", std::io::Error::other("y")), 500, None),
        ];
        for (e, status, field) in cases {
            let msg = e.to_string();
            let a = ApiError::from(e);
            assert_eq!(a.status.as_u16(), status, "{msg}");
            assert_eq!(a.body.field.as_deref(), field, "{msg}");
            assert_eq!(a.body.error, msg);
        }
    }

    #[test]
    fn error_body_has_field_only_for_bad_input() {
        let v = serde_json::to_value(ApiError::from(Error::NotFound("x".into())).body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "no fault with id x; `chaos list` shows the armed faults"})
        );
        let v = serde_json::to_value(ApiError::from(Error::invalid("percent", "bad", "fix")).body)
            .unwrap();
        assert_eq!(v["field"], "percent");
    }

    #[test]
    fn injector_is_shareable() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Injector>();
    }
}
