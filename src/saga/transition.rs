//! The transition function: how a saga moves from one state to the next.
//!
//! [`apply`] takes a saga, an [`Event`] and the retry policies, changes
//! the saga in memory and returns the [`Effect`] the runner must carry out
//! next. It performs no I/O and reads no clock: time and randomness arrive
//! inside the event. The runner persists the changed saga, and only once
//! that write is durable does it perform the effect ("persist first, then
//! act"). Every match on state here is exhaustive on purpose, so that a
//! new state or step cannot be forgotten.

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    Attempt, AttemptOutcome, FinalStatus, GiveUp, Notification, PaymentState, Saga, State, Step,
    StepError, Summary, MAX_KEPT_ATTEMPTS,
};
use crate::retry::{decide, Decision, Policies};
use crate::services::{
    Activity, ActivityRecord, Call, CallError, EmailKind, ErrorKind, Request, StepOutput,
};

/// Something that happened to a saga.
#[derive(Debug, Clone)]
pub enum Event {
    /// The current step is due: start its next attempt.
    Begin { now: DateTime<Utc> },
    /// The attempt in flight ended with this result. `jitter` is a
    /// uniform sample in `[0, 1)` used if a retry is scheduled.
    Ended {
        now: DateTime<Utc>,
        result: Result<StepOutput, CallError>,
        jitter: f64,
    },
    /// The saga was found in flight when it was loaded: the process that
    /// ran the attempt stopped before recording its outcome.
    Recovered { now: DateTime<Utc>, jitter: f64 },
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Begin { .. } => "Begin",
            Event::Ended { .. } => "Ended",
            Event::Recovered { .. } => "Recovered",
        }
    }
}

/// What the runner does once the new state is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this request.
    Call(Call),
    /// Start the next attempt at once.
    Continue,
    /// Start the next attempt at this wall-clock time.
    Wait(DateTime<Utc>),
    /// The saga is finished.
    Done,
}

/// An event that does not fit the state: a bug in the caller, reported
/// instead of corrupting the saga.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saga {saga}: event {event} does not apply in state {state}")]
pub struct Error {
    pub saga: String,
    pub event: &'static str,
    pub state: &'static str,
}

/// Applies `event` to `saga` and returns the effect to perform.
///
/// # Errors
///
/// The event does not apply to the saga's current state; the saga is
/// left unchanged.
pub fn apply(saga: &mut Saga, event: Event, policies: &Policies) -> Result<Effect, Error> {
    let mismatch = |saga: &Saga, event: &Event| Error {
        saga: saga.id.to_string(),
        event: event.name(),
        state: saga.state.label(),
    };

    let effect = match (&saga.state, &event) {
        // Persisting the attempt before sending it is what lets a restart
        // know that a request may have left.
        (State::Ready { step, .. }, Event::Begin { now }) => {
            let step = *step;
            // Only a payment step of a registration without a payment has
            // no request; the step order never gets there, so such a
            // record was altered outside regsaga.
            let request = request_for(saga, step).ok_or_else(|| mismatch(saga, &event))?;
            begin(saga, step, request, *now)
        }
        (
            State::InFlight { step, .. },
            Event::Ended {
                now,
                result,
                jitter,
            },
        ) => {
            let step = *step;
            match result {
                Ok(output) => succeed(saga, step, output.clone(), *now),
                Err(error) => fail(saga, step, error, *now, *jitter, policies),
            }
        }
        // An in-doubt attempt counts as an attempt and is retried with
        // the same key, so the service can recognise a repeat.
        (State::InFlight { step, .. }, Event::Recovered { now, jitter }) => {
            let error = CallError::new(
                ErrorKind::Interrupted,
                "interrupted by a restart before its outcome was recorded",
            );
            fail(saga, *step, &error, *now, *jitter, policies)
        }
        (State::Ready { .. }, Event::Ended { .. } | Event::Recovered { .. })
        | (State::InFlight { .. }, Event::Begin { .. })
        | (State::Finished(_), _) => return Err(mismatch(saga, &event)),
    };

    saga.updated_at = event_time(&event);
    Ok(effect)
}

fn event_time(event: &Event) -> DateTime<Utc> {
    match event {
        Event::Begin { now } | Event::Ended { now, .. } | Event::Recovered { now, .. } => *now,
    }
}

fn begin(saga: &mut Saga, step: Step, request: Request, now: DateTime<Utc>) -> Effect {
    let number = saga.attempts(step).saturating_add(1);
    let key = saga.idempotency_key(step);
    saga.history.push(Attempt {
        step,
        number,
        idempotency_key: key.clone(),
        started_at: now,
        ended_at: None,
        outcome: AttemptOutcome::Pending,
        next_due: None,
        gave_up: None,
    });
    saga.state = State::InFlight {
        step,
        attempt: number,
        idempotency_key: key.clone(),
    };

    Effect::Call(Call {
        saga_id: saga.id,
        correlation_id: saga.correlation_id,
        step,
        attempt: number,
        idempotency_key: key,
        request,
    })
}

fn succeed(saga: &mut Saga, step: Step, output: StepOutput, now: DateTime<Utc>) -> Effect {
    match (step, output) {
        (Step::CreateProfile, StepOutput::ProfileCreated { user_id }) => {
            saga.report.user_id = Some(user_id);
        }
        (Step::ChargePayment, StepOutput::PaymentCharged { payment_id }) => {
            saga.report.payment = PaymentState::Processed { payment_id };
        }
        (
            Step::SendWelcomeEmail | Step::SendPaymentConfirmation | Step::SendSmsVerification,
            StepOutput::NotificationSent { id, status },
        ) => {
            let prefix = notification_prefix(step);
            saga.report.notifications.push(Notification {
                step,
                id: format!("{prefix}_{id}"),
                status,
            });
        }
        (Step::UpdateProfileStatus, StepOutput::ProfileStatusUpdated) => {
            let status = profile_status(saga).to_owned();
            saga.report.profile_status = Some(status);
        }
        (Step::RecordActivity, StepOutput::ActivityRecorded { .. }) => {}
        // A service answered with the wrong kind of output: record it as
        // an unusable response rather than trusting it.
        (_, _) => {
            let error = CallError::new(
                ErrorKind::InvalidResponse,
                format!("{} service returned an unexpected response", step.service()),
            );
            close_attempt(saga, step, &error, now);
            if let Some(last) = saga.history.last_mut() {
                last.gave_up = Some(GiveUp::NotRetryable);
            }
            return give_up_step(saga, step, &error.reason);
        }
    }

    if let Some(attempt) = pending_attempt(saga, step) {
        attempt.ended_at = Some(now);
        attempt.outcome = AttemptOutcome::Succeeded;
    }
    advance(saga, step)
}

fn fail(
    saga: &mut Saga,
    step: Step,
    error: &CallError,
    now: DateTime<Utc>,
    jitter: f64,
    policies: &Policies,
) -> Effect {
    close_attempt(saga, step, error, now);

    let policy = policies.for_step(step);
    let attempts = saga.attempts(step);
    let give_up = match decide(error) {
        Decision::Stop => GiveUp::NotRetryable,
        Decision::Retry => {
            // The larger of the backoff and the server's Retry-After.
            let wait = policy.delay(attempts, jitter);
            let wait = wait.max(error.retry_after.unwrap_or_default());
            let due = add_saturating(now, wait);
            let first = saga.first_started_at(step).unwrap_or(now);
            let exhausted = attempts >= policy.max_attempts;
            let over_budget = due > add_saturating(first, policy.step_budget);

            // An attempt in doubt may have taken effect (a charge made, a
            // profile created). Giving up on it would report a failure
            // that may be false, so a few more attempts with the same key
            // ask the service what happened, past the limits if need be.
            let resolving = error.kind.is_in_doubt()
                && attempts < policy.max_attempts.saturating_add(IN_DOUBT_RETRIES);
            match (exhausted, over_budget) {
                (false, false) => return schedule_retry(saga, step, due),
                _ if resolving => return schedule_retry(saga, step, due),
                (true, _) => GiveUp::AttemptsExhausted,
                (false, true) => GiveUp::BudgetExhausted,
            }
        }
    };

    if let Some(last) = saga.history.last_mut() {
        last.gave_up = Some(give_up);
    }
    let unknown = if error.kind.is_in_doubt() {
        "; the last attempt's outcome is unknown"
    } else {
        ""
    };
    let reason = match give_up {
        GiveUp::NotRetryable => format!("{} (not retryable)", error.reason),
        GiveUp::AttemptsExhausted => {
            format!(
                "{} (gave up after {attempts} attempts{unknown})",
                error.reason
            )
        }
        GiveUp::BudgetExhausted => format!(
            "{} (gave up: a retry would end past the step's budget of {}{unknown})",
            error.reason,
            humantime::format_duration(policy.step_budget)
        ),
    };
    compact(saga, step);
    give_up_step(saga, step, &reason)
}

/// Attempts allowed past `max_attempts` (and past the step budget) when
/// the last attempt is in doubt, to learn its outcome.
pub const IN_DOUBT_RETRIES: u32 = 2;

/// Moves the saga to wait for another attempt of `step` at `due`.
fn schedule_retry(saga: &mut Saga, step: Step, due: DateTime<Utc>) -> Effect {
    if let Some(last) = saga.history.last_mut() {
        last.next_due = Some(due);
    }
    saga.state = State::Ready {
        step,
        due: Some(due),
    };
    compact(saga, step);
    Effect::Wait(due)
}

/// Keeps a step's history bounded: its latest attempts in full, the
/// older ones counted in its summary.
fn compact(saga: &mut Saga, step: Step) {
    let kept = saga.history.iter().filter(|a| a.step == step).count();
    if kept <= MAX_KEPT_ATTEMPTS {
        return;
    }
    let Some(index) = saga.history.iter().position(|a| a.step == step) else {
        return;
    };
    let oldest = saga.history.remove(index);

    let summary = match saga.summaries.iter().position(|s| s.step == step) {
        Some(i) => &mut saga.summaries[i],
        None => {
            saga.summaries.push(Summary {
                step,
                dropped: 0,
                first_started_at: oldest.started_at,
                failures: Vec::new(),
            });
            let last = saga.summaries.len() - 1;
            &mut saga.summaries[last]
        }
    };
    summary.dropped = summary.dropped.saturating_add(1);
    let kind = match oldest.outcome {
        AttemptOutcome::Failed { kind, .. } => kind,
        AttemptOutcome::Interrupted => ErrorKind::Interrupted,
        AttemptOutcome::Pending | AttemptOutcome::Succeeded => return,
    };
    match summary.failures.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, n)) => *n = n.saturating_add(1),
        None => summary.failures.push((kind, 1)),
    }
}

/// Fills in the outcome of the step's pending attempt.
fn close_attempt(saga: &mut Saga, step: Step, error: &CallError, now: DateTime<Utc>) {
    if let Some(attempt) = pending_attempt(saga, step) {
        attempt.ended_at = Some(now);
        attempt.outcome = match error.kind {
            ErrorKind::Interrupted => AttemptOutcome::Interrupted,
            _ => AttemptOutcome::Failed {
                kind: error.kind,
                http_status: error.http_status(),
                message: error.reason.clone(),
                retry_after_ms: error
                    .retry_after
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            },
        };
    }
}

fn pending_attempt(saga: &mut Saga, step: Step) -> Option<&mut Attempt> {
    saga.history
        .iter_mut()
        .rev()
        .find(|a| a.step == step && a.outcome == AttemptOutcome::Pending)
}

/// Ends a step for good: a critical step fails the saga, any other step
/// is reported once in `errors` and the saga moves on.
fn give_up_step(saga: &mut Saga, step: Step, reason: &str) -> Effect {
    saga.report.errors.push(StepError {
        step,
        message: format!("{}: {reason}", step.failure_prefix()),
    });
    if step == Step::ChargePayment {
        saga.report.payment = PaymentState::Failed;
    }

    if step.is_critical() {
        saga.state = State::Finished(FinalStatus::Failed);
        return Effect::Done;
    }
    advance(saga, step)
}

/// Moves to the step after `done`, or finishes the saga.
fn advance(saga: &mut Saga, done: Step) -> Effect {
    match next_step(saga, done) {
        Some(step) => {
            saga.state = State::Ready { step, due: None };
            Effect::Continue
        }
        None => {
            saga.state = State::Finished(saga.outcome_so_far());
            Effect::Done
        }
    }
}

/// The step order. Payment confirmation is sent only for a payment that
/// went through; the SMS only when there is a phone number.
fn next_step(saga: &Saga, done: Step) -> Option<Step> {
    let registration = &saga.registration;
    let after_confirmation = if registration.phone.is_some() {
        Step::SendSmsVerification
    } else {
        Step::UpdateProfileStatus
    };

    match done {
        Step::CreateProfile if registration.payment.is_some() => Some(Step::ChargePayment),
        Step::CreateProfile | Step::ChargePayment => Some(Step::SendWelcomeEmail),
        Step::SendWelcomeEmail => match saga.report.payment {
            PaymentState::Processed { .. } => Some(Step::SendPaymentConfirmation),
            PaymentState::NotRequested | PaymentState::Pending | PaymentState::Failed => {
                Some(after_confirmation)
            }
        },
        Step::SendPaymentConfirmation => Some(after_confirmation),
        Step::SendSmsVerification => Some(Step::UpdateProfileStatus),
        Step::UpdateProfileStatus => Some(Step::RecordActivity),
        Step::RecordActivity => None,
    }
}

/// The profile status that reflects the registration's outcome.
fn profile_status(saga: &Saga) -> &'static str {
    match saga.report.payment {
        PaymentState::Failed => "PENDING_PAYMENT",
        PaymentState::NotRequested | PaymentState::Pending | PaymentState::Processed { .. } => {
            "ACTIVE"
        }
    }
}

fn notification_prefix(step: Step) -> &'static str {
    match step {
        Step::SendPaymentConfirmation => "payment",
        Step::SendSmsVerification => "sms",
        _ => "welcome",
    }
}

/// Builds the request a step sends, from what the saga knows.
fn request_for(saga: &Saga, step: Step) -> Option<Request> {
    let reg = &saga.registration;
    let user_id = saga.report.user_id.clone().unwrap_or_default();
    let request = match step {
        Step::CreateProfile => Request::CreateProfile {
            email: reg.email.clone(),
            full_name: reg.full_name.clone(),
            phone: reg.phone.clone(),
        },
        Step::ChargePayment => Request::Charge {
            user_id,
            payment: reg.payment.clone()?,
        },
        Step::SendWelcomeEmail => Request::SendEmail {
            kind: EmailKind::Welcome,
            to: reg.email.clone(),
            name: reg.full_name.clone(),
            subject: "Welcome to regsaga".to_owned(),
            body: format!(
                "Hello {},\n\nyour account is ready. Welcome aboard!\n",
                reg.full_name
            ),
        },
        Step::SendPaymentConfirmation => Request::SendEmail {
            kind: EmailKind::PaymentConfirmation,
            to: reg.email.clone(),
            name: reg.full_name.clone(),
            subject: "Payment received".to_owned(),
            body: format!(
                "Hello {},\n\nwe received your payment of {}.\n",
                reg.full_name,
                reg.payment.as_ref()?.display_amount()
            ),
        },
        Step::SendSmsVerification => Request::SendSms {
            to: reg.phone.clone().unwrap_or_default(),
            body: format!(
                "Your regsaga verification code is {}",
                verification_code(saga)
            ),
        },
        Step::UpdateProfileStatus => Request::UpdateProfileStatus {
            user_id,
            status: profile_status(saga).to_owned(),
            active: true,
        },
        Step::RecordActivity => Request::RecordActivity(activity_record(saga)),
    };
    Some(request)
}

/// Six digits derived from the saga id, so every retry sends the same code.
fn verification_code(saga: &Saga) -> String {
    let bytes = saga.id.as_bytes();
    let n = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    format!("{:06}", n % 1_000_000)
}

fn activity_record(saga: &Saga) -> ActivityRecord {
    let mut activities = Vec::new();
    // The activity step itself is what this record is sent by.
    for step in Step::ALL.into_iter().filter(|s| *s != Step::RecordActivity) {
        let Some(last) = saga.history.iter().rev().find(|a| a.step == step) else {
            continue;
        };
        let detail = saga
            .report
            .errors
            .iter()
            .find(|e| e.step == step)
            .map(|e| e.message.clone());
        activities.push(Activity {
            step: step.name().to_owned(),
            outcome: if detail.is_some() {
                "failed"
            } else {
                "succeeded"
            }
            .to_owned(),
            attempts: saga.attempts(step),
            detail,
            at: last.ended_at.unwrap_or(last.started_at).to_rfc3339(),
        });
    }

    ActivityRecord {
        user_id: saga.report.user_id.clone(),
        final_status: saga.outcome_so_far().as_str().to_owned(),
        activities,
    }
}

fn add_saturating(now: DateTime<Utc>, wait: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(wait)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::RegistrationInput;

    fn saga(json: &str) -> Saga {
        let input: RegistrationInput = serde_json::from_str(json).unwrap();
        Saga::new(input.validate().unwrap(), crate::saga::now())
    }

    const FULL: &str = r#"{"email":"a@example.com","fullName":"A","phoneNumber":"+12025550143",
        "initialPayment":{"amount":1.5,"paymentMethod":"paypal"}}"#;
    const BARE: &str = r#"{"email":"a@example.com","fullName":"A"}"#;

    fn ok_for(step: Step) -> StepOutput {
        match step {
            Step::CreateProfile => StepOutput::ProfileCreated {
                user_id: "u".into(),
            },
            Step::ChargePayment => StepOutput::PaymentCharged {
                payment_id: "pi".into(),
            },
            Step::SendWelcomeEmail | Step::SendPaymentConfirmation | Step::SendSmsVerification => {
                StepOutput::NotificationSent {
                    id: "n".into(),
                    status: "ACCEPTED".into(),
                }
            }
            Step::UpdateProfileStatus => StepOutput::ProfileStatusUpdated,
            Step::RecordActivity => StepOutput::ActivityRecorded { id: "a".into() },
        }
    }

    /// Runs a saga to its end, answering each step with `answer`.
    fn walk(
        mut saga: Saga,
        answer: impl Fn(Step) -> Result<StepOutput, CallError>,
    ) -> (Saga, Vec<Step>) {
        let policies = Policies::default();
        let mut steps = Vec::new();
        for _ in 0..100 {
            if saga.state.is_finished() {
                break;
            }
            let now = crate::saga::now();
            let Effect::Call(call) = apply(&mut saga, Event::Begin { now }, &policies).unwrap()
            else {
                panic!("Begin must ask for a call");
            };
            steps.push(call.step);
            let ended = Event::Ended {
                now,
                result: answer(call.step),
                jitter: 0.5,
            };
            apply(&mut saga, ended, &policies).unwrap();
        }
        (saga, steps)
    }

    #[test]
    fn step_order_for_every_kind_of_registration() {
        use Step::*;
        let (s, steps) = walk(saga(FULL), |s| Ok(ok_for(s)));
        assert_eq!(steps, Step::ALL);
        assert_eq!(s.state, State::Finished(FinalStatus::Completed));

        let (_, steps) = walk(saga(BARE), |s| Ok(ok_for(s)));
        assert_eq!(
            steps,
            [
                CreateProfile,
                SendWelcomeEmail,
                UpdateProfileStatus,
                RecordActivity
            ]
        );

        let declined = |s| match s {
            ChargePayment => Err(CallError::new(ErrorKind::Declined, "declined")),
            other => Ok(ok_for(other)),
        };
        let (s, steps) = walk(saga(FULL), declined);
        assert_eq!(
            steps,
            [
                CreateProfile,
                ChargePayment,
                SendWelcomeEmail,
                SendSmsVerification,
                UpdateProfileStatus,
                RecordActivity
            ]
        );
        assert_eq!(s.state, State::Finished(FinalStatus::CompletedWithErrors));
        assert_eq!(s.report.payment, PaymentState::Failed);
        assert_eq!(s.report.profile_status.as_deref(), Some("PENDING_PAYMENT"));
    }

    #[test]
    fn every_step_failing_for_good_is_reported_once() {
        for failing in Step::ALL {
            let (s, steps) = walk(saga(FULL), |s| {
                if s == failing {
                    Err(CallError::new(ErrorKind::Http(400), "bad request"))
                } else {
                    Ok(ok_for(s))
                }
            });
            let errors: Vec<_> = s.report.errors.iter().map(|e| e.step).collect();
            assert_eq!(errors, [failing], "{failing}");
            assert_eq!(
                steps.iter().filter(|s| **s == failing).count(),
                1,
                "not retried"
            );
            let want = if failing.is_critical() {
                FinalStatus::Failed
            } else {
                FinalStatus::CompletedWithErrors
            };
            assert_eq!(s.state, State::Finished(want), "{failing}");
            assert!(s.report.errors[0]
                .message
                .starts_with(failing.failure_prefix()));
        }
    }

    #[test]
    fn retryable_failures_wait_then_give_up_after_max_attempts() {
        let policies = Policies::default();
        let mut s = saga(BARE);
        for attempt in 1..=5 {
            let now = crate::saga::now();
            apply(&mut s, Event::Begin { now }, &policies).unwrap();
            let ended = Event::Ended {
                now,
                result: Err(CallError::new(ErrorKind::Http(503), "down")),
                jitter: 0.999,
            };
            let effect = apply(&mut s, ended, &policies).unwrap();
            if attempt < 5 {
                assert!(matches!(effect, Effect::Wait(_)), "attempt {attempt}");
                assert!(matches!(s.state, State::Ready { due: Some(_), .. }));
            } else {
                assert_eq!(effect, Effect::Done);
            }
        }
        assert_eq!(s.state, State::Finished(FinalStatus::Failed));
        assert!(s.report.errors[0]
            .message
            .ends_with("(gave up after 5 attempts)"));
    }

    #[test]
    fn an_attempt_in_doubt_is_never_the_last_within_the_extra_retries() {
        let policies = Policies::default();
        let fail_with = |kind: ErrorKind| {
            let mut s = saga(BARE);
            let mut effects = Vec::new();
            for _ in 0..10 {
                let now = crate::saga::now();
                apply(&mut s, Event::Begin { now }, &policies).unwrap();
                let ended = Event::Ended {
                    now,
                    result: Err(CallError::new(kind, "x")),
                    jitter: 0.0,
                };
                let effect = apply(&mut s, ended, &policies).unwrap();
                effects.push(effect.clone());
                if effect == Effect::Done {
                    break;
                }
            }
            (s, effects.len())
        };

        let (_, attempts) = fail_with(ErrorKind::Http(503));
        assert_eq!(attempts, 5);
        let (s, attempts) = fail_with(ErrorKind::Timeout);
        assert_eq!(attempts as u32, 5 + IN_DOUBT_RETRIES);
        assert!(
            s.report.errors[0]
                .message
                .ends_with("the last attempt's outcome is unknown)"),
            "{}",
            s.report.errors[0].message
        );
    }

    #[test]
    fn recovered_in_flight_attempt_counts_and_is_retried() {
        let policies = Policies::default();
        let mut s = saga(BARE);
        let now = crate::saga::now();
        apply(&mut s, Event::Begin { now }, &policies).unwrap();

        let effect = apply(&mut s, Event::Recovered { now, jitter: 0.0 }, &policies).unwrap();

        assert!(matches!(effect, Effect::Wait(_)));
        assert_eq!(s.history[0].outcome, AttemptOutcome::Interrupted);
        assert_eq!(s.attempts(Step::CreateProfile), 1);
    }

    #[test]
    fn events_that_do_not_fit_the_state_are_refused_and_change_nothing() {
        let policies = Policies::default();
        let now = crate::saga::now();
        let ended = || Event::Ended {
            now,
            result: Ok(ok_for(Step::CreateProfile)),
            jitter: 0.0,
        };
        let recovered = || Event::Recovered { now, jitter: 0.0 };

        let ready = saga(BARE);
        for event in [ended(), recovered()] {
            let mut s = ready.clone();
            assert!(apply(&mut s, event, &policies).is_err());
            assert_eq!(s, ready);
        }

        let mut in_flight = saga(BARE);
        apply(&mut in_flight, Event::Begin { now }, &policies).unwrap();
        let mut s = in_flight.clone();
        assert!(apply(&mut s, Event::Begin { now }, &policies).is_err());
        assert_eq!(s, in_flight);

        let (finished, _) = walk(saga(BARE), |s| Ok(ok_for(s)));
        for event in [Event::Begin { now }, ended(), recovered()] {
            let mut s = finished.clone();
            assert!(apply(&mut s, event, &policies).is_err());
            assert_eq!(s, finished);
        }
    }

    #[test]
    fn a_wrong_kind_of_output_is_recorded_as_an_invalid_response() {
        let (s, _) = walk(saga(BARE), |s| match s {
            Step::SendWelcomeEmail => Ok(StepOutput::ProfileStatusUpdated),
            other => Ok(ok_for(other)),
        });
        assert_eq!(s.state, State::Finished(FinalStatus::CompletedWithErrors));
        let welcome = s
            .history
            .iter()
            .find(|a| a.step == Step::SendWelcomeEmail)
            .unwrap();
        assert!(matches!(
            welcome.outcome,
            AttemptOutcome::Failed {
                kind: ErrorKind::InvalidResponse,
                ..
            }
        ));
    }
}
