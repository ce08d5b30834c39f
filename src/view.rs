//! Read-only views of a saga for inspection: a list row and a full detail.
//!
//! These are the JSON shapes of `regsaga inspect list --json` and
//! `regsaga inspect show --json` (see `docs/FORMATS.md`). Times are
//! RFC 3339 in UTC, durations in milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::result::RegistrationResult;
use crate::saga::{Attempt, AttemptOutcome, Saga, State, Step};

/// One saga in a listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaRow {
    pub saga_id: String,
    pub email: String,
    pub status: String,
    /// The current step; `null` once finished.
    pub step: Option<String>,
    /// Attempts of all steps so far.
    pub attempts: usize,
    pub next_attempt_due: Option<String>,
    pub updated_at: String,
}

/// Everything known about one saga.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaDetail {
    pub saga_id: String,
    pub correlation_id: String,
    pub email: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    /// What the saga waits for, unless finished.
    pub waiting: Option<Waiting>,
    pub result: RegistrationResult,
    /// Steps in the order they ran, each with every attempt.
    pub steps: Vec<StepView>,
}

/// The current step of an unfinished saga.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub step: String,
    /// `due` (a retry time), `now` or `in-flight`.
    pub reason: String,
    pub due: Option<String>,
    pub attempts_made: u32,
    /// Attempts the step may still make under the given retry policy
    /// (not counting those that may follow one in doubt).
    pub attempts_left: Option<u32>,
}

/// One step and its attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub step: String,
    pub service: String,
    pub idempotency_key: String,
    /// Attempts in all, including those no longer kept in full.
    pub attempt_count: u32,
    /// Older attempts dropped from `attempts` to keep history bounded.
    pub earlier_attempts: u32,
    pub attempts: Vec<AttemptView>,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub number: u32,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// `pending`, `succeeded`, `failed` or `interrupted`.
    pub outcome: String,
    pub error_kind: Option<String>,
    pub http_status: Option<u16>,
    pub message: Option<String>,
    pub retry_after_ms: Option<u64>,
    pub next_due: Option<String>,
    /// On the step's last attempt if it gave up: `not-retryable`,
    /// `attempts-exhausted` or `budget-exhausted`.
    pub gave_up: Option<String>,
}

pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<&Saga> for SagaRow {
    fn from(saga: &Saga) -> Self {
        let due = match &saga.state {
            State::Ready { due, .. } => due.map(time),
            State::InFlight { .. } | State::Finished(_) => None,
        };
        SagaRow {
            saga_id: saga.id.to_string(),
            email: saga.registration.email.clone(),
            status: saga.state.label().to_owned(),
            step: saga.state.step().map(|s| s.name().to_owned()),
            attempts: saga.history.len(),
            next_attempt_due: due,
            updated_at: time(saga.updated_at),
        }
    }
}

impl SagaDetail {
    /// The detail, with the attempts each waiting step has left under
    /// `policies`.
    pub fn with_policies(saga: &Saga, policies: &crate::retry::Policies) -> Self {
        let mut detail = SagaDetail::from(saga);
        if let Some(waiting) = detail.waiting.as_mut() {
            if let Some(step) = saga.state.step() {
                let max = policies.for_step(step).max_attempts;
                waiting.attempts_left = Some(max.saturating_sub(waiting.attempts_made));
            }
        }
        detail
    }
}

impl From<&Saga> for SagaDetail {
    fn from(saga: &Saga) -> Self {
        SagaDetail {
            saga_id: saga.id.to_string(),
            correlation_id: saga.correlation_id.to_string(),
            email: saga.registration.email.clone(),
            status: saga.state.label().to_owned(),
            created_at: time(saga.created_at),
            updated_at: time(saga.updated_at),
            waiting: waiting(saga),
            result: RegistrationResult::from(saga),
            steps: steps(saga),
        }
    }
}

fn waiting(saga: &Saga) -> Option<Waiting> {
    let (step, reason, due) = match &saga.state {
        State::Finished(_) => return None,
        State::Ready {
            step,
            due: Some(due),
        } => (*step, "due", Some(time(*due))),
        State::Ready { step, due: None } => (*step, "now", None),
        State::InFlight { step, .. } => (*step, "in-flight", None),
    };
    Some(Waiting {
        step: step.name().to_owned(),
        reason: reason.to_owned(),
        due,
        attempts_made: saga.attempts(step),
        attempts_left: None,
    })
}

fn steps(saga: &Saga) -> Vec<StepView> {
    let mut order: Vec<Step> = saga.summaries.iter().map(|s| s.step).collect();
    for attempt in &saga.history {
        if !order.contains(&attempt.step) {
            order.push(attempt.step);
        }
    }
    order
        .into_iter()
        .map(|step| StepView {
            step: step.name().to_owned(),
            service: step.service().to_owned(),
            idempotency_key: saga.idempotency_key(step),
            attempt_count: saga.attempts(step),
            earlier_attempts: saga.summary(step).map_or(0, |s| s.dropped),
            attempts: saga
                .history
                .iter()
                .filter(|a| a.step == step)
                .map(AttemptView::from)
                .collect(),
        })
        .collect()
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        let (error_kind, http_status, message, retry_after_ms) = match &a.outcome {
            AttemptOutcome::Failed {
                kind,
                http_status,
                message,
                retry_after_ms,
            } => (
                Some(kind.to_string()),
                *http_status,
                Some(message.clone()),
                *retry_after_ms,
            ),
            AttemptOutcome::Interrupted => (
                Some("interrupted".to_owned()),
                None,
                Some("the process stopped during this attempt".to_owned()),
                None,
            ),
            AttemptOutcome::Pending | AttemptOutcome::Succeeded => (None, None, None, None),
        };
        AttemptView {
            number: a.number,
            started_at: time(a.started_at),
            ended_at: a.ended_at.map(time),
            duration_ms: a
                .duration()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            outcome: a.outcome.label().to_owned(),
            error_kind,
            http_status,
            message,
            retry_after_ms,
            next_due: a.next_due.map(time),
            gave_up: a.gave_up.map(|g| g.label().to_owned()),
        }
    }
}

/// One payment operation, for the audit trail (`inspect audit`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentAudit {
    /// When the attempt started.
    pub at: String,
    pub saga_id: String,
    /// Whose payment, masked: `j***@example.com`.
    pub who: String,
    pub amount_minor: u64,
    pub currency: String,
    /// The amount in major units with its currency, e.g. `0.30 USD`.
    pub amount: String,
    pub idempotency_key: String,
    pub attempt: u32,
    /// `succeeded`, `failed`, `interrupted` or `pending`.
    pub outcome: String,
    /// The gateway's payment id, on the attempt that succeeded.
    pub payment_id: Option<String>,
    pub error: Option<String>,
}

/// The payment operations of one saga, oldest first.
pub fn payment_audit(saga: &Saga) -> Vec<PaymentAudit> {
    let Some(payment) = &saga.registration.payment else {
        return Vec::new();
    };
    let payment_id = match &saga.report.payment {
        crate::saga::PaymentState::Processed { payment_id } => Some(payment_id.clone()),
        _ => None,
    };
    saga.history
        .iter()
        .filter(|a| a.step == Step::ChargePayment)
        .map(|a| {
            let view = AttemptView::from(a);
            PaymentAudit {
                at: view.started_at,
                saga_id: saga.id.to_string(),
                who: crate::registration::mask_email(&saga.registration.email),
                amount_minor: payment.amount_minor,
                currency: payment.currency.clone(),
                amount: payment.display_amount(),
                idempotency_key: a.idempotency_key.clone(),
                attempt: a.number,
                outcome: view.outcome,
                payment_id: match a.outcome {
                    AttemptOutcome::Succeeded => payment_id.clone(),
                    _ => None,
                },
                error: view.message,
            }
        })
        .collect()
}

/// One saga decoded in full, as `inspect dump` writes it: the detail of
/// `inspect show` and the registration it carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaDump {
    #[serde(flatten)]
    pub detail: SagaDetail,
    pub registration: crate::registration::Registration,
}

impl From<&Saga> for SagaDump {
    fn from(saga: &Saga) -> Self {
        SagaDump {
            detail: SagaDetail::from(saga),
            registration: saga.registration.clone(),
        }
    }
}

/// Counts over a whole store, as `inspect stats` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub sagas: usize,
    /// Sagas by status label.
    pub by_status: std::collections::BTreeMap<String, usize>,
    /// Per service, from every attempt kept in history.
    pub services: std::collections::BTreeMap<String, ServiceStats>,
}

/// What one service's attempts came to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStats {
    pub attempts: usize,
    pub successes: usize,
    /// Failed attempts by error kind (`http-503`, `timeout`, …).
    pub failures: std::collections::BTreeMap<String, usize>,
    /// Attempts after a step's first.
    pub retries: usize,
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    #[serde(skip)]
    durations: Vec<u64>,
}

impl Stats {
    /// Adds one saga's counts.
    pub fn add(&mut self, saga: &Saga) {
        self.sagas += 1;
        *self
            .by_status
            .entry(saga.state.label().to_owned())
            .or_default() += 1;
        for attempt in &saga.history {
            let service = self
                .services
                .entry(attempt.step.service().to_owned())
                .or_default();
            service.attempts += 1;
            if attempt.number > 1 {
                service.retries += 1;
            }
            match &attempt.outcome {
                AttemptOutcome::Succeeded => service.successes += 1,
                AttemptOutcome::Failed { kind, .. } => {
                    *service.failures.entry(kind.to_string()).or_default() += 1;
                }
                AttemptOutcome::Interrupted => {
                    *service
                        .failures
                        .entry("interrupted".to_owned())
                        .or_default() += 1;
                }
                AttemptOutcome::Pending => {}
            }
            if let Some(took) = attempt.duration() {
                service
                    .durations
                    .push(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
            }
        }
    }

    /// Computes the latency percentiles once every saga was added.
    pub fn finish(&mut self) {
        for service in self.services.values_mut() {
            service.durations.sort_unstable();
            let at = |q: f64| {
                let d = &service.durations;
                (!d.is_empty()).then(|| d[((d.len() - 1) as f64 * q).round() as usize])
            };
            service.latency_p50_ms = at(0.50);
            service.latency_p95_ms = at(0.95);
            service.latency_p99_ms = at(0.99);
        }
    }
}
