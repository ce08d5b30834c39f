//! The HTTP implementation of [`Services`], shared by every client.
//!
//! One pooled `reqwest::Client` serves all services. Every request
//! carries `X-Correlation-ID` (one per saga) and `Idempotency-Key` (one
//! per step, the same on every retry). Responses are classified here into
//! [`CallError`] kinds; messages never contain URLs, bodies or personal
//! data, because they end up in the result and in the store.

use std::fmt;
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};

use super::{activity, email, payment, profile, sms};
use super::{Call, CallError, ErrorKind, Request, Services, StepOutput};

/// Where one service lives and how to authenticate to it.
#[derive(Clone, Default)]
pub struct Endpoint {
    /// Base URL without a trailing slash, e.g. `https://api.stripe.com`.
    pub base_url: String,
    /// Bearer token, API key or auth token, depending on the service.
    pub secret: Option<String>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .field("secret", &secret)
            .finish()
    }
}

impl Endpoint {
    pub fn new(base_url: &str) -> Self {
        Endpoint {
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret: None,
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

/// Every service's endpoint, plus the sender identities.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub profile: Endpoint,
    pub payment: Endpoint,
    pub email: Endpoint,
    pub sms: Endpoint,
    pub activity: Endpoint,
    /// The `from` address of e-mails.
    pub email_from: String,
    /// The Twilio account SID, part of the SMS path.
    pub sms_account_sid: String,
    /// The sending phone number of SMS.
    pub sms_from: String,
}

impl Endpoints {
    /// All services at one base URL, as the sandbox serves them.
    pub fn all_at(base_url: &str) -> Self {
        Endpoints {
            profile: Endpoint::new(base_url),
            payment: Endpoint::new(base_url),
            email: Endpoint::new(base_url),
            sms: Endpoint::new(base_url),
            activity: Endpoint::new(base_url),
            email_from: "welcome@regsaga.example".to_owned(),
            sms_account_sid: "AC00000000000000000000000000000000".to_owned(),
            sms_from: "+15005550006".to_owned(),
        }
    }
}

/// Talks to the services over HTTP.
///
/// Services that share a connect timeout share one pooled client; the
/// usual configuration has two (external and internal).
pub struct HttpServices {
    clients: Vec<(&'static str, reqwest::Client)>,
    pub(super) endpoints: Endpoints,
}

impl HttpServices {
    /// Client pools for `endpoints`, each service connecting within
    /// `connect_timeout(service)`.
    ///
    /// # Errors
    ///
    /// The TLS backend could not be initialised.
    pub fn new(
        endpoints: Endpoints,
        connect_timeout: impl Fn(&str) -> Duration,
    ) -> Result<Self, reqwest::Error> {
        let mut pools: Vec<(Duration, reqwest::Client)> = Vec::new();
        let mut clients = Vec::new();
        for (service, _) in crate::retry::SERVICES {
            let timeout = connect_timeout(service);
            let client = match pools.iter().find(|(t, _)| *t == timeout) {
                Some((_, client)) => client.clone(),
                None => {
                    let client = reqwest::Client::builder()
                        .connect_timeout(timeout)
                        .pool_idle_timeout(Duration::from_secs(30))
                        .user_agent(concat!("regsaga/", env!("CARGO_PKG_VERSION")))
                        .build()?;
                    pools.push((timeout, client.clone()));
                    client
                }
            };
            clients.push((service, client));
        }
        Ok(HttpServices { clients, endpoints })
    }

    /// The pooled client of one service.
    pub(super) fn client(&self, service: &str) -> &reqwest::Client {
        self.clients
            .iter()
            .find(|(name, _)| *name == service)
            .map_or(&self.clients[0].1, |(_, client)| client)
    }
}

impl Services for HttpServices {
    async fn perform(&self, call: &Call) -> Result<StepOutput, CallError> {
        match &call.request {
            Request::CreateProfile {
                email,
                full_name,
                phone,
            } => profile::create(self, call, email, full_name, phone.as_deref()).await,
            Request::Charge { user_id, payment } => {
                payment::charge(self, call, user_id, payment).await
            }
            Request::SendEmail {
                kind,
                to,
                name,
                subject,
                body,
            } => {
                let mail = email::Mail {
                    kind: *kind,
                    to,
                    name,
                    subject,
                    body,
                };
                email::send_mail(self, call, mail).await
            }
            Request::SendSms { to, body } => sms::send_sms(self, call, to, body).await,
            Request::UpdateProfileStatus {
                user_id,
                status,
                active,
            } => profile::update_status(self, call, user_id, status, *active).await,
            Request::RecordActivity(record) => activity::record(self, call, record).await,
        }
    }
}

/// Adds the saga's tracing headers to a request.
pub(super) fn traced(builder: RequestBuilder, call: &Call) -> RequestBuilder {
    builder
        .header("X-Correlation-ID", call.correlation_id.to_string())
        .header("Idempotency-Key", &call.idempotency_key)
}

/// Sends a request, mapping transport failures to error kinds.
pub(super) async fn send(builder: RequestBuilder, service: &str) -> Result<Response, CallError> {
    let title = super::title(service);
    builder.send().await.map_err(|e| {
        if e.is_timeout() {
            CallError::new(ErrorKind::Timeout, format!("{title} timeout"))
        } else if e.is_connect() {
            CallError::new(ErrorKind::Connect, format!("{title} unreachable"))
        } else {
            CallError::new(ErrorKind::Transport, format!("{title} connection failed"))
        }
    })
}

/// Classifies an unexpected status. `detail` is a short, safe description
/// from the provider's error body, if the client found one.
pub(super) fn status_error(response: &Response, service: &str, detail: Option<&str>) -> CallError {
    let status = response.status();
    let title = super::title(service);
    let code = status.as_u16();
    let what = match status {
        StatusCode::TOO_MANY_REQUESTS => "rate limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "timeout",
        s if s.is_server_error() => "error",
        _ => "rejected the request",
    };
    let reason = match detail {
        Some(detail) => format!("{title} {what} (HTTP {code}: {detail})"),
        None => format!("{title} {what} (HTTP {code})"),
    };
    CallError {
        kind: ErrorKind::Http(code),
        retry_after: retry_after(response),
        reason,
    }
}

/// `Retry-After` in either form: delay-seconds or an HTTP date.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): a number of seconds,
/// or an HTTP date, from which the wait is counted from `now`. A date in
/// the past means no wait; an unreadable value is ignored.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or_default())
}

/// A success status whose body could not be read as expected.
pub(super) fn invalid_response(service: &str) -> CallError {
    CallError::new(
        ErrorKind::InvalidResponse,
        format!(
            "{} sent a response regsaga could not read",
            super::title(service)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_both_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let parse = |v| parse_retry_after(v, now);

        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse("Thu, 03 Dec 2026 10:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse("Thu, 03 Dec 2026 09:00:00 GMT"),
            Some(Duration::ZERO),
            "past"
        );
        assert_eq!(parse("-5"), None);
        assert_eq!(parse("soon"), None);
    }
}
