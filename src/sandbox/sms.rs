//! The SMS service: Twilio style
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.
//!
//! An accepted message gets Twilio's 201 with the Message resource in
//! status `queued`; nothing is sent. Errors use Twilio's
//! `{code, message, more_info, status}` shape and its error codes: 21604
//! and 21603 for a missing `To` or `From`, 21211 for a `To` that is not
//! E.164, 21602 for a missing `Body`. Any account SID is accepted.
//!
//! Deduplication by `Idempotency-Key` is sandbox-only, as for e-mail: a
//! repeated key gets the first message's 201 again and adds nothing to
//! the ledger.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

use super::app::{self, App, Meta};
use super::faults::Service;
use super::ledger::SmsEntry;

pub(crate) fn routes(app: &App) -> Router<App> {
    let path = "/2010-04-01/Accounts/{account_sid}/Messages.json";
    let router = Router::new().route(path, post(send));
    app::guarded(router, app, Service::Sms)
}

/// The first answer for each idempotency key.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    by_key: HashMap<String, Value>,
}

/// A valid message request.
struct Message {
    to: String,
    from: String,
    body: String,
}

/// A Twilio error: its numeric code and message.
struct Refusal {
    code: u32,
    message: String,
}

async fn send(
    State(app): State<App>,
    meta: Meta,
    account_sid: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let Ok(Path(account_sid)) = account_sid else {
        let message = "The requested resource was not found.";
        return error(StatusCode::NOT_FOUND, 20404, message);
    };
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let checked = Message::parse(&params);

    // One lock for lookup and insert, so two requests with one key
    // cannot both send.
    let mut state = app.lock();
    let key = meta.idempotency_key.clone();
    if let Some(first) = key.as_ref().and_then(|key| state.sms.by_key.get(key)) {
        return (StatusCode::CREATED, Json(first)).into_response();
    }
    let message = match checked {
        Ok(message) => message,
        Err(refusal) => return error(StatusCode::BAD_REQUEST, refusal.code, &refusal.message),
    };

    let sid = format!("SM{:032x}", rand::random::<u128>());
    let resource = message.resource(&sid, &account_sid);
    state.ledger.sms.push(SmsEntry {
        sid,
        to: message.to,
        idempotency_key: meta.idempotency_key,
        correlation_id: meta.correlation_id,
    });
    if let Some(key) = key {
        state.sms.by_key.insert(key, resource.clone());
    }
    (StatusCode::CREATED, Json(resource)).into_response()
}

impl Message {
    /// Checks the fields in the order Twilio reports them.
    fn parse(params: &[(String, String)]) -> Result<Message, Refusal> {
        let field = |name: &str| {
            let found = params.iter().find(|(key, _)| key == name);
            found
                .map(|(_, value)| value.trim())
                .filter(|value| !value.is_empty())
        };

        let to = field("To").ok_or_else(|| refusal(21604, "A 'To' phone number is required."))?;
        if !is_e164(to) {
            let message = format!("The 'To' number {to} is not a valid phone number.");
            return Err(Refusal {
                code: 21211,
                message,
            });
        }
        let from =
            field("From").ok_or_else(|| refusal(21603, "A 'From' phone number is required."))?;
        let body = field("Body").ok_or_else(|| refusal(21602, "Message body is required."))?;

        Ok(Message {
            to: to.into(),
            from: from.into(),
            body: body.into(),
        })
    }

    /// Twilio's Message resource, as it looks right after creation.
    fn resource(&self, sid: &str, account_sid: &str) -> Value {
        let now = Utc::now().to_rfc2822();
        json!({
            "sid": sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from,
            "body": self.body,
            "status": "queued",
            "direction": "outbound-api",
            "num_segments": "1",
            "price": null,
            "error_code": null,
            "error_message": null,
            "date_created": now,
            "date_updated": now,
            "date_sent": null,
            "api_version": "2010-04-01",
            "uri": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"),
        })
    }
}

fn refusal(code: u32, message: &str) -> Refusal {
    Refusal {
        code,
        message: message.to_owned(),
    }
}

/// E.164: a plus sign, then 8 to 15 digits, the first of them not 0.
fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    let all_digits = digits.bytes().all(|b| b.is_ascii_digit());
    all_digits && (8..=15).contains(&digits.len()) && !digits.starts_with('0')
}

/// Twilio's error answer for an injected fault, with Twilio's own codes
/// for these statuses.
pub(crate) fn fault_response(status: StatusCode) -> Response {
    let code = 20000 + u32::from(status.as_u16());
    let message = status.canonical_reason().unwrap_or("injected fault");
    error(status, code, message)
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_e164_numbers() {
        for good in ["+14155550100", "+4930123456", "+12345678"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "14155550100",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+1 415",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn reports_fields_in_twilio_order() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let code = |pairs| Message::parse(&params(pairs)).err().map(|r| r.code);
        assert_eq!(code(&[]), Some(21604));
        assert_eq!(code(&[("To", "555")]), Some(21211));
        assert_eq!(code(&[("To", "+14155550100")]), Some(21603));
        assert_eq!(
            code(&[("To", "+14155550100"), ("From", "+1415555")]),
            Some(21602)
        );
    }
}
