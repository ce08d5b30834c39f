//! Named crash points, for tests that kill the process on purpose.
//!
//! The engine passes through these points on every attempt. When
//! [`crate::Options::crash`] names one, the engine aborts the process there
//! (`std::process::abort`: no destructors, no flush, like `kill -9`), so a
//! test can prove that every point is recoverable. The binary sets it from
//! the `REGSAGA_CRASH_AT` environment variable, e.g.
//! `REGSAGA_CRASH_AT=after-response:charge-payment`.

use std::fmt;
use std::str::FromStr;

use crate::saga::Step;

/// A moment in the life of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// A step is ready and nothing of it has been attempted yet.
    BetweenSteps,
    /// The attempt exists in memory but is not on disk.
    BeforeAttemptPersisted,
    /// The attempt is durable; its request has not been sent.
    AfterAttemptPersisted,
    /// The response arrived; its outcome is not on disk.
    AfterResponse,
    /// The outcome is durable.
    AfterOutcomePersisted,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 5] = [
        CrashPoint::BetweenSteps,
        CrashPoint::BeforeAttemptPersisted,
        CrashPoint::AfterAttemptPersisted,
        CrashPoint::AfterResponse,
        CrashPoint::AfterOutcomePersisted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::BetweenSteps => "between-steps",
            CrashPoint::BeforeAttemptPersisted => "before-attempt-persisted",
            CrashPoint::AfterAttemptPersisted => "after-attempt-persisted",
            CrashPoint::AfterResponse => "after-response",
            CrashPoint::AfterOutcomePersisted => "after-outcome-persisted",
        }
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where to crash: a point, for one step or for any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashAt {
    pub point: CrashPoint,
    /// `None` crashes at the point of whichever step gets there first.
    pub step: Option<Step>,
}

impl CrashAt {
    /// Whether the engine, at `point` of `step`, must abort.
    pub fn matches(&self, point: CrashPoint, step: Step) -> bool {
        self.point == point && self.step.is_none_or(|s| s == step)
    }
}

/// A crash specification that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "crash point {spec:?} is not POINT or POINT:STEP; points: between-steps, \
     before-attempt-persisted, after-attempt-persisted, after-response, \
     after-outcome-persisted; steps: create-profile, charge-payment, send-welcome-email, \
     send-payment-confirmation, send-sms-verification, update-profile-status, record-activity"
)]
pub struct Error {
    pub spec: String,
}

impl FromStr for CrashAt {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let error = || Error {
            spec: spec.to_owned(),
        };
        let (point, step) = match spec.split_once(':') {
            Some((point, step)) => (point, Some(step)),
            None => (spec, None),
        };
        let point = CrashPoint::ALL
            .into_iter()
            .find(|p| p.name() == point)
            .ok_or_else(error)?;
        let step = match step {
            Some(name) => Some(
                Step::ALL
                    .into_iter()
                    .find(|s| s.name() == name)
                    .ok_or_else(error)?,
            ),
            None => None,
        };
        Ok(CrashAt { point, step })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_and_step_parses_back() {
        for point in CrashPoint::ALL {
            let any: CrashAt = point.name().parse().unwrap();
            assert_eq!(any, CrashAt { point, step: None });
            for step in Step::ALL {
                let at: CrashAt = format!("{point}:{step}").parse().unwrap();
                assert!(at.matches(point, step));
            }
        }
        assert!("after-response:nowhere".parse::<CrashAt>().is_err());
        assert!("sometime".parse::<CrashAt>().is_err());
    }
}
