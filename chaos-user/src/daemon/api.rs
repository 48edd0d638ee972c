//! The routes, their handlers, and the one place where library errors become HTTP statuses.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/faults` | 201 [`Armed`], as `chaos inject --json` |
//! | `GET /v1/faults` | [`Status`] list, as `chaos list --json` |
//! | `GET /v1/faults/{id}` | [`Status`], as `chaos status ID --json` (state `recovered` once recovered, while this daemon runs) |
//! | `DELETE /v1/faults/{id}` | [`Recovered`], as `chaos recover ID --json` |
//! | `GET /v1/probe` | the probe report and strategy table, as `chaos probe --json` |
//! | `GET /v1/openapi.json` | the OpenAPI document |
//! | `GET /healthz` | `{"status": "ok"}` |
//! | `GET /metrics` | Prometheus text ([`super::metrics`]) |
//!
//! Errors are `{"error": "...", "field": "..."}` ([`ErrorBody`]).

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

use super::{BODY_LIMIT, auth, metrics, openapi};
#[cfg(doc)]
use crate::{Armed, Recovered, Status};
use crate::{Error, Injector, spec, strategy};

/// The body of every error answer.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One line: the problem and, where there is one, the fix (the CLI's message).
    pub error: String,
    /// The spec field at fault, for bad input (`percent`, `dst[1]`, `spec` for the whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
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

/// The router for `injector`; with a token, every route but `/healthz` requires it.
pub fn router(injector: Arc<Injector>, token: Option<auth::Token>) -> Router {
    let r = Router::new()
        .route("/v1/faults", get(list_faults).post(create_fault))
        .route("/v1/faults/{id}", get(get_fault).delete(delete_fault))
        .route("/v1/probe", get(probe))
        .route("/v1/openapi.json", get(openapi_doc))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(injector);
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
    let armed = blocking(&injector, move |i| i.inject(&spec)).await?;
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
