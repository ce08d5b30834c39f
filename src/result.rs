//! The result of a registration, as callers and the CLI see it.
//!
//! The JSON shape (camelCase) is a public format: `userId`,
//! `profileCreated`, `paymentProcessed`, `notificationsSent` and `errors`
//! as applications already expect them, plus `sagaId`, `correlationId`
//! and `status`. See `docs/FORMATS.md`.

use serde::{Deserialize, Serialize};

use crate::saga::{PaymentState, Saga};

/// What happened to one registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResult {
    pub saga_id: String,
    pub correlation_id: String,
    /// `Completed`, `CompletedWithErrors` or `Failed` once finished; the
    /// current state's label before that.
    pub status: String,
    /// The profile's id at the profile service; `null` if none was made.
    pub user_id: Option<String>,
    pub profile_created: bool,
    pub payment_processed: bool,
    pub notifications_sent: Vec<NotificationSent>,
    /// One message per step that failed for good, in the order they failed.
    pub errors: Vec<String>,
}

/// A notification a provider accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSent {
    pub notification_id: String,
    pub status: String,
}

impl From<&Saga> for RegistrationResult {
    fn from(saga: &Saga) -> Self {
        let report = &saga.report;
        RegistrationResult {
            saga_id: saga.id.to_string(),
            correlation_id: saga.correlation_id.to_string(),
            status: saga.state.label().to_owned(),
            user_id: report.user_id.clone(),
            profile_created: report.user_id.is_some(),
            payment_processed: matches!(report.payment, PaymentState::Processed { .. }),
            notifications_sent: report
                .notifications
                .iter()
                .map(|n| NotificationSent {
                    notification_id: n.id.clone(),
                    status: n.status.clone(),
                })
                .collect(),
            errors: report.errors.iter().map(|e| e.message.clone()).collect(),
        }
    }
}
