//! Services answered in this process: every call succeeds at once, with
//! no I/O. `regsaga bench --services in-process` uses them to measure the
//! engine and the store alone; nothing else in regsaga does.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Call, CallError, Request, Services, StepOutput};

/// Instant, always successful services.
#[derive(Debug, Default)]
pub struct InProcessServices {
    next_id: AtomicU64,
}

impl InProcessServices {
    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{n:016x}")
    }
}

impl Services for InProcessServices {
    async fn perform(&self, call: &Call) -> Result<StepOutput, CallError> {
        Ok(match &call.request {
            Request::CreateProfile { .. } => StepOutput::ProfileCreated {
                user_id: self.id("user"),
            },
            Request::Charge { .. } => StepOutput::PaymentCharged {
                payment_id: self.id("pi"),
            },
            Request::SendEmail { .. } => StepOutput::NotificationSent {
                id: self.id("msg"),
                status: "ACCEPTED".to_owned(),
            },
            Request::SendSms { .. } => StepOutput::NotificationSent {
                id: self.id("SM"),
                status: "QUEUED".to_owned(),
            },
            Request::UpdateProfileStatus { .. } => StepOutput::ProfileStatusUpdated,
            Request::RecordActivity(_) => StepOutput::ActivityRecorded { id: self.id("act") },
        })
    }
}
