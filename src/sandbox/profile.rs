//! The profile service: a SCIM 2.0 user directory (RFC 7643 resources,
//! RFC 7644 protocol) under `/scim/v2/Users`.
//!
//! It supports what a registration needs: create, look up by
//! `externalId` or `userName`, fetch, patch `active` and our extension's
//! `registrationStatus`, and delete. `userName` is unique regardless of
//! case, as RFC 7643 marks it case-insensitive. Errors use the SCIM error
//! schema with the RFC's `scimType` values.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CONTENT_TYPE, HOST, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::app::{self, App, Meta};
use super::faults::Service;
use super::ledger::ProfileEntry;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const EXTENSION_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:regsaga:2.0:User";
const STATUS_PATH: &str =
    "urn:ietf:params:scim:schemas:extension:regsaga:2.0:User:registrationStatus";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SCIM_JSON: &str = "application/scim+json";

pub(crate) fn routes(app: &App) -> Router<App> {
    let router = Router::new()
        .route("/scim/v2/Users", post(create).get(list))
        .route(
            "/scim/v2/Users/{id}",
            get(fetch).patch(update).delete(remove),
        );
    app::guarded(router, app, Service::Profile)
}

/// The users in the directory, oldest first, indexed by id and by
/// lower-cased userName so that a large directory stays fast.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    users: Vec<User>,
    by_id: HashMap<String, usize>,
    by_user_name: HashMap<String, usize>,
}

impl Directory {
    /// The ledger's view of the directory.
    pub(crate) fn entries(&self) -> Vec<ProfileEntry> {
        self.users.iter().map(User::entry).collect()
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    fn get(&self, id: &str) -> Option<&User> {
        self.find(id).map(|i| &self.users[i])
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut User> {
        self.find(id).map(|i| &mut self.users[i])
    }

    fn has_user_name(&self, user_name: &str) -> bool {
        self.by_user_name.contains_key(&user_name.to_lowercase())
    }

    fn insert(&mut self, user: User) {
        let index = self.users.len();
        self.by_id.insert(user.id.clone(), index);
        self.by_user_name
            .insert(user.user_name.to_lowercase(), index);
        self.users.push(user);
    }

    fn remove(&mut self, index: usize) {
        self.users.remove(index);
        self.by_id.clear();
        self.by_user_name.clear();
        for (i, user) in self.users.iter().enumerate() {
            self.by_id.insert(user.id.clone(), i);
            self.by_user_name.insert(user.user_name.to_lowercase(), i);
        }
    }

    fn new_id(&self) -> String {
        loop {
            let id = format!("user_{:016x}", rand::random::<u64>());
            if self.find(&id).is_none() {
                return id;
            }
        }
    }
}

/// A stored user, with the attributes this directory understands.
#[derive(Clone, Debug)]
struct User {
    id: String,
    user_name: String,
    external_id: Option<String>,
    name: Option<Name>,
    display_name: Option<String>,
    emails: Vec<MultiValue>,
    phone_numbers: Vec<MultiValue>,
    active: bool,
    registration_status: Option<String>,
    created: String,
    last_modified: String,
    correlation_id: Option<String>,
}

impl User {
    fn entry(&self) -> ProfileEntry {
        ProfileEntry {
            id: self.id.clone(),
            user_name: self.user_name.clone(),
            external_id: self.external_id.clone(),
            display_name: self.display_name.clone(),
            active: self.active,
            registration_status: self.registration_status.clone(),
            correlation_id: self.correlation_id.clone(),
            created: self.created.clone(),
        }
    }

    /// The SCIM representation; `base` is the server's URL for
    /// `meta.location`, empty when the request named no host.
    fn resource(&self, base: &str) -> Resource<'_> {
        Resource {
            schemas: [USER_SCHEMA, EXTENSION_SCHEMA],
            id: &self.id,
            user_name: &self.user_name,
            external_id: self.external_id.as_deref(),
            name: self.name.as_ref(),
            display_name: self.display_name.as_deref(),
            emails: &self.emails,
            phone_numbers: &self.phone_numbers,
            active: self.active,
            extension: Extension {
                registration_status: self.registration_status.as_deref(),
            },
            meta: ResourceMeta {
                resource_type: "User",
                created: &self.created,
                last_modified: &self.last_modified,
                location: format!("{base}/scim/v2/Users/{}", self.id),
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Name {
    #[serde(skip_serializing_if = "Option::is_none")]
    formatted: Option<String>,
}

/// An entry of a multi-valued attribute such as `emails`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MultiValue {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Resource<'a> {
    schemas: [&'a str; 2],
    id: &'a str,
    user_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a Name>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    emails: &'a [MultiValue],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    phone_numbers: &'a [MultiValue],
    active: bool,
    #[serde(rename = "urn:ietf:params:scim:schemas:extension:regsaga:2.0:User")]
    extension: Extension<'a>,
    meta: ResourceMeta<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Extension<'a> {
    registration_status: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceMeta<'a> {
    resource_type: &'a str,
    created: &'a str,
    last_modified: &'a str,
    location: String,
}

/// The body of `POST /scim/v2/Users`. Every field is optional here so
/// that a missing `userName` gets SCIM's `invalidValue`, not a parse
/// error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewUser {
    user_name: Option<String>,
    external_id: Option<String>,
    name: Option<Name>,
    display_name: Option<String>,
    emails: Option<Vec<MultiValue>>,
    phone_numbers: Option<Vec<MultiValue>>,
    active: Option<bool>,
}

/// The body of `PATCH /scim/v2/Users/{id}`.
#[derive(Deserialize)]
struct PatchOp {
    #[serde(rename = "Operations")]
    operations: Vec<Operation>,
}

#[derive(Deserialize)]
struct Operation {
    op: String,
    path: Option<String>,
    #[serde(default)]
    value: Value,
}

/// A change this directory knows how to make.
enum Change {
    Active(bool),
    RegistrationStatus(Option<String>),
}

async fn create(State(app): State<App>, meta: Meta, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = unsupported_media_type(&headers) {
        return response;
    }
    let new: NewUser = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(_) => return invalid_syntax("the body is not a valid SCIM User"),
    };
    let Some(user_name) = new.user_name.filter(|name| !name.trim().is_empty()) else {
        let detail = "userName is required and must not be empty";
        return error(StatusCode::BAD_REQUEST, Some("invalidValue"), detail);
    };

    let mut state = app.lock();
    let directory = &mut state.profiles;
    if directory.has_user_name(&user_name) {
        let detail = "a user with this userName already exists";
        return error(StatusCode::CONFLICT, Some("uniqueness"), detail);
    }
    let now = now();
    let user = User {
        id: directory.new_id(),
        user_name,
        external_id: new.external_id,
        name: new.name,
        display_name: new.display_name,
        emails: new.emails.unwrap_or_default(),
        phone_numbers: new.phone_numbers.unwrap_or_default(),
        // RFC 7643 leaves the default to the provider; a new account is
        // usable unless the client says otherwise.
        active: new.active.unwrap_or(true),
        registration_status: None,
        created: now.clone(),
        last_modified: now,
        correlation_id: meta.correlation_id,
    };
    directory.insert(user.clone());
    drop(state);

    let resource = user.resource(&base_url(&headers));
    let location = HeaderValue::from_str(&resource.meta.location).ok();
    let mut response = scim(StatusCode::CREATED, &resource);
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

async fn list(State(app): State<App>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let filter = params.iter().find(|(name, _)| name == "filter");
    let filter = match filter.map(|(_, text)| Filter::parse(text)) {
        None => None,
        Some(Some(filter)) => Some(filter),
        Some(None) => {
            let detail = "only `externalId eq \"...\"` and `userName eq \"...\"` are supported";
            return error(StatusCode::BAD_REQUEST, Some("invalidFilter"), detail);
        }
    };

    let base = base_url(&headers);
    let state = app.lock();
    let found: Vec<Resource<'_>> = state
        .profiles
        .users
        .iter()
        .filter(|user| filter.as_ref().is_none_or(|filter| filter.matches(user)))
        .map(|user| user.resource(&base))
        .collect();
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": found.len(),
        "startIndex": 1,
        "itemsPerPage": found.len(),
        "Resources": found,
    });
    scim(StatusCode::OK, &body)
}

async fn fetch(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(id)) = id else { return not_found() };
    let state = app.lock();
    let Some(user) = state.profiles.get(&id) else {
        return not_found();
    };
    scim(StatusCode::OK, &user.resource(&base_url(&headers)))
}

async fn update(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Path(id)) = id else { return not_found() };
    if let Some(response) = unsupported_media_type(&headers) {
        return response;
    }
    let Ok(patch) = serde_json::from_slice::<PatchOp>(&body) else {
        return invalid_syntax("the body is not a valid SCIM PatchOp");
    };
    // Every operation is checked before any applies: a PATCH is atomic.
    let changes: Vec<Change> = match patch.operations.iter().map(Change::parse).collect() {
        Ok(changes) => changes,
        Err(refusal) => return refusal.response(),
    };

    let mut state = app.lock();
    let Some(user) = state.profiles.get_mut(&id) else {
        return not_found();
    };
    for change in changes {
        change.apply(user);
    }
    user.last_modified = now();
    scim(StatusCode::OK, &user.resource(&base_url(&headers)))
}

async fn remove(State(app): State<App>, id: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else { return not_found() };
    let mut state = app.lock();
    let Some(index) = state.profiles.find(&id) else {
        return not_found();
    };
    state.profiles.remove(index);
    StatusCode::NO_CONTENT.into_response()
}

/// Why a PATCH operation was refused: a 400 with this `scimType`.
struct Refusal {
    scim_type: &'static str,
    detail: String,
}

impl Refusal {
    fn new(scim_type: &'static str, detail: &str) -> Refusal {
        Refusal {
            scim_type,
            detail: detail.to_owned(),
        }
    }

    fn response(self) -> Response {
        error(StatusCode::BAD_REQUEST, Some(self.scim_type), self.detail)
    }
}

impl Change {
    fn parse(operation: &Operation) -> Result<Change, Refusal> {
        let op = operation.op.to_ascii_lowercase();
        // For a single-valued attribute, RFC 7644 makes "add" a replace.
        if op != "replace" && op != "add" {
            let detail = "only the replace and add operations are supported";
            return Err(Refusal::new("invalidSyntax", detail));
        }
        let path = operation.path.as_deref().unwrap_or_default();
        let value = &operation.value;

        if path.eq_ignore_ascii_case("active") {
            let not_bool = || Refusal::new("invalidValue", "active must be a boolean");
            Ok(Change::Active(value.as_bool().ok_or_else(not_bool)?))
        } else if path.eq_ignore_ascii_case(STATUS_PATH) {
            match value {
                Value::String(status) => Ok(Change::RegistrationStatus(Some(status.clone()))),
                Value::Null => Ok(Change::RegistrationStatus(None)),
                _ => Err(Refusal::new(
                    "invalidValue",
                    "registrationStatus must be a string",
                )),
            }
        } else {
            let detail = format!("path must be `active` or `{STATUS_PATH}`");
            Err(Refusal::new("invalidPath", &detail))
        }
    }

    fn apply(self, user: &mut User) {
        match self {
            Change::Active(active) => user.active = active,
            Change::RegistrationStatus(status) => user.registration_status = status,
        }
    }
}

/// The filters this directory answers: equality on one attribute.
enum Filter {
    ExternalId(String),
    UserName(String),
}

impl Filter {
    /// Parses `attribute eq "value"`; attribute names and the operator
    /// are case-insensitive, as RFC 7644 says.
    fn parse(text: &str) -> Option<Filter> {
        let text = text.trim();
        let (attribute, rest) = text.split_once(char::is_whitespace)?;
        let (operator, value) = rest.trim_start().split_once(char::is_whitespace)?;
        if !operator.eq_ignore_ascii_case("eq") {
            return None;
        }
        // A JSON string literal, so escaped quotes work as in SCIM.
        let value: String = serde_json::from_str(value.trim()).ok()?;

        if attribute.eq_ignore_ascii_case("externalId") {
            Some(Filter::ExternalId(value))
        } else if attribute.eq_ignore_ascii_case("userName") {
            Some(Filter::UserName(value))
        } else {
            None
        }
    }

    fn matches(&self, user: &User) -> bool {
        match self {
            // externalId is case-exact in RFC 7643; userName is not.
            Filter::ExternalId(id) => user.external_id.as_deref() == Some(id.as_str()),
            Filter::UserName(name) => same_user_name(&user.user_name, name),
        }
    }
}

/// The SCIM error answer for an injected fault.
pub(crate) fn fault_response(status: StatusCode) -> Response {
    let detail = status.canonical_reason().unwrap_or("injected fault");
    error(status, None, detail)
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, None, "no user with this id")
}

fn invalid_syntax(detail: &str) -> Response {
    error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), detail)
}

fn error(status: StatusCode, scim_type: Option<&str>, detail: impl Into<String>) -> Response {
    let mut body = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.as_u16().to_string(),
        "detail": detail.into(),
    });
    if let Some(scim_type) = scim_type {
        body["scimType"] = json!(scim_type);
    }
    scim(status, &body)
}

fn scim(status: StatusCode, body: &impl Serialize) -> Response {
    // Serializing these plain structs and values cannot fail.
    let body = serde_json::to_vec(body).unwrap_or_default();
    (status, [(CONTENT_TYPE, SCIM_JSON)], body).into_response()
}

/// Refuses bodies that are declared as something other than JSON.
fn unsupported_media_type(headers: &HeaderMap) -> Option<Response> {
    let declared = headers.get(CONTENT_TYPE)?.to_str().unwrap_or_default();
    let essence = declared.split(';').next().unwrap_or_default().trim();
    let json = ["application/scim+json", "application/json"];
    if json
        .iter()
        .any(|accepted| essence.eq_ignore_ascii_case(accepted))
    {
        return None;
    }
    let detail = "Content-Type must be application/scim+json or application/json";
    Some(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, None, detail))
}

/// The server's URL as the client addressed it, for `meta.location`.
fn base_url(headers: &HeaderMap) -> String {
    match headers.get(HOST).and_then(|host| host.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => String::new(),
    }
}

/// RFC 7643 makes `userName` case-insensitive, beyond ASCII too.
fn same_user_name(left: &str, right: &str) -> bool {
    left == right || left.to_lowercase() == right.to_lowercase()
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_filters_only() {
        let filter = Filter::parse(r#"externalId eq "ext \"1\"""#);
        assert!(matches!(filter, Some(Filter::ExternalId(id)) if id == "ext \"1\""));
        assert!(matches!(
            Filter::parse(r#"USERNAME EQ "a""#),
            Some(Filter::UserName(_))
        ));
        for text in [
            r#"displayName eq "a""#,
            r#"userName co "a""#,
            "userName eq a",
            "",
        ] {
            assert!(Filter::parse(text).is_none(), "{text}");
        }
    }
}
