//! The saga: one registration's durable state, its steps and its report.
//!
//! A [`Saga`] is the unit that the store persists after every transition.
//! Its [`State`] says where the registration stands; its [`Report`] holds
//! what has happened so far (the result a caller receives); its history
//! holds every attempt of every step. The transition rules live in
//! [`transition`]; this module only defines the data.

pub mod history;
pub mod transition;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::registration::Registration;
pub use history::{Attempt, AttemptOutcome, GiveUp, Summary};

/// The current time at the precision the store keeps (microseconds), so
/// that a saga read back equals the saga written.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Identifies one saga. A UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SagaId(pub Uuid);

impl SagaId {
    pub fn new() -> Self {
        SagaId(Uuid::now_v7())
    }

    /// The 16 bytes used as the store key.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for SagaId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for SagaId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(SagaId)
    }
}

/// The steps of a registration, in the order they can run.
///
/// The names returned by [`Step::name`] are part of the stored format and
/// of every idempotency key: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Step {
    CreateProfile,
    ChargePayment,
    SendWelcomeEmail,
    SendPaymentConfirmation,
    SendSmsVerification,
    UpdateProfileStatus,
    RecordActivity,
}

/// Which retry policy a step's service falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceClass {
    /// Third-party APIs: slow, rate-limited, retried patiently.
    External,
    /// Our own services: fast, retried briefly.
    Internal,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::CreateProfile,
        Step::ChargePayment,
        Step::SendWelcomeEmail,
        Step::SendPaymentConfirmation,
        Step::SendSmsVerification,
        Step::UpdateProfileStatus,
        Step::RecordActivity,
    ];

    /// Stable kebab-case name, used in keys, logs and output.
    pub fn name(self) -> &'static str {
        match self {
            Step::CreateProfile => "create-profile",
            Step::ChargePayment => "charge-payment",
            Step::SendWelcomeEmail => "send-welcome-email",
            Step::SendPaymentConfirmation => "send-payment-confirmation",
            Step::SendSmsVerification => "send-sms-verification",
            Step::UpdateProfileStatus => "update-profile-status",
            Step::RecordActivity => "record-activity",
        }
    }

    /// The service a step calls.
    pub fn service(self) -> &'static str {
        match self {
            Step::CreateProfile | Step::UpdateProfileStatus => "profile",
            Step::ChargePayment => "payment",
            Step::SendWelcomeEmail | Step::SendPaymentConfirmation => "email",
            Step::SendSmsVerification => "sms",
            Step::RecordActivity => "activity",
        }
    }

    pub fn class(self) -> ServiceClass {
        match self {
            Step::RecordActivity => ServiceClass::Internal,
            Step::CreateProfile
            | Step::ChargePayment
            | Step::SendWelcomeEmail
            | Step::SendPaymentConfirmation
            | Step::SendSmsVerification
            | Step::UpdateProfileStatus => ServiceClass::External,
        }
    }

    /// A critical step that fails for good fails the whole registration.
    pub fn is_critical(self) -> bool {
        matches!(self, Step::CreateProfile)
    }

    /// How the result's `errors` entry for this step begins; the reason
    /// follows after a colon. Notification steps share one prefix, as the
    /// result groups them, and name the message when the service alone
    /// would not tell which one failed.
    pub fn failure_prefix(self) -> &'static str {
        match self {
            Step::CreateProfile => "Failed to create profile",
            Step::ChargePayment => "Failed to process payment",
            Step::SendWelcomeEmail => "Failed to send notifications: welcome e-mail",
            Step::SendPaymentConfirmation => {
                "Failed to send notifications: payment confirmation e-mail"
            }
            Step::SendSmsVerification => "Failed to send notifications",
            Step::UpdateProfileStatus => "Failed to update profile status",
            Step::RecordActivity => "Failed to record activity",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a registration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FinalStatus {
    /// Every attempted step succeeded.
    Completed,
    /// The profile exists, but optional steps failed; `errors` says which.
    CompletedWithErrors,
    /// The profile could not be created; nothing else was called.
    Failed,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Completed => "Completed",
            FinalStatus::CompletedWithErrors => "CompletedWithErrors",
            FinalStatus::Failed => "Failed",
        }
    }
}

impl fmt::Display for FinalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a saga stands. Exactly one step is current until it finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// `step` runs its next attempt, not before `due` (wall clock) if set.
    Ready {
        step: Step,
        #[serde(with = "chrono::serde::ts_microseconds_option")]
        due: Option<DateTime<Utc>>,
    },
    /// An attempt of `step` was persisted and its request may have been
    /// sent. Found like this after a restart, its outcome is unknown: the
    /// attempt is in doubt and is retried with the same idempotency key.
    InFlight {
        step: Step,
        attempt: u32,
        idempotency_key: String,
    },
    /// Terminal: nothing will be called for this saga again.
    Finished(FinalStatus),
}

impl State {
    pub fn is_finished(&self) -> bool {
        matches!(self, State::Finished(_))
    }

    /// The current step, unless the saga has finished.
    pub fn step(&self) -> Option<Step> {
        match self {
            State::Ready { step, .. } | State::InFlight { step, .. } => Some(*step),
            State::Finished(_) => None,
        }
    }

    /// A short label: the final status, or `running` / `waiting`.
    pub fn label(&self) -> &'static str {
        match self {
            State::Ready { due: Some(_), .. } => "Retrying",
            State::Ready { due: None, .. } => "Running",
            State::InFlight { .. } => "InFlight",
            State::Finished(status) => status.as_str(),
        }
    }
}

/// A notification that a provider accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub step: Step,
    /// `welcome_…`, `payment_…` or `sms_…`, from the provider's own id.
    pub id: String,
    /// The provider's word for it: `ACCEPTED` (e-mail) or `QUEUED` (SMS).
    pub status: String,
}

/// What happened to the initial payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    /// The registration carries no payment.
    NotRequested,
    /// Not attempted yet.
    Pending,
    Processed {
        payment_id: String,
    },
    /// Given up on; the reason is in the report's errors.
    Failed,
}

/// An error that ended a step, once per step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    pub step: Step,
    pub message: String,
}

/// What has happened so far: the basis of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The profile's id at the profile service, once created.
    pub user_id: Option<String>,
    pub payment: PaymentState,
    pub notifications: Vec<Notification>,
    /// The status the profile was set to, once updated.
    pub profile_status: Option<String>,
    pub errors: Vec<StepError>,
}

/// One registration's durable record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub id: SagaId,
    /// Sent as `X-Correlation-ID` on every request of this saga.
    pub correlation_id: Uuid,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub updated_at: DateTime<Utc>,
    pub registration: Registration,
    pub state: State,
    pub report: Report,
    /// Attempts of every step, oldest first: each step's latest
    /// [`MAX_KEPT_ATTEMPTS`] in full.
    pub history: Vec<Attempt>,
    /// What was dropped from `history`, per step.
    pub summaries: Vec<Summary>,
}

/// Attempts of one step kept in full; older ones are summarised.
pub const MAX_KEPT_ATTEMPTS: usize = 20;

impl Saga {
    /// A new saga, ready to create the profile.
    pub fn new(registration: Registration, now: DateTime<Utc>) -> Saga {
        let payment = match registration.payment {
            Some(_) => PaymentState::Pending,
            None => PaymentState::NotRequested,
        };
        Saga {
            id: SagaId::new(),
            correlation_id: Uuid::new_v4(),
            created_at: now,
            updated_at: now,
            registration,
            state: State::Ready {
                step: Step::CreateProfile,
                due: None,
            },
            report: Report {
                user_id: None,
                payment,
                notifications: Vec::new(),
                profile_status: None,
                errors: Vec::new(),
            },
            history: Vec::new(),
            summaries: Vec::new(),
        }
    }

    /// The idempotency key of a step: derived from the saga id and the
    /// step name only, never from personal data, so it is the same for
    /// every attempt in this process or the next.
    pub fn idempotency_key(&self, step: Step) -> String {
        format!("{}:{}", self.id, step.name())
    }

    /// Attempts started for `step` so far, including interrupted ones and
    /// those summarised.
    pub fn attempts(&self, step: Step) -> u32 {
        let kept = self.history.iter().filter(|a| a.step == step).count();
        let kept = u32::try_from(kept).unwrap_or(u32::MAX);
        kept.saturating_add(self.summary(step).map_or(0, |s| s.dropped))
    }

    /// The summary of `step`'s dropped attempts, if any were dropped.
    pub fn summary(&self, step: Step) -> Option<&Summary> {
        self.summaries.iter().find(|s| s.step == step)
    }

    /// When `step`'s first attempt started, if it has started.
    pub fn first_started_at(&self, step: Step) -> Option<DateTime<Utc>> {
        match self.summary(step) {
            Some(summary) => Some(summary.first_started_at),
            None => self
                .history
                .iter()
                .find(|a| a.step == step)
                .map(|a| a.started_at),
        }
    }

    /// The final status the saga has, or would have if it ended now.
    pub fn outcome_so_far(&self) -> FinalStatus {
        if self.report.user_id.is_none() {
            FinalStatus::Failed
        } else if self.report.errors.is_empty() {
            FinalStatus::Completed
        } else {
            FinalStatus::CompletedWithErrors
        }
    }
}
