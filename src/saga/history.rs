//! The history record: one entry per attempt of a step.
//!
//! An attempt is appended, with outcome [`AttemptOutcome::Pending`], in the
//! same write that moves the saga to `InFlight`, so the record exists on
//! disk before the request leaves. The outcome is filled in by the write
//! that follows the response. An entry still pending when a process
//! restarts becomes [`AttemptOutcome::Interrupted`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Step;
use crate::services::ErrorKind;

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub step: Step,
    /// 1 for the first attempt of the step.
    pub number: u32,
    pub idempotency_key: String,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: AttemptOutcome,
    /// When the next attempt was scheduled, if this one led to a retry.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub next_due: Option<DateTime<Utc>>,
    /// Set on the attempt after which the step gave up, and why.
    pub gave_up: Option<GiveUp>,
}

/// Why a step stopped retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GiveUp {
    /// The failure would not change on a retry (a 4xx, a decline).
    NotRetryable,
    /// The policy's `max_attempts` were all made.
    AttemptsExhausted,
    /// The next attempt could not start within the step's budget.
    BudgetExhausted,
}

impl GiveUp {
    pub fn label(self) -> &'static str {
        match self {
            GiveUp::NotRetryable => "not-retryable",
            GiveUp::AttemptsExhausted => "attempts-exhausted",
            GiveUp::BudgetExhausted => "budget-exhausted",
        }
    }
}

/// Attempts of a step that were dropped from the full history to keep it
/// bounded; their number and the first one's start are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub step: Step,
    /// Attempts no longer kept in full.
    pub dropped: u32,
    /// When the step's first attempt started (its budget counts from it).
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub first_started_at: DateTime<Utc>,
    /// How many of the dropped attempts failed, by kind.
    pub failures: Vec<(ErrorKind, u32)>,
}

impl Attempt {
    /// How long the attempt took, once it ended.
    pub fn duration(&self) -> Option<Duration> {
        let ended = self.ended_at?;
        (ended - self.started_at).to_std().ok()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// Persisted before the request; no outcome yet.
    Pending,
    Succeeded,
    Failed {
        kind: ErrorKind,
        http_status: Option<u16>,
        message: String,
        /// What the server asked us to wait, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// The process stopped while the attempt was in flight; whether the
    /// request reached the service is unknown.
    Interrupted,
}

impl AttemptOutcome {
    /// A short word for tables.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Pending => "pending",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed { .. } => "failed",
            AttemptOutcome::Interrupted => "interrupted",
        }
    }
}
