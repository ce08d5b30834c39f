//! The profile service client: SCIM 2.0 (RFC 7643, RFC 7644).
//!
//! A profile's `externalId` is the saga id. That makes creation safe to
//! repeat: when a retry meets `409 uniqueness` (or the first attempt's
//! outcome is unknown), the client looks the user up by `externalId` and
//! adopts the profile this saga created. A `userName` taken by a profile
//! of another saga is a conflict, not retried.

use serde::Deserialize;
use serde_json::json;

use super::http::{invalid_response, send, status_error, traced, HttpServices};
use super::{Call, CallError, ErrorKind, StepOutput};

const SERVICE: &str = "profile";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Where regsaga keeps the registration status on a SCIM user.
pub const STATUS_PATH: &str =
    "urn:ietf:params:scim:schemas:extension:regsaga:2.0:User:registrationStatus";

#[derive(Deserialize)]
struct User {
    id: String,
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(rename = "Resources", default)]
    resources: Vec<User>,
}

#[derive(Deserialize)]
struct ScimError {
    #[serde(rename = "scimType")]
    scim_type: Option<String>,
}

fn authorized(
    services: &HttpServices,
    builder: reqwest::RequestBuilder,
) -> reqwest::RequestBuilder {
    match &services.endpoints.profile.secret {
        Some(token) => builder.bearer_auth(token),
        None => builder,
    }
}

/// `POST /scim/v2/Users`, adopting this saga's profile on a conflict.
pub(super) async fn create(
    services: &HttpServices,
    call: &Call,
    email: &str,
    full_name: &str,
    phone: Option<&str>,
) -> Result<StepOutput, CallError> {
    let phones: Vec<_> = phone
        .map(|p| json!({"value": p, "type": "mobile"}))
        .into_iter()
        .collect();
    let body = json!({
        "schemas": [USER_SCHEMA],
        "userName": email,
        "externalId": call.saga_id.to_string(),
        "name": {"formatted": full_name},
        "displayName": full_name,
        "emails": [{"value": email, "primary": true}],
        "phoneNumbers": phones,
        "active": false,
    });
    let url = services.endpoints.profile.url("/scim/v2/Users");
    let request = services
        .client(SERVICE)
        .post(url)
        .header("Content-Type", "application/scim+json")
        .body(body.to_string());
    let response = send(traced(authorized(services, request), call), SERVICE).await?;

    match response.status().as_u16() {
        200 | 201 => {
            let user: User = response
                .json()
                .await
                .map_err(|_| invalid_response(SERVICE))?;
            Ok(StepOutput::ProfileCreated { user_id: user.id })
        }
        409 => {
            let error: Option<ScimError> = response.json().await.ok();
            let uniqueness = error.and_then(|e| e.scim_type).as_deref() == Some("uniqueness");
            if !uniqueness {
                return Err(CallError::new(
                    ErrorKind::Http(409),
                    "Profile service rejected the request (HTTP 409)",
                ));
            }
            adopt(services, call).await
        }
        _ => Err(status_error(&response, SERVICE, None)),
    }
}

/// Finds the profile this saga created earlier, by `externalId`.
async fn adopt(services: &HttpServices, call: &Call) -> Result<StepOutput, CallError> {
    let filter = format!("externalId eq \"{}\"", call.saga_id);
    let url = services.endpoints.profile.url("/scim/v2/Users");
    let request = services
        .client(SERVICE)
        .get(url)
        .query(&[("filter", filter)]);
    let response = send(traced(authorized(services, request), call), SERVICE).await?;
    if !response.status().is_success() {
        return Err(status_error(&response, SERVICE, None));
    }

    let list: ListResponse = response
        .json()
        .await
        .map_err(|_| invalid_response(SERVICE))?;
    match list.resources.into_iter().next() {
        Some(user) => Ok(StepOutput::ProfileCreated { user_id: user.id }),
        None => Err(CallError::new(
            ErrorKind::Conflict,
            "a profile with this e-mail already exists at the profile service",
        )),
    }
}

/// `PATCH /scim/v2/Users/{id}`: sets `active` and the registration status.
pub(super) async fn update_status(
    services: &HttpServices,
    call: &Call,
    user_id: &str,
    status: &str,
    active: bool,
) -> Result<StepOutput, CallError> {
    let body = json!({
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {"op": "replace", "path": "active", "value": active},
            {"op": "replace", "path": STATUS_PATH, "value": status},
        ],
    });
    let path = format!("/scim/v2/Users/{}", urlencode(user_id));
    let url = services.endpoints.profile.url(&path);
    let request = services
        .client(SERVICE)
        .patch(url)
        .header("Content-Type", "application/scim+json")
        .body(body.to_string());
    let response = send(traced(authorized(services, request), call), SERVICE).await?;

    match response.status().as_u16() {
        200 | 204 => Ok(StepOutput::ProfileStatusUpdated),
        _ => Err(status_error(&response, SERVICE, None)),
    }
}

/// Percent-encodes a path segment.
fn urlencode(segment: &str) -> String {
    serde_urlencoded::to_string([("", segment)])
        .map(|s| s.trim_start_matches('=').replace('+', "%20"))
        .unwrap_or_default()
}
