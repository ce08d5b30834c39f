//! The payment service: Stripe-style `POST /v1/payment_intents`, created
//! and confirmed in one call, with Stripe's idempotency rules.
//!
//! Idempotency works as Stripe documents it. The first request with an
//! `Idempotency-Key` that reaches execution claims the key, and its
//! parameters and answer (success, decline or validation error) are
//! stored. A replay with the same parameters gets the stored answer with
//! `Idempotent-Replayed: true` and creates nothing; other parameters get
//! a 400 `idempotency_error`; a replay while the first request still
//! executes gets a 409 `idempotency_key_in_use`. Injected HTTP faults
//! and timeouts strike before execution and store nothing, so a retry
//! executes normally. Requests without a key are never deduplicated.
//!
//! The test payment method `pm_card_chargeDeclined`, as in Stripe's test
//! mode, and the `decline` fault both decline the card with a 402.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::app::{self, App, Drawn, Meta};
use super::faults::{FaultKind, Service};
use super::ledger::{ChargeEntry, DeclineEntry};

/// Stripe's test PaymentMethod whose card is always declined.
const DECLINED_METHOD: &str = "pm_card_chargeDeclined";
/// The largest amount Stripe accepts, in minor units.
const MAX_AMOUNT: u64 = 99_999_999;
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub(crate) fn routes(app: &App) -> Router<App> {
    let router = Router::new().route("/v1/payment_intents", post(create));
    app::guarded(router, app, Service::Payment)
}

/// The request parameters, sorted, so that a replay sent in another
/// order still counts as the same request.
type Params = Vec<(String, String)>;

/// What the payment service remembers between requests.
#[derive(Default)]
pub(crate) struct Store {
    keys: HashMap<String, Keyed>,
    hold: Option<Arc<Gate>>,
}

/// The state of one idempotency key.
enum Keyed {
    /// The first request is executing; others must wait or retry.
    Executing,
    /// The first request finished; its answer is replayed.
    Done {
        params: Params,
        status: StatusCode,
        body: Value,
    },
}

async fn create(State(app): State<App>, meta: Meta, drawn: Drawn, body: Bytes) -> Response {
    let params = parse_params(&body);
    let (claim, gate) = match Claim::take(&app, meta.idempotency_key.as_deref(), &params) {
        Ok(claimed) => claimed,
        Err(taken) => return taken.response(),
    };
    if let Some(gate) = gate {
        gate.pass().await;
    }

    let forced = drawn.0 == Some(FaultKind::Decline);
    let outcome = execute(&meta, &params, forced);
    let response = respond(outcome.status, &outcome.body, false);
    claim.finish(params, outcome);
    response
}

/// The answer of one execution and what it adds to the ledger.
struct Outcome {
    status: StatusCode,
    body: Value,
    record: Option<Record>,
}

enum Record {
    Charge(ChargeEntry),
    Decline(DeclineEntry),
}

/// Runs a payment intent whose key, if any, this request holds.
fn execute(meta: &Meta, params: &Params, forced_decline: bool) -> Outcome {
    let intent = match Intent::parse(params) {
        Ok(intent) => intent,
        Err(invalid) => return invalid.outcome(),
    };
    let card_declined = intent.payment_method == DECLINED_METHOD;
    if card_declined || forced_decline {
        let cause = if card_declined { "card" } else { "fault" };
        return intent.decline(meta, cause);
    }
    intent.succeed(meta)
}

/// A valid request to create and confirm a payment intent.
struct Intent {
    amount: u64,
    currency: String,
    payment_method: String,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// A parameter that failed validation, answered with Stripe's 400.
struct Invalid {
    param: &'static str,
    message: String,
}

impl Intent {
    fn parse(params: &Params) -> Result<Intent, Invalid> {
        let amount = required(params, "amount")?;
        let amount = match amount.parse::<u64>() {
            Ok(0) => return Err(invalid("amount", "Amount must be at least 1.")),
            Ok(amount) if amount > MAX_AMOUNT => {
                let message = format!("Amount must be at most {MAX_AMOUNT}.");
                return Err(invalid("amount", &message));
            }
            Ok(amount) => amount,
            Err(_) => return Err(invalid("amount", &format!("Invalid integer: {amount}"))),
        };

        let currency = required(params, "currency")?;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(invalid(
                "currency",
                &format!("Invalid currency: {currency}."),
            ));
        }
        let payment_method = required(params, "payment_method")?.to_owned();

        // Without confirm=true Stripe would leave the intent waiting for
        // confirmation; the sandbox only imitates the one-call flow, and
        // says so rather than pretending to charge.
        if required(params, "confirm")? != "true" {
            let message = "The sandbox only supports confirm=true.";
            return Err(invalid("confirm", message));
        }

        Ok(Intent {
            amount,
            currency: currency.to_ascii_lowercase(),
            payment_method,
            description: param(params, "description").map(str::to_owned),
            metadata: metadata(params),
        })
    }

    fn succeed(self, meta: &Meta) -> Outcome {
        let id = format!("pi_{}", random_alphanumeric(24));
        let created = chrono::Utc::now().timestamp();
        let body = json!({
            "id": id,
            "object": "payment_intent",
            "amount": self.amount,
            "currency": self.currency,
            "status": "succeeded",
            "payment_method": self.payment_method,
            "description": self.description,
            "metadata": self.metadata,
            "created": created,
            "livemode": false,
        });
        let charge = ChargeEntry {
            id,
            amount: self.amount,
            currency: self.currency.clone(),
            payment_method: self.payment_method.clone(),
            idempotency_key: meta.idempotency_key.clone(),
            saga_id: self.metadata.get("saga_id").cloned(),
            correlation_id: self.correlation_id(meta),
            created,
        };
        Outcome {
            status: StatusCode::OK,
            body,
            record: Some(Record::Charge(charge)),
        }
    }

    fn decline(self, meta: &Meta, cause: &str) -> Outcome {
        let body = json!({
            "error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
            }
        });
        let decline = DeclineEntry {
            correlation_id: self.correlation_id(meta),
            saga_id: self.metadata.get("saga_id").cloned(),
            amount: self.amount,
            currency: self.currency,
            payment_method: self.payment_method,
            idempotency_key: meta.idempotency_key.clone(),
            cause: cause.to_owned(),
        };
        let record = Some(Record::Decline(decline));
        Outcome {
            status: StatusCode::PAYMENT_REQUIRED,
            body,
            record,
        }
    }

    /// The header wins; `metadata[correlation_id]` stands in without it.
    fn correlation_id(&self, meta: &Meta) -> Option<String> {
        let from_metadata = || self.metadata.get("correlation_id").cloned();
        meta.correlation_id.clone().or_else(from_metadata)
    }
}

impl Invalid {
    fn outcome(self) -> Outcome {
        let body = json!({
            "error": {
                "type": "invalid_request_error",
                "message": self.message,
                "param": self.param,
            }
        });
        Outcome {
            status: StatusCode::BAD_REQUEST,
            body,
            record: None,
        }
    }
}

fn invalid(param: &'static str, message: &str) -> Invalid {
    Invalid {
        param,
        message: message.to_owned(),
    }
}

fn required<'a>(params: &'a Params, name: &'static str) -> Result<&'a str, Invalid> {
    match param(params, name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(invalid(name, &format!("Missing required param: {name}."))),
    }
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    let found = params.iter().find(|(key, _)| key == name);
    found.map(|(_, value)| value.as_str())
}

/// Collects `metadata[key]=value` pairs, Stripe's form encoding of a map.
fn metadata(params: &Params) -> BTreeMap<String, String> {
    let entry = |(name, value): &(String, String)| {
        let key = name.strip_prefix("metadata[")?.strip_suffix(']')?;
        Some((key.to_owned(), value.clone()))
    };
    params.iter().filter_map(entry).collect()
}

/// Parses the form body. A body that is no form keeps its text as the
/// only parameter, so a replay must still repeat it exactly.
fn parse_params(body: &[u8]) -> Params {
    let mut params: Params = serde_urlencoded::from_bytes(body)
        .unwrap_or_else(|_| vec![(String::new(), String::from_utf8_lossy(body).into_owned())]);
    params.sort();
    params
}

/// A request's hold on its idempotency key while it executes. Dropping
/// it unfinished, as when the client goes away, frees the key again.
struct Claim {
    app: App,
    key: Option<String>,
}

impl Claim {
    /// Claims `key` for this request, or says why it is taken. Also
    /// hands out the test gate, if one is installed.
    fn take(
        app: &App,
        key: Option<&str>,
        params: &Params,
    ) -> Result<(Claim, Option<Arc<Gate>>), Taken> {
        let mut state = app.lock();
        let store = &mut state.payments;
        let gate = store.hold.clone();
        // Built only when granted: a dropped claim frees its key.
        let claim = |key: Option<&str>| {
            let key = key.map(str::to_owned);
            Claim {
                app: app.clone(),
                key,
            }
        };
        let Some(key) = key else {
            return Ok((claim(None), gate));
        };

        match store.keys.get(key) {
            Some(Keyed::Executing) => Err(Taken::InUse),
            Some(Keyed::Done {
                params: first,
                status,
                body,
            }) if first == params => {
                let replay = Taken::Replay {
                    status: *status,
                    body: body.clone(),
                };
                Err(replay)
            }
            Some(Keyed::Done { .. }) => Err(Taken::Reused),
            None => {
                store.keys.insert(key.to_owned(), Keyed::Executing);
                Ok((claim(Some(key)), gate))
            }
        }
    }

    /// Records the outcome and stores it under the key, in one step so
    /// that no reader sees one without the other.
    fn finish(mut self, params: Params, outcome: Outcome) {
        let key = self.key.take();
        let mut state = self.app.lock();
        match outcome.record {
            Some(Record::Charge(charge)) => state.ledger.charges.push(charge),
            Some(Record::Decline(decline)) => state.ledger.declines.push(decline),
            None => {}
        }
        if let Some(key) = key {
            let Outcome { status, body, .. } = outcome;
            state.payments.keys.insert(
                key,
                Keyed::Done {
                    params,
                    status,
                    body,
                },
            );
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // `finish` takes the key; one still here was never finished.
        let Some(key) = self.key.take() else { return };
        let mut state = self.app.lock();
        if let Some(Keyed::Executing) = state.payments.keys.get(&key) {
            state.payments.keys.remove(&key);
        }
    }
}

/// Why a request could not claim its idempotency key.
enum Taken {
    /// The first request with the key is still executing.
    InUse,
    /// The first request finished with other parameters.
    Reused,
    /// The first request finished with these parameters.
    Replay { status: StatusCode, body: Value },
}

impl Taken {
    fn response(self) -> Response {
        match self {
            Taken::InUse => key_in_use(),
            Taken::Reused => key_reused(),
            Taken::Replay { status, body } => respond(status, &body, true),
        }
    }
}

/// Where held payment requests wait; see [`PaymentHold`].
struct Gate {
    held: watch::Sender<usize>,
    released: watch::Sender<bool>,
}

impl Gate {
    async fn pass(&self) {
        let mut released = self.released.subscribe();
        self.held.send_modify(|held| *held += 1);
        // The hold owns the sender, so this only ends on release.
        let _ = released.wait_for(|released| *released).await;
    }
}

/// A test hook from [`Sandbox::hold_payments`](super::Sandbox::hold_payments):
/// while it lives, every payment request stops after claiming its
/// idempotency key and before executing. Dropping it, or
/// [`PaymentHold::release`], lets them all go on.
pub struct PaymentHold {
    app: App,
    gate: Arc<Gate>,
}

impl PaymentHold {
    pub(crate) fn install(app: &App) -> PaymentHold {
        let gate = Arc::new(Gate {
            held: watch::channel(0).0,
            released: watch::channel(false).0,
        });
        // A hold installed earlier stays released-on-drop, but new
        // requests wait at the new gate.
        app.lock().payments.hold = Some(Arc::clone(&gate));
        PaymentHold {
            app: app.clone(),
            gate,
        }
    }

    /// Waits until at least `count` payment requests are being held.
    pub async fn wait_held(&self, count: usize) {
        let mut held = self.gate.held.subscribe();
        // The hold owns the sender, so this cannot see it closed.
        let _ = held.wait_for(|held| *held >= count).await;
    }

    /// Lets every held request execute and stops holding new ones.
    pub fn release(self) {}
}

impl Drop for PaymentHold {
    fn drop(&mut self) {
        let mut state = self.app.lock();
        let ours = state
            .payments
            .hold
            .as_ref()
            .is_some_and(|gate| Arc::ptr_eq(gate, &self.gate));
        if ours {
            state.payments.hold = None;
        }
        drop(state);
        self.gate.released.send_replace(true);
    }
}

fn key_in_use() -> Response {
    let body = json!({
        "error": {
            "type": "idempotency_error",
            "code": "idempotency_key_in_use",
            "message": "A request with this idempotency key is still \
                        executing. Retry after it has finished.",
        }
    });
    respond(StatusCode::CONFLICT, &body, false)
}

fn key_reused() -> Response {
    let body = json!({
        "error": {
            "type": "idempotency_error",
            "message": "This idempotency key was first used with other \
                        parameters. Use a new key for a new request.",
        }
    });
    respond(StatusCode::BAD_REQUEST, &body, false)
}

fn respond(status: StatusCode, body: &Value, replayed: bool) -> Response {
    let mut response = (status, Json(body)).into_response();
    if replayed {
        let yes = HeaderValue::from_static("true");
        response.headers_mut().insert(REPLAYED, yes);
    }
    response
}

/// Stripe's error answer for an injected fault: `api_error` for server
/// errors, the `rate_limit` error for 429.
pub(crate) fn fault_response(status: StatusCode) -> Response {
    let error = if status == StatusCode::TOO_MANY_REQUESTS {
        json!({
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Too many requests hit the API too quickly.",
        })
    } else {
        json!({
            "type": "api_error",
            "message": "The sandbox injected a server error.",
        })
    };
    respond(status, &json!({ "error": error }), false)
}

fn random_alphanumeric(len: usize) -> String {
    let chars = rand::rng().sample_iter(Alphanumeric).take(len);
    chars.map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(body: &str) -> Params {
        parse_params(body.as_bytes())
    }

    #[test]
    fn validates_like_stripe() {
        let ok = "amount=500&currency=EUR&confirm=true&payment_method=pm_card_visa\
                  &metadata%5Bsaga_id%5D=s1";
        let intent = Intent::parse(&params(ok)).ok().unwrap();
        assert_eq!(intent.currency, "eur");
        assert_eq!(
            intent.metadata.get("saga_id").map(String::as_str),
            Some("s1")
        );

        let cases = [
            ("currency=eur&confirm=true&payment_method=pm", "amount"),
            (
                "amount=0&currency=eur&confirm=true&payment_method=pm",
                "amount",
            ),
            (
                "amount=100000000&currency=eur&confirm=true&payment_method=pm",
                "amount",
            ),
            (
                "amount=-5&currency=eur&confirm=true&payment_method=pm",
                "amount",
            ),
            (
                "amount=5&currency=euro&confirm=true&payment_method=pm",
                "currency",
            ),
            ("amount=5&currency=eur&confirm=true", "payment_method"),
            ("amount=5&currency=eur&payment_method=pm", "confirm"),
        ];
        for (body, param) in cases {
            let invalid = Intent::parse(&params(body)).err().unwrap();
            assert_eq!(invalid.param, param, "{body}");
        }
    }

    #[test]
    fn parameter_order_does_not_change_the_fingerprint() {
        assert_eq!(params("a=1&b=2"), params("b=2&a=1"));
        assert_ne!(params("a=1&b=2"), params("a=1&b=3"));
    }
}
