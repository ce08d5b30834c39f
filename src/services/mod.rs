//! The external and internal services a registration calls.
//!
//! The engine sees one trait, [`Services`]: it hands over a [`Call`] (what
//! to do, with the saga's correlation id and the step's idempotency key)
//! and gets back a [`StepOutput`] or a [`CallError`]. The error says what
//! kind of failure it was; whether to retry is decided by
//! [`crate::retry::decide`], not here.
//!
//! [`HttpServices`] is the implementation that speaks to real providers
//! (and to the bundled sandbox, which speaks their shapes). Service
//! clients know nothing of the store or of sagas.

mod activity;
mod email;
mod http;
mod in_process;
mod payment;
mod profile;
mod sms;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::registration::Payment;
use crate::saga::{SagaId, Step};

pub use http::{Endpoint, Endpoints, HttpServices};
pub use in_process::InProcessServices;

/// One request to a service, with everything needed to send it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub saga_id: SagaId,
    pub correlation_id: Uuid,
    pub step: Step,
    pub attempt: u32,
    pub idempotency_key: String,
    pub request: Request,
}

/// What a step asks of its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    CreateProfile {
        email: String,
        full_name: String,
        phone: Option<String>,
    },
    Charge {
        user_id: String,
        payment: Payment,
    },
    SendEmail {
        kind: EmailKind,
        to: String,
        name: String,
        subject: String,
        body: String,
    },
    SendSms {
        to: String,
        body: String,
    },
    UpdateProfileStatus {
        user_id: String,
        status: String,
        active: bool,
    },
    RecordActivity(ActivityRecord),
}

/// Which e-mail a notification step sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    Welcome,
    PaymentConfirmation,
}

impl EmailKind {
    pub fn name(self) -> &'static str {
        match self {
            EmailKind::Welcome => "welcome",
            EmailKind::PaymentConfirmation => "payment",
        }
    }
}

/// The activity log entry of a finished registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityRecord {
    pub user_id: Option<String>,
    pub final_status: String,
    pub activities: Vec<Activity>,
}

/// One step's outcome, as the activity log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub step: String,
    pub outcome: String,
    pub attempts: u32,
    pub detail: Option<String>,
    pub at: String,
}

/// What a successful call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutput {
    ProfileCreated {
        user_id: String,
    },
    PaymentCharged {
        payment_id: String,
    },
    /// `id` is the provider's message id; `status` its word for it.
    NotificationSent {
        id: String,
        status: String,
    },
    ProfileStatusUpdated,
    ActivityRecorded {
        id: String,
    },
}

/// Why a call failed, as far as retrying is concerned.
///
/// Stored in history; never reorder or rename variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The connection could not be made.
    Connect,
    /// The attempt timed out; the request may have been processed.
    Timeout,
    /// The connection broke or the response could not be read.
    Transport,
    /// The service answered with this HTTP status.
    Http(u16),
    /// The idempotency key is still in use by an earlier request.
    KeyInUse,
    /// The payment was declined: a business answer, not a fault.
    Declined,
    /// The resource exists and belongs to someone else.
    Conflict,
    /// A success status with a body we could not understand.
    InvalidResponse,
    /// The process stopped during the attempt.
    Interrupted,
}

/// A failed call: its kind, the server's requested wait, and a short
/// human reason (no URLs, no personal data, no secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CallError {
    pub kind: ErrorKind,
    pub retry_after: Option<Duration>,
    pub reason: String,
}

impl CallError {
    pub fn new(kind: ErrorKind, reason: impl Into<String>) -> Self {
        CallError {
            kind,
            retry_after: None,
            reason: reason.into(),
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self.kind {
            ErrorKind::Http(status) => Some(status),
            _ => None,
        }
    }
}

impl ErrorKind {
    /// Whether the request may have taken effect although no answer
    /// says so: it timed out, the connection broke after sending, or the
    /// process died during it.
    pub fn is_in_doubt(self) -> bool {
        match self {
            ErrorKind::Timeout | ErrorKind::Transport | ErrorKind::Interrupted => true,
            ErrorKind::Connect
            | ErrorKind::Http(_)
            | ErrorKind::KeyInUse
            | ErrorKind::Declined
            | ErrorKind::Conflict
            | ErrorKind::InvalidResponse => false,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Transport => f.write_str("transport"),
            ErrorKind::Http(status) => write!(f, "http-{status}"),
            ErrorKind::KeyInUse => f.write_str("key-in-use"),
            ErrorKind::Declined => f.write_str("declined"),
            ErrorKind::Conflict => f.write_str("conflict"),
            ErrorKind::InvalidResponse => f.write_str("invalid-response"),
            ErrorKind::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// The name of a service as messages show it.
pub fn title(service: &str) -> &'static str {
    match service {
        "profile" => "Profile service",
        "payment" => "Payment gateway",
        "email" => "E-mail service",
        "sms" => "SMS service",
        "activity" => "Activity log",
        _ => "Service",
    }
}

/// Performs calls. Implementations must be safe to call again with the
/// same idempotency key: the engine retries after timeouts and restarts.
pub trait Services: Send + Sync + 'static {
    /// Sends one request and classifies its outcome.
    ///
    /// # Cancel safety
    ///
    /// The engine drops this future when the attempt timeout expires. The
    /// request may or may not have reached the service; the retry that
    /// follows carries the same idempotency key.
    fn perform(&self, call: &Call) -> impl Future<Output = Result<StepOutput, CallError>> + Send;
}
