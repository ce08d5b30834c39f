//! The activity log: our own internal service, at
//! `POST /internal/v1/activity-log`, that keeps the story of each saga.
//!
//! It has no outside model, so its shapes are ours: camelCase JSON in,
//! `{id, recordedAt}` out with 201, errors as
//! `{"error": {code, message, field}}`. A repeated `Idempotency-Key` gets
//! the first answer again and records nothing, which is how the real
//! service is meant to behave.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::app::{self, App, Meta};
use super::faults::Service;
use super::ledger::ActivityEntry;

pub(crate) fn routes(app: &App) -> Router<App> {
    let router = Router::new().route("/internal/v1/activity-log", post(record));
    app::guarded(router, app, Service::Activity)
}

/// The first answer for each idempotency key.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    by_key: HashMap<String, Value>,
}

/// The request body. Required fields are optional here so that a
/// missing one is named in the answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivityLog {
    saga_id: Option<String>,
    correlation_id: Option<String>,
    user_id: Option<String>,
    final_status: Option<String>,
    #[serde(default)]
    activities: Vec<Value>,
}

async fn record(State(app): State<App>, meta: Meta, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<ActivityLog>(&body);

    // One lock for lookup and insert, so two requests with one key
    // cannot both record.
    let mut state = app.lock();
    let key = meta.idempotency_key.clone();
    if let Some(first) = key
        .as_ref()
        .and_then(|key| state.activities.by_key.get(key))
    {
        return (StatusCode::CREATED, Json(first)).into_response();
    }
    let Ok(log) = parsed else {
        let message = "The body is not a valid activity log.";
        return error(StatusCode::BAD_REQUEST, "invalid_body", message, None);
    };
    let (saga_id, final_status) = match required(&log) {
        Ok(fields) => fields,
        Err(problem) => return problem.response(),
    };

    let id = format!("act_{:016x}", rand::random::<u64>());
    let recorded_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let answer = json!({ "id": id, "recordedAt": recorded_at });
    state.ledger.activities.push(ActivityEntry {
        id,
        saga_id,
        // The header wins; the body's copy stands in without it.
        correlation_id: meta.correlation_id.or(log.correlation_id),
        user_id: log.user_id,
        final_status,
        activity_count: log.activities.len(),
        idempotency_key: meta.idempotency_key,
    });
    if let Some(key) = key {
        state.activities.by_key.insert(key, answer.clone());
    }
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// A field the request got wrong.
enum Problem {
    Missing(&'static str),
    InvalidActivities,
}

impl Problem {
    fn response(self) -> Response {
        let status = StatusCode::BAD_REQUEST;
        match self {
            Problem::Missing(field) => {
                let message = format!("{field} is required.");
                error(status, "missing_field", &message, Some(field))
            }
            Problem::InvalidActivities => {
                let message = "Every activity needs a step, an outcome and an `at` time.";
                error(status, "invalid_field", message, Some("activities"))
            }
        }
    }
}

/// The saga id and final status, which every log must have, once the
/// activities have been checked.
fn required(log: &ActivityLog) -> Result<(String, String), Problem> {
    let filled = |text: &Option<String>| text.clone().filter(|text| !text.is_empty());
    let saga_id = filled(&log.saga_id).ok_or(Problem::Missing("sagaId"))?;
    let final_status = filled(&log.final_status).ok_or(Problem::Missing("finalStatus"))?;

    if !log.activities.iter().all(is_activity) {
        return Err(Problem::InvalidActivities);
    }
    Ok((saga_id, final_status))
}

/// Whether `value` looks like `{step, outcome, detail?, at}`. `detail`
/// and `at` stay opaque: the sandbox only counts activities.
fn is_activity(value: &Value) -> bool {
    let text = |name| value.get(name).is_some_and(Value::is_string);
    text("step") && text("outcome") && value.get("at").is_some()
}

/// Our error answer for an injected fault.
pub(crate) fn fault_response(status: StatusCode) -> Response {
    let code = match status {
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    };
    let message = status.canonical_reason().unwrap_or("injected fault");
    error(status, code, message, None)
}

fn error(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> Response {
    let body = json!({ "error": { "code": code, "message": message, "field": field } });
    (status, Json(body)).into_response()
}
