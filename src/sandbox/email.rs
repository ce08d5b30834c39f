//! The e-mail service: SendGrid v3 style `POST /v3/mail/send`.
//!
//! An accepted mail gets SendGrid's 202 with an empty body and an
//! `X-Message-Id` header; nothing is delivered. Errors use SendGrid's
//! `{"errors": [{message, field, help}]}` shape.
//!
//! Deduplication by `Idempotency-Key` is sandbox-only: real SendGrid has
//! none. A repeated key gets 202 with the first message's id and adds
//! nothing to the ledger, which lets tests see whether a client's retry
//! would have sent the mail twice.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::app::{self, App, Meta};
use super::faults::Service;
use super::ledger::EmailEntry;

const MESSAGE_ID: HeaderName = HeaderName::from_static("x-message-id");
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(crate) fn routes(app: &App) -> Router<App> {
    let router = Router::new().route("/v3/mail/send", post(send));
    app::guarded(router, app, Service::Email)
}

/// Message ids by the idempotency key that sent them.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    by_key: HashMap<String, String>,
}

/// The parts of a SendGrid mail the sandbox checks. All optional, so a
/// missing field is reported by name instead of as a parse error.
#[derive(Deserialize)]
struct Mail {
    personalizations: Option<Vec<Personalization>>,
    from: Option<Address>,
    subject: Option<String>,
    content: Option<Vec<Content>>,
    custom_args: Option<HashMap<String, Value>>,
}

#[derive(Deserialize)]
struct Personalization {
    to: Option<Vec<Address>>,
    subject: Option<String>,
}

#[derive(Deserialize)]
struct Address {
    email: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
}

/// A SendGrid field error: the message and the field's dotted path.
struct FieldError {
    message: &'static str,
    field: String,
}

async fn send(State(app): State<App>, meta: Meta, body: Bytes) -> Response {
    let checked = match serde_json::from_slice::<Mail>(&body) {
        Ok(mail) => check(&mail).map(|()| mail),
        Err(_) => return unparsable(),
    };

    // One lock for lookup and insert, so two requests with one key
    // cannot both send.
    let mut state = app.lock();
    let key = meta.idempotency_key.clone();
    if let Some(first) = key.as_ref().and_then(|key| state.emails.by_key.get(key)) {
        return accepted(first);
    }
    let mail = match checked {
        Ok(mail) => mail,
        Err(errors) => return invalid(&errors),
    };

    let message_id = random_url_safe(22);
    state.ledger.emails.push(entry(&mail, &message_id, meta));
    if let Some(key) = key {
        state.emails.by_key.insert(key, message_id.clone());
    }
    accepted(&message_id)
}

/// Checks what SendGrid requires: recipients, a sender, a subject and
/// some content.
fn check(mail: &Mail) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let personalizations = mail.personalizations.as_deref().unwrap_or_default();
    if personalizations.is_empty() {
        let message = "At least one personalization is required.";
        errors.push(FieldError {
            message,
            field: "personalizations".into(),
        });
    }
    for (index, personalization) in personalizations.iter().enumerate() {
        let to = personalization.to.as_deref().unwrap_or_default();
        let field = format!("personalizations.{index}.to");
        check_recipients(to, field, &mut errors);
    }

    if !mail.from.as_ref().is_some_and(Address::is_valid) {
        let message = "A sender with a valid address is required.";
        errors.push(FieldError {
            message,
            field: "from.email".into(),
        });
    }
    if subject(mail).is_none() {
        let message = "A subject is required, for the mail or every personalization.";
        errors.push(FieldError {
            message,
            field: "subject".into(),
        });
    }
    check_content(mail.content.as_deref().unwrap_or_default(), &mut errors);

    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_recipients(to: &[Address], field: String, errors: &mut Vec<FieldError>) {
    if to.is_empty() {
        let message = "At least one recipient is required.";
        errors.push(FieldError { message, field });
        return;
    }
    for (index, address) in to.iter().enumerate() {
        if !address.is_valid() {
            let message = "Does not contain a valid address.";
            errors.push(FieldError {
                message,
                field: format!("{field}.{index}.email"),
            });
        }
    }
}

fn check_content(content: &[Content], errors: &mut Vec<FieldError>) {
    if content.is_empty() {
        let message = "At least one content entry is required.";
        errors.push(FieldError {
            message,
            field: "content".into(),
        });
    }
    for (index, part) in content.iter().enumerate() {
        if filled(&part.kind).is_none() || filled(&part.value).is_none() {
            let message = "Every content entry needs a type and a value.";
            errors.push(FieldError {
                message,
                field: format!("content.{index}"),
            });
        }
    }
}

impl Address {
    /// A light check: real validation is the mail server's business.
    fn is_valid(&self) -> bool {
        let email = self.email.as_deref().unwrap_or_default();
        email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
    }
}

/// The mail's subject, or the first personalization's when every
/// personalization has its own.
fn subject(mail: &Mail) -> Option<&str> {
    if let Some(subject) = filled(&mail.subject) {
        return Some(subject);
    }
    let personalizations = mail.personalizations.as_deref().unwrap_or_default();
    let subjects: Option<Vec<&str>> = personalizations
        .iter()
        .map(|each| filled(&each.subject))
        .collect();
    subjects?.first().copied()
}

fn filled(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|text| !text.is_empty())
}

fn entry(mail: &Mail, message_id: &str, meta: Meta) -> EmailEntry {
    let personalizations = mail.personalizations.iter().flatten();
    let recipients = personalizations.flat_map(|each| each.to.iter().flatten());
    let to: Vec<&str> = recipients
        .filter_map(|address| address.email.as_deref())
        .collect();
    let custom_arg = |name: &str| {
        let value = mail.custom_args.as_ref()?.get(name)?;
        value.as_str().map(str::to_owned)
    };

    EmailEntry {
        message_id: message_id.to_owned(),
        to: to.join(", "),
        subject: subject(mail).unwrap_or_default().to_owned(),
        kind: custom_arg("kind"),
        saga_id: custom_arg("saga_id"),
        idempotency_key: meta.idempotency_key,
        correlation_id: meta.correlation_id,
    }
}

fn accepted(message_id: &str) -> Response {
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(id) = HeaderValue::from_str(message_id) {
        response.headers_mut().insert(MESSAGE_ID, id);
    }
    response
}

fn invalid(errors: &[FieldError]) -> Response {
    let errors: Vec<Value> = errors
        .iter()
        .map(|error| json!({ "message": error.message, "field": error.field, "help": null }))
        .collect();
    (StatusCode::BAD_REQUEST, Json(json!({ "errors": errors }))).into_response()
}

fn unparsable() -> Response {
    let message = "The request body is not valid JSON.";
    errors_body(StatusCode::BAD_REQUEST, message)
}

/// SendGrid's error answer for an injected fault.
pub(crate) fn fault_response(status: StatusCode) -> Response {
    let message = status.canonical_reason().unwrap_or("injected fault");
    errors_body(status, message)
}

fn errors_body(status: StatusCode, message: &str) -> Response {
    let error = json!({ "message": message, "field": null, "help": null });
    (status, Json(json!({ "errors": [error] }))).into_response()
}

fn random_url_safe(len: usize) -> String {
    let mut rng = rand::rng();
    let mut pick = || char::from(URL_SAFE[rng.random_range(0..URL_SAFE.len())]);
    (0..len).map(|_| pick()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: Value) -> Vec<String> {
        let mail: Mail = serde_json::from_value(body).unwrap();
        let errors = check(&mail).err().unwrap_or_default();
        errors.into_iter().map(|error| error.field).collect()
    }

    #[test]
    fn names_every_missing_field() {
        let all = ["personalizations", "from.email", "subject", "content"];
        assert_eq!(fields(json!({})), all);

        let body = json!({
            "personalizations": [{ "to": [{ "email": "nobody" }], "subject": "Hi" }],
            "from": { "email": "a@b.example" },
            "content": [{ "type": "text/plain", "value": "x" }],
        });
        assert_eq!(fields(body), ["personalizations.0.to.0.email"]);
    }

    #[test]
    fn message_ids_are_url_safe() {
        let id = random_url_safe(22);
        assert_eq!(id.len(), 22);
        assert!(id.bytes().all(|b| URL_SAFE.contains(&b)));
    }
}
