//! The payment gateway client: Stripe-style payment intents.
//!
//! One `POST /v1/payment_intents` with `confirm=true` charges the amount
//! in integer minor units. The `Idempotency-Key` makes a retry safe: the
//! gateway answers a repeated key with the stored response instead of
//! charging again, and answers `409` while the first request still runs.

use serde::Deserialize;

use super::http::{invalid_response, send, status_error, traced, HttpServices};
use super::{Call, CallError, ErrorKind, StepOutput};
use crate::registration::{Payment, PaymentMethod};

const SERVICE: &str = "payment";

#[derive(Deserialize)]
struct PaymentIntent {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    decline_code: Option<String>,
}

/// The payment method sent for each input method. Stripe's test
/// PaymentMethods stand in for the customer's own; see the known
/// limitations in `docs/ARCHITECTURE.md`.
fn payment_method(method: PaymentMethod) -> &'static str {
    match method {
        PaymentMethod::CreditCard => "pm_card_visa",
        PaymentMethod::DebitCard => "pm_card_visa_debit",
        PaymentMethod::BankTransfer => "pm_usBankAccount",
        PaymentMethod::Paypal => "pm_paypal",
    }
}

/// Charges the initial payment.
pub(super) async fn charge(
    services: &HttpServices,
    call: &Call,
    user_id: &str,
    payment: &Payment,
) -> Result<StepOutput, CallError> {
    let form = [
        ("amount", payment.amount_minor.to_string()),
        ("currency", payment.currency.clone()),
        ("confirm", "true".to_owned()),
        ("payment_method", payment_method(payment.method).to_owned()),
        ("metadata[saga_id]", call.saga_id.to_string()),
        ("metadata[correlation_id]", call.correlation_id.to_string()),
        ("metadata[user_id]", user_id.to_owned()),
    ];
    let endpoint = &services.endpoints.payment;
    let mut request = services
        .client(SERVICE)
        .post(endpoint.url("/v1/payment_intents"))
        .form(&form);
    if let Some(key) = &endpoint.secret {
        request = request.bearer_auth(key);
    }
    let response = send(traced(request, call), SERVICE).await?;

    let status = response.status().as_u16();
    if status == 200 {
        let intent: PaymentIntent = response
            .json()
            .await
            .map_err(|_| invalid_response(SERVICE))?;
        return Ok(StepOutput::PaymentCharged {
            payment_id: intent.id,
        });
    }

    let mut error = status_error(&response, SERVICE, None);
    let body: Option<ErrorBody> = response.json().await.ok();
    let stripe = body.map(|b| b.error);
    match (status, stripe) {
        (402, Some(e)) => {
            let code = e
                .decline_code
                .or(e.code)
                .unwrap_or_else(|| "declined".into());
            error.kind = ErrorKind::Declined;
            error.reason = format!("Payment declined ({code})");
        }
        (409, Some(e)) if e.code.as_deref() == Some("idempotency_key_in_use") => {
            error.kind = ErrorKind::KeyInUse;
            error.reason = "Payment gateway is still processing an earlier attempt".into();
        }
        (400, Some(e)) if e.kind.as_deref() == Some("idempotency_error") => {
            error.reason =
                "Payment gateway refused the retry: its parameters differ from the first attempt"
                    .into();
        }
        _ => {}
    }
    Err(error)
}
