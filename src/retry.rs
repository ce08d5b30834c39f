//! Retry policies and the decision whether a failed call is retried.
//!
//! A [`RetryPolicy`] is pure arithmetic: given an attempt number and a
//! jitter sample it returns a delay, saturating instead of overflowing at
//! any attempt number. [`decide`] is the one table that says which
//! failures are worth another attempt.
//!
//! # Defaults
//!
//! | setting              | external | internal |
//! |----------------------|----------|----------|
//! | `attempt_timeout`    | 5 min    | 2 min    |
//! | `connect_timeout`    | 10 s     | 5 s      |
//! | `step_budget`        | 1 h      | 10 min   |
//! | `max_attempts`       | 5        | 3        |
//! | `initial_interval`   | 1 s      | 200 ms   |
//! | `backoff_coefficient`| 2.0      | 2.0      |
//! | `max_interval`       | 60 s     | 5 s      |
//! | `jitter`             | full     | full     |
//!
//! Each service (`profile`, `payment`, `email`, `sms`, `activity`) takes
//! its class's policy, changed by whatever `[retry.services.NAME]` sets.
//!
//! With full jitter the wait before attempt `n + 1` is drawn uniformly from
//! `[0, min(max_interval, initial_interval * coefficient^(n-1))]`, so many
//! sagas failing together spread their retries.

use std::time::Duration;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::saga::{ServiceClass, Step};
use crate::services::{CallError, ErrorKind};

/// The most attempts a policy may allow.
pub const MAX_ATTEMPTS: u32 = 100_000;

/// How one class of service is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// One attempt, from sending the request to reading the response.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// Establishing a connection, within an attempt.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The whole step, from its first attempt to its last, waits included.
    /// A retry that could not start within it is not made.
    #[serde(with = "humantime_serde")]
    pub step_budget: Duration,
    /// Attempts in all, the first included. At least 1.
    pub max_attempts: u32,
    /// The wait bound after the first failed attempt.
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    /// Growth of the wait bound per attempt. At least 1.0.
    pub backoff_coefficient: f64,
    /// The wait bound never grows past this.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    pub jitter: Jitter,
}

/// How a delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Uniform in `[0, bound]`.
    Full,
    /// Exactly the bound; only for tests and demonstrations.
    None,
}

/// A policy that cannot work, named with its values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("retry policy for {service}: {problem}")]
pub struct Error {
    pub service: String,
    pub problem: String,
}

/// Whether a failed attempt should be followed by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Retry,
    Stop,
}

impl RetryPolicy {
    pub fn external() -> Self {
        RetryPolicy {
            attempt_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            step_budget: Duration::from_secs(3600),
            max_attempts: 5,
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(60),
            jitter: Jitter::Full,
        }
    }

    pub fn internal() -> Self {
        RetryPolicy {
            attempt_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            step_budget: Duration::from_secs(600),
            max_attempts: 3,
            initial_interval: Duration::from_millis(200),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(5),
            jitter: Jitter::Full,
        }
    }

    /// Refuses settings that cannot work.
    ///
    /// # Errors
    ///
    /// Names `service` and the offending values.
    pub fn validate(&self, service: &str) -> Result<(), Error> {
        let fail = |problem: String| {
            Err(Error {
                service: service.to_owned(),
                problem,
            })
        };
        if self.max_attempts == 0 {
            return fail("max_attempts is 0; it must be at least 1".into());
        }
        if self.attempt_timeout.is_zero() {
            return fail("attempt_timeout is 0; it must be positive".into());
        }
        if !(self.backoff_coefficient >= 1.0 && self.backoff_coefficient.is_finite()) {
            return fail(format!(
                "backoff_coefficient is {}; it must be a finite number of at least 1.0",
                self.backoff_coefficient
            ));
        }
        let limits = [
            (
                "attempt_timeout",
                self.attempt_timeout,
                Duration::from_secs(86_400),
            ),
            (
                "connect_timeout",
                self.connect_timeout,
                Duration::from_secs(3_600),
            ),
            (
                "step_budget",
                self.step_budget,
                Duration::from_secs(30 * 86_400),
            ),
            (
                "initial_interval",
                self.initial_interval,
                Duration::from_secs(86_400),
            ),
            (
                "max_interval",
                self.max_interval,
                Duration::from_secs(86_400),
            ),
        ];
        for (name, value, limit) in limits {
            if value > limit {
                return fail(format!(
                    "{name} is {}; it may be at most {}",
                    humantime::format_duration(value),
                    humantime::format_duration(limit)
                ));
            }
        }
        if self.max_attempts > MAX_ATTEMPTS {
            return fail(format!(
                "max_attempts is {}; it may be at most {MAX_ATTEMPTS}",
                self.max_attempts
            ));
        }
        if self.connect_timeout.is_zero() {
            return fail("connect_timeout is 0; it must be positive".into());
        }
        if self.attempt_timeout > self.step_budget {
            return fail(format!(
                "attempt_timeout ({}) is longer than step_budget ({}); one attempt must fit \
                 in the step's budget",
                humantime::format_duration(self.attempt_timeout),
                humantime::format_duration(self.step_budget)
            ));
        }
        if self.max_interval < self.initial_interval {
            return fail(format!(
                "max_interval ({:?}) is shorter than initial_interval ({:?})",
                self.max_interval, self.initial_interval
            ));
        }
        Ok(())
    }

    /// The wait after failed attempt number `attempt` (1-based), given a
    /// uniform `sample` in `[0, 1)`. Never overflows.
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let bound = self.bound(attempt);
        match self.jitter {
            Jitter::None => bound,
            Jitter::Full => bound.mul_f64(sample.clamp(0.0, 1.0)),
        }
    }

    /// The un-jittered wait bound after attempt `attempt`.
    pub fn bound(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let factor = self.backoff_coefficient.powi(exponent);
        let secs = self.initial_interval.as_secs_f64() * factor;
        let max = self.max_interval.as_secs_f64();
        if secs.is_finite() && secs < max {
            Duration::from_secs_f64(secs)
        } else {
            self.max_interval
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::external()
    }
}

/// The policies of both service classes, and per-service changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    #[serde(default = "RetryPolicy::external")]
    pub external: RetryPolicy,
    #[serde(default = "RetryPolicy::internal")]
    pub internal: RetryPolicy,
    /// `[retry.services.NAME]`: settings that differ for one service.
    #[serde(default)]
    pub services: BTreeMap<String, Override>,
}

/// Settings of one service that differ from its class's policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Override {
    #[serde(with = "humantime_serde::option")]
    pub attempt_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
    #[serde(with = "humantime_serde::option")]
    pub step_budget: Option<Duration>,
    pub max_attempts: Option<u32>,
    #[serde(with = "humantime_serde::option")]
    pub initial_interval: Option<Duration>,
    pub backoff_coefficient: Option<f64>,
    #[serde(with = "humantime_serde::option")]
    pub max_interval: Option<Duration>,
    pub jitter: Option<Jitter>,
}

impl Override {
    fn apply(&self, base: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            attempt_timeout: self.attempt_timeout.unwrap_or(base.attempt_timeout),
            connect_timeout: self.connect_timeout.unwrap_or(base.connect_timeout),
            step_budget: self.step_budget.unwrap_or(base.step_budget),
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            initial_interval: self.initial_interval.unwrap_or(base.initial_interval),
            backoff_coefficient: self.backoff_coefficient.unwrap_or(base.backoff_coefficient),
            max_interval: self.max_interval.unwrap_or(base.max_interval),
            jitter: self.jitter.unwrap_or(base.jitter),
        }
    }
}

/// The services a policy can be set for, with their class.
pub const SERVICES: [(&str, ServiceClass); 5] = [
    ("profile", ServiceClass::External),
    ("payment", ServiceClass::External),
    ("email", ServiceClass::External),
    ("sms", ServiceClass::External),
    ("activity", ServiceClass::Internal),
];

impl Default for Policies {
    fn default() -> Self {
        Policies {
            external: RetryPolicy::external(),
            internal: RetryPolicy::internal(),
            services: BTreeMap::new(),
        }
    }
}

impl Policies {
    pub fn for_class(&self, class: ServiceClass) -> &RetryPolicy {
        match class {
            ServiceClass::External => &self.external,
            ServiceClass::Internal => &self.internal,
        }
    }

    /// The policy of one service: its class's, with its own changes.
    pub fn for_service(&self, service: &str) -> RetryPolicy {
        let class = SERVICES
            .iter()
            .find(|(name, _)| *name == service)
            .map_or(ServiceClass::External, |(_, class)| *class);
        let base = self.for_class(class);
        match self.services.get(service) {
            Some(changes) => changes.apply(base),
            None => base.clone(),
        }
    }

    /// The policy of the service a step calls.
    pub fn for_step(&self, step: Step) -> RetryPolicy {
        self.for_service(step.service())
    }

    /// Validates both class policies and every service's own policy.
    ///
    /// # Errors
    ///
    /// The first policy that cannot work, or a service name that does
    /// not exist.
    pub fn validate(&self) -> Result<(), Error> {
        self.external.validate("external services")?;
        self.internal.validate("internal services")?;
        for name in self.services.keys() {
            if !SERVICES.iter().any(|(known, _)| known == name) {
                return Err(Error {
                    service: name.clone(),
                    problem: "there is no such service; use profile, payment, email, sms \
                              or activity"
                        .into(),
                });
            }
        }
        for (name, _) in SERVICES {
            self.for_service(name).validate(name)?;
        }
        Ok(())
    }
}

/// The retry table: which failures are worth another attempt.
///
/// Transport failures and timeouts may be passing, and an in-doubt attempt
/// is safe to repeat because every request carries its idempotency key.
/// Among HTTP statuses only those that promise a different answer later
/// are retried; any other 4xx would fail the same way again.
pub fn decide(error: &CallError) -> Decision {
    match error.kind {
        ErrorKind::Connect
        | ErrorKind::Timeout
        | ErrorKind::Transport
        | ErrorKind::Interrupted
        | ErrorKind::KeyInUse => Decision::Retry,
        ErrorKind::Http(408 | 425 | 429 | 500 | 502 | 503 | 504) => Decision::Retry,
        ErrorKind::Http(_)
        | ErrorKind::Declined
        | ErrorKind::Conflict
        | ErrorKind::InvalidResponse => Decision::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: Jitter::None,
            ..RetryPolicy::external()
        }
    }

    #[test]
    fn bound_grows_then_caps() {
        let p = no_jitter();
        let secs: Vec<u64> = (1..=8).map(|n| p.delay(n, 0.5).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy {
            backoff_coefficient: 10.0,
            ..no_jitter()
        };
        assert_eq!(p.delay(u32::MAX, 0.9), p.max_interval);
        assert_eq!(p.delay(0, 0.9), p.initial_interval);
    }

    #[test]
    fn full_jitter_stays_within_bound() {
        let p = RetryPolicy::external();
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(2));
        assert!(p.delay(3, 0.999) < Duration::from_secs(4));
        assert!(
            p.delay(3, 7.0) <= Duration::from_secs(4),
            "sample is clamped"
        );
    }

    #[test]
    fn impossible_policies_are_refused() {
        let cases = [
            RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::external()
            },
            RetryPolicy {
                backoff_coefficient: 0.5,
                ..RetryPolicy::external()
            },
            RetryPolicy {
                backoff_coefficient: f64::NAN,
                ..RetryPolicy::external()
            },
            RetryPolicy {
                attempt_timeout: Duration::ZERO,
                ..RetryPolicy::external()
            },
            RetryPolicy {
                max_interval: Duration::from_millis(1),
                ..RetryPolicy::external()
            },
            RetryPolicy {
                initial_interval: Duration::from_secs(100 * 365 * 86_400),
                max_interval: Duration::from_secs(100 * 365 * 86_400),
                ..RetryPolicy::external()
            },
            RetryPolicy {
                max_attempts: u32::MAX,
                ..RetryPolicy::external()
            },
        ];
        for policy in cases {
            let err = policy.validate("payment").expect_err("must be refused");
            assert!(err.to_string().starts_with("retry policy for payment"));
        }
        assert!(Policies::default().validate().is_ok());

        let too_long = RetryPolicy {
            attempt_timeout: Duration::from_secs(600),
            step_budget: Duration::from_secs(300),
            ..RetryPolicy::external()
        };
        let err = too_long.validate("payment").unwrap_err().to_string();
        assert!(err.contains("10m") && err.contains("5m"), "{err}");
    }

    #[test]
    fn a_service_override_changes_only_what_it_sets() {
        let mut policies = Policies::default();
        policies.services.insert(
            "payment".into(),
            Override {
                max_attempts: Some(9),
                ..Override::default()
            },
        );
        let payment = policies.for_service("payment");
        assert_eq!(payment.max_attempts, 9);
        assert_eq!(
            payment.initial_interval,
            RetryPolicy::external().initial_interval
        );
        assert_eq!(policies.for_service("sms"), RetryPolicy::external());
        assert_eq!(
            policies.for_step(Step::RecordActivity),
            RetryPolicy::internal()
        );

        policies.services.insert(
            "activity".into(),
            Override {
                max_attempts: Some(0),
                ..Override::default()
            },
        );
        let err = policies.validate().unwrap_err();
        assert_eq!(err.service, "activity");

        let mut unknown = Policies::default();
        unknown.services.insert("fax".into(), Override::default());
        assert!(unknown
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no such service"));
    }

    #[test]
    fn decision_table() {
        use Decision::{Retry, Stop};
        let rows = [
            (ErrorKind::Connect, Retry),
            (ErrorKind::Timeout, Retry),
            (ErrorKind::Transport, Retry),
            (ErrorKind::Interrupted, Retry),
            (ErrorKind::KeyInUse, Retry),
            (ErrorKind::Http(408), Retry),
            (ErrorKind::Http(425), Retry),
            (ErrorKind::Http(429), Retry),
            (ErrorKind::Http(500), Retry),
            (ErrorKind::Http(502), Retry),
            (ErrorKind::Http(503), Retry),
            (ErrorKind::Http(504), Retry),
            (ErrorKind::Http(400), Stop),
            (ErrorKind::Http(401), Stop),
            (ErrorKind::Http(403), Stop),
            (ErrorKind::Http(404), Stop),
            (ErrorKind::Http(409), Stop),
            (ErrorKind::Http(422), Stop),
            (ErrorKind::Http(501), Stop),
            (ErrorKind::Declined, Stop),
            (ErrorKind::Conflict, Stop),
            (ErrorKind::InvalidResponse, Stop),
        ];
        for (kind, want) in rows {
            assert_eq!(decide(&CallError::new(kind, "x")), want, "{kind}");
        }
    }
}
