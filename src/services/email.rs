//! The e-mail client: SendGrid's v3 mail send API.
//!
//! A `202 Accepted` with an `X-Message-Id` means the provider took the
//! message; delivery happens later. SendGrid does not deduplicate by
//! `Idempotency-Key` (the sandbox does), so with a real provider a retry
//! after an unknown outcome may send a second copy: e-mail is
//! at-least-once.

use serde_json::json;

use super::http::{invalid_response, send, status_error, traced, HttpServices};
use super::{Call, CallError, EmailKind, StepOutput};

const SERVICE: &str = "email";

/// Sends one e-mail.
pub(super) async fn send_mail(
    services: &HttpServices,
    call: &Call,
    mail: Mail<'_>,
) -> Result<StepOutput, CallError> {
    let body = json!({
        "personalizations": [{"to": [{"email": mail.to, "name": mail.name}]}],
        "from": {"email": services.endpoints.email_from},
        "subject": mail.subject,
        "content": [{"type": "text/plain", "value": mail.body}],
        "custom_args": {
            "kind": mail.kind.name(),
            "saga_id": call.saga_id.to_string(),
            "correlation_id": call.correlation_id.to_string(),
        },
    });
    let endpoint = &services.endpoints.email;
    let mut request = services
        .client(SERVICE)
        .post(endpoint.url("/v3/mail/send"))
        .json(&body);
    if let Some(key) = &endpoint.secret {
        request = request.bearer_auth(key);
    }
    let response = send(traced(request, call), SERVICE).await?;

    if response.status().as_u16() != 202 {
        return Err(status_error(&response, SERVICE, None));
    }
    let id = response
        .headers()
        .get("x-message-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid_response(SERVICE))?;
    Ok(StepOutput::NotificationSent {
        id: id.to_owned(),
        status: "ACCEPTED".to_owned(),
    })
}

/// One message to send.
pub(super) struct Mail<'a> {
    pub kind: EmailKind,
    pub to: &'a str,
    pub name: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}
