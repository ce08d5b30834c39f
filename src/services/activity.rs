//! The activity log client: our internal record of every registration.
//!
//! `POST /internal/v1/activity-log` with the steps' outcomes and the final
//! status. The service deduplicates by `Idempotency-Key`.

use serde::Deserialize;
use serde_json::json;

use super::http::{invalid_response, send, status_error, traced, HttpServices};
use super::{ActivityRecord, Call, CallError, StepOutput};

const SERVICE: &str = "activity";

#[derive(Deserialize)]
struct Recorded {
    id: String,
}

/// Records a registration's activities.
pub(super) async fn record(
    services: &HttpServices,
    call: &Call,
    record: &ActivityRecord,
) -> Result<StepOutput, CallError> {
    let body = json!({
        "sagaId": call.saga_id.to_string(),
        "correlationId": call.correlation_id.to_string(),
        "userId": record.user_id,
        "finalStatus": record.final_status,
        "activities": record.activities,
    });
    let endpoint = &services.endpoints.activity;
    let mut request = services
        .client(SERVICE)
        .post(endpoint.url("/internal/v1/activity-log"))
        .json(&body);
    if let Some(token) = &endpoint.secret {
        request = request.bearer_auth(token);
    }
    let response = send(traced(request, call), SERVICE).await?;

    if !matches!(response.status().as_u16(), 200 | 201) {
        return Err(status_error(&response, SERVICE, None));
    }
    let recorded: Recorded = response
        .json()
        .await
        .map_err(|_| invalid_response(SERVICE))?;
    Ok(StepOutput::ActivityRecorded { id: recorded.id })
}
