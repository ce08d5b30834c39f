//! Fault injection: what can go wrong, how it is written on the command
//! line, and the seeded draw that decides whether it goes wrong now.
//!
//! A fault is written `service:kind[@rate]`, for example
//! `payment:http-503@0.3`. The rate defaults to 1 (always).
//!
//! The draw is deterministic. Whether a fault fires for a request depends
//! only on the seed, the service, the fault's position in the list, the
//! request's idempotency key (or, without one, how many key-less requests
//! the service has seen) and how many times that key was seen before. So
//! two runs with the same seed fail the same requests, however the
//! requests interleave, and a retry of a failed key draws anew.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use axum::http::StatusCode;

/// One of the imitated providers, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// The SCIM 2.0 user directory.
    Profile,
    /// The Stripe-style payment API.
    Payment,
    /// The SendGrid-style e-mail API.
    Email,
    /// The Twilio-style SMS API.
    Sms,
    /// The internal activity log.
    Activity,
}

impl Service {
    /// Every service, in the order the docs list them.
    pub const ALL: [Service; 5] = [
        Service::Profile,
        Service::Payment,
        Service::Email,
        Service::Sms,
        Service::Activity,
    ];

    /// The name used in fault specs, logs and the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Service::Profile => "profile",
            Service::Payment => "payment",
            Service::Email => "email",
            Service::Sms => "sms",
            Service::Activity => "activity",
        }
    }

    fn parse(name: &str) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an injected fault does to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Answer 500 with the provider's error body.
    Http500,
    /// Answer 503 with the provider's error body.
    Http503,
    /// Answer 429 with `Retry-After: 1` and the provider's error body.
    Http429,
    /// Never answer: the client's own timeout has to cut the attempt.
    Timeout,
    /// Payment only: decline the card, a business result that is stored
    /// under the idempotency key like a real decline.
    Decline,
}

impl FaultKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Http500,
        FaultKind::Http503,
        FaultKind::Http429,
        FaultKind::Timeout,
        FaultKind::Decline,
    ];

    /// The name used in fault specs, logs and the ledger.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Http500 => "http-500",
            FaultKind::Http503 => "http-503",
            FaultKind::Http429 => "http-429",
            FaultKind::Timeout => "timeout",
            FaultKind::Decline => "decline",
        }
    }

    /// The status an HTTP fault answers with; `None` for the kinds that
    /// answer otherwise (timeout never answers, decline goes through the
    /// payment handler).
    pub fn http_status(self) -> Option<StatusCode> {
        match self {
            FaultKind::Http500 => Some(StatusCode::INTERNAL_SERVER_ERROR),
            FaultKind::Http503 => Some(StatusCode::SERVICE_UNAVAILABLE),
            FaultKind::Http429 => Some(StatusCode::TOO_MANY_REQUESTS),
            FaultKind::Timeout | FaultKind::Decline => None,
        }
    }

    fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault to inject into every endpoint of one service, at a rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// The service whose endpoints fail.
    pub service: Service,
    /// How they fail.
    pub kind: FaultKind,
    /// The share of requests that fail, within `0..=1`.
    pub rate: f64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}", self.service, self.kind, self.rate)
    }
}

/// Why a fault spec could not be parsed. Every case is permanent: the
/// spec has to be corrected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is not of the form `service:kind[@rate]`.
    #[error(
        "fault `{spec}` is not of the form service:kind[@rate], \
         for example payment:http-503@0.3"
    )]
    Syntax { spec: String },

    /// The part before the colon names no service.
    #[error(
        "unknown service `{service}` in fault `{spec}`; \
         valid services: profile, payment, email, sms, activity"
    )]
    UnknownService { spec: String, service: String },

    /// The part after the colon names no fault kind.
    #[error(
        "unknown fault kind `{kind}` in fault `{spec}`; \
         valid kinds: http-500, http-503, http-429, timeout, decline"
    )]
    UnknownKind { spec: String, kind: String },

    /// `decline` was asked of a service that has no cards to decline.
    #[error(
        "fault kind `decline` in fault `{spec}` is only valid for the \
         payment service, not `{service}`"
    )]
    DeclineOutsidePayment { spec: String, service: Service },

    /// The rate is not a number within `0..=1`.
    #[error("rate `{rate}` in fault `{spec}` must be a number within 0..=1")]
    Rate { spec: String, rate: String },
}

impl FromStr for Fault {
    type Err = Error;

    fn from_str(input: &str) -> Result<Fault, Error> {
        let spec = input.trim();
        let (target, rate) = match spec.split_once('@') {
            Some((target, rate)) => (target, Some(rate)),
            None => (spec, None),
        };
        let Some((service, kind)) = target.split_once(':') else {
            return Err(Error::Syntax { spec: spec.into() });
        };

        let service = Service::parse(service).ok_or_else(|| Error::UnknownService {
            spec: spec.into(),
            service: service.into(),
        })?;
        let kind = FaultKind::parse(kind).ok_or_else(|| Error::UnknownKind {
            spec: spec.into(),
            kind: kind.into(),
        })?;
        if kind == FaultKind::Decline && service != Service::Payment {
            return Err(Error::DeclineOutsidePayment {
                spec: spec.into(),
                service,
            });
        }

        let rate = match rate {
            None => 1.0,
            Some(rate) => parse_rate(rate).ok_or_else(|| Error::Rate {
                spec: spec.into(),
                rate: rate.into(),
            })?,
        };
        Ok(Fault {
            service,
            kind,
            rate,
        })
    }
}

fn parse_rate(text: &str) -> Option<f64> {
    let rate: f64 = text.parse().ok()?;
    // The range check also turns away NaN, which compares false.
    (0.0..=1.0).contains(&rate).then_some(rate)
}

/// What a request is known by for the draw: its idempotency key, or its
/// position among the service's key-less requests.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Subject<'a> {
    Key(&'a str),
    Counter(u64),
}

/// The counters that make draws independent of interleaving: how often
/// each key was seen, and how many key-less requests each service had.
#[derive(Debug, Default)]
pub(crate) struct Draws {
    seen_keys: HashMap<(Service, String), u64>,
    keyless: HashMap<Service, u64>,
}

impl Draws {
    /// Counts one request to `service` and returns the first fault of the
    /// list that fires for it, if any.
    pub(crate) fn draw(
        &mut self,
        faults: &[Fault],
        seed: u64,
        service: Service,
        key: Option<&str>,
    ) -> Option<FaultKind> {
        let (subject, n) = self.count(service, key);
        faults.iter().enumerate().find_map(|(index, fault)| {
            let applies = fault.service == service;
            let fires = applies && fires(seed, service, index, subject, n, fault.rate);
            fires.then_some(fault.kind)
        })
    }

    fn count<'a>(&mut self, service: Service, key: Option<&'a str>) -> (Subject<'a>, u64) {
        let counter = match key {
            Some(key) => self.seen_keys.entry((service, key.to_owned())).or_default(),
            None => self.keyless.entry(service).or_default(),
        };
        let seen = *counter;
        *counter += 1;

        match key {
            Some(key) => (Subject::Key(key), seen),
            // Each key-less request is its own subject, seen once.
            None => (Subject::Counter(seen), 0),
        }
    }
}

/// Whether fault number `index` fires for the `n`th sighting of
/// `subject` at `service`.
pub(crate) fn fires(
    seed: u64,
    service: Service,
    index: usize,
    subject: Subject<'_>,
    n: u64,
    rate: f64,
) -> bool {
    let mut mixer = Mixer::new(seed);
    mixer.bytes(service.name().as_bytes());
    mixer.word(index as u64);
    match subject {
        Subject::Key(key) => {
            mixer.word(0);
            mixer.bytes(key.as_bytes());
        }
        Subject::Counter(count) => {
            // A different tag keeps counter 7 apart from the key "7".
            mixer.word(1);
            mixer.word(count);
        }
    }
    mixer.word(n);
    mixer.unit() < rate
}

/// A stable hash built from splitmix64, so draws stay the same across
/// Rust releases and platforms (std's hasher promises neither).
struct Mixer(u64);

impl Mixer {
    fn new(seed: u64) -> Mixer {
        Mixer(splitmix64(seed))
    }

    fn word(&mut self, word: u64) {
        self.0 = splitmix64(self.0 ^ word);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word));
        }
        // The length tells "ab" from "ab\0".
        self.word(bytes.len() as u64);
    }

    /// A number in `0..1` from the top 53 bits, which an f64 holds exactly.
    fn unit(&self) -> f64 {
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        for spec in [
            "payment:http-503@0.3",
            "sms:timeout@0.1",
            "payment:decline@1",
        ] {
            let fault: Fault = spec.parse().unwrap();
            assert_eq!(fault.to_string(), spec);
        }
        let fault: Fault = "profile:http-500".parse().unwrap();
        assert_eq!(fault.rate, 1.0);
    }

    #[test]
    fn rejects_bad_parts_with_the_valid_names() {
        let error = "mail:http-500".parse::<Fault>().unwrap_err().to_string();
        assert!(error.contains("`mail`") && error.contains("profile, payment"));

        let error = "sms:http-404".parse::<Fault>().unwrap_err().to_string();
        assert!(error.contains("`http-404`") && error.contains("timeout"));

        for spec in ["sms:decline", "email:http-500@1.5", "x", "sms:timeout@NaN"] {
            assert!(spec.parse::<Fault>().is_err(), "{spec}");
        }
    }

    #[test]
    fn draws_are_repeatable_and_follow_the_rate() {
        let fired = |seed| {
            (0..1000)
                .filter(|n| fires(seed, Service::Sms, 0, Subject::Key("k"), *n, 0.3))
                .count()
        };
        assert_eq!(fired(1), fired(1));
        assert!((250..350).contains(&fired(1)), "{}", fired(1));
    }

    #[test]
    fn retries_of_one_key_draw_anew() {
        let faults = vec!["email:http-500@0.5".parse::<Fault>().unwrap()];
        let mut draws = Draws::default();
        let outcomes: Vec<_> = (0..64)
            .map(|_| draws.draw(&faults, 3, Service::Email, Some("key")))
            .collect();
        assert!(outcomes.iter().any(Option::is_some));
        assert!(outcomes.iter().any(Option::is_none));
    }

    #[test]
    fn first_firing_fault_of_the_service_wins() {
        let faults: Vec<Fault> = ["sms:http-500@1", "payment:http-429@1", "payment:http-503@1"]
            .iter()
            .map(|spec| spec.parse().unwrap())
            .collect();
        let mut draws = Draws::default();
        let drawn = draws.draw(&faults, 0, Service::Payment, None);
        assert_eq!(drawn, Some(FaultKind::Http429));
        assert_eq!(draws.draw(&faults, 0, Service::Profile, None), None);
    }
}
