//! The SMS client: Twilio's Messages resource.
//!
//! `201` with `status: queued` means Twilio took the message. Twilio has
//! no idempotency key for sending messages (the sandbox deduplicates by
//! `Idempotency-Key`), so with the real provider SMS is at-least-once.

use serde::Deserialize;

use super::http::{invalid_response, send, status_error, traced, HttpServices};
use super::{Call, CallError, StepOutput};

const SERVICE: &str = "sms";

#[derive(Deserialize)]
struct Message {
    sid: String,
    status: String,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<u32>,
}

/// Sends one SMS.
pub(super) async fn send_sms(
    services: &HttpServices,
    call: &Call,
    to: &str,
    body: &str,
) -> Result<StepOutput, CallError> {
    let endpoints = &services.endpoints;
    let sid = &endpoints.sms_account_sid;
    let url = endpoints
        .sms
        .url(&format!("/2010-04-01/Accounts/{sid}/Messages.json"));
    let form = [
        ("To", to),
        ("From", endpoints.sms_from.as_str()),
        ("Body", body),
    ];
    let mut request = services.client(SERVICE).post(url).form(&form);
    if let Some(token) = &endpoints.sms.secret {
        request = request.basic_auth(sid, Some(token));
    }
    let response = send(traced(request, call), SERVICE).await?;

    if response.status().as_u16() == 201 {
        let message: Message = response
            .json()
            .await
            .map_err(|_| invalid_response(SERVICE))?;
        return Ok(StepOutput::NotificationSent {
            id: message.sid,
            status: message.status.to_ascii_uppercase(),
        });
    }

    let mut error = status_error(&response, SERVICE, None);
    if let Ok(TwilioError { code: Some(code) }) = response.json::<TwilioError>().await {
        // The provider's message repeats the phone number; the code is enough.
        error.reason = match code {
            21211 => format!("SMS service rejected the phone number (Twilio error {code})"),
            _ => format!("{} (Twilio error {code})", error.reason),
        };
    }
    Err(error)
}
