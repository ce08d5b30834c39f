//! The ledger: what the sandbox's services did, for tests and operators
//! to check after a run. `GET /__sandbox/state` returns it as JSON.
//!
//! The lists only grow, except `profiles`, which shows the directory as
//! it is now (a deleted user leaves it). Entries keep identifiers and
//! the `X-Correlation-ID` and `Idempotency-Key` headers of the request
//! that made them; they never keep credentials, message bodies or card
//! data. Addresses and numbers are kept because checking who was
//! contacted is the point of the ledger.

use serde::{Deserialize, Serialize};

use super::faults::Service;

/// Everything the sandbox has recorded, in the order it happened.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerSnapshot {
    /// The users in the directory now, oldest first.
    pub profiles: Vec<ProfileEntry>,
    /// Succeeded payment intents.
    pub charges: Vec<ChargeEntry>,
    /// Declined payment intents.
    pub declines: Vec<DeclineEntry>,
    /// Accepted e-mails.
    pub emails: Vec<EmailEntry>,
    /// Accepted text messages.
    pub sms: Vec<SmsEntry>,
    /// Recorded activity logs.
    pub activities: Vec<ActivityEntry>,
    /// Every request to a service endpoint, faulted or not.
    pub requests: Vec<RequestEntry>,
}

/// A user in the SCIM directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileEntry {
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub active: bool,
    pub registration_status: Option<String>,
    pub correlation_id: Option<String>,
    /// RFC 3339 time of creation.
    pub created: String,
}

/// A payment intent that succeeded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeEntry {
    pub id: String,
    /// In minor units of the currency.
    pub amount: u64,
    /// Lowercase ISO 4217 code.
    pub currency: String,
    pub payment_method: String,
    pub idempotency_key: Option<String>,
    /// `metadata[saga_id]` of the request.
    pub saga_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Unix seconds, as in the response.
    pub created: i64,
}

/// A payment intent whose card was declined.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeclineEntry {
    pub amount: u64,
    pub currency: String,
    pub payment_method: String,
    pub idempotency_key: Option<String>,
    pub saga_id: Option<String>,
    pub correlation_id: Option<String>,
    /// `card` for the decline test method, `fault` for the decline fault.
    pub cause: String,
}

/// An e-mail accepted for delivery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailEntry {
    pub message_id: String,
    /// Every recipient address, joined with ", ".
    pub to: String,
    pub subject: String,
    /// `custom_args.kind` of the request.
    pub kind: Option<String>,
    /// `custom_args.saga_id` of the request.
    pub saga_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
}

/// A text message accepted for delivery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmsEntry {
    pub sid: String,
    pub to: String,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
}

/// An activity log accepted by the internal service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEntry {
    pub id: String,
    pub saga_id: String,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub final_status: String,
    pub activity_count: usize,
    pub idempotency_key: Option<String>,
}

/// One request to a service endpoint and how it was answered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestEntry {
    /// The service's name, as in fault specs.
    pub service: String,
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    /// The HTTP status sent; `None` when the timeout fault kept the
    /// request from being answered.
    pub status: Option<u16>,
    /// The name of the injected fault, if one fired.
    pub fault: Option<String>,
}

impl RequestEntry {
    /// Whether this request went to `service`.
    pub fn is_for(&self, service: Service) -> bool {
        self.service == service.name()
    }
}

/// The append-only part of the ledger. Profiles are not here: the
/// directory itself is their record, and [`Ledger::snapshot`] adds them.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) charges: Vec<ChargeEntry>,
    pub(crate) declines: Vec<DeclineEntry>,
    pub(crate) emails: Vec<EmailEntry>,
    pub(crate) sms: Vec<SmsEntry>,
    pub(crate) activities: Vec<ActivityEntry>,
    pub(crate) requests: Vec<RequestEntry>,
}

impl Ledger {
    /// A copy of the ledger with the directory's current `profiles`.
    pub(crate) fn snapshot(&self, profiles: Vec<ProfileEntry>) -> LedgerSnapshot {
        LedgerSnapshot {
            profiles,
            charges: self.charges.clone(),
            declines: self.declines.clone(),
            emails: self.emails.clone(),
            sms: self.sms.clone(),
            activities: self.activities.clone(),
            requests: self.requests.clone(),
        }
    }
}
