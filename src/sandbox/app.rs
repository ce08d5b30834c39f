//! What every service endpoint shares: the one lock around the sandbox's
//! state, the request metadata that goes into the ledger, and the guard
//! that draws faults before a handler runs and records the request after.
//!
//! The state sits behind a std `Mutex` that no code holds across an
//! `.await`, so handlers lock, change, unlock, and only then wait.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State as Shared};
use axum::http::header::{HeaderValue, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tokio::sync::watch;

use super::faults::{Draws, FaultKind, Service};
use super::ledger::{Ledger, LedgerSnapshot, RequestEntry};
use super::{activity, email, payment, profile, sms, Options};

/// How long the timeout fault keeps a request waiting: far longer than
/// any client's attempt timeout, short enough not to leak forever.
const HANG: Duration = Duration::from_secs(600);

/// A cheap handle to the sandbox, cloned into every handler.
#[derive(Clone)]
pub(crate) struct App {
    options: Arc<Options>,
    state: Arc<Mutex<State>>,
    /// Flips to `true` once, when the sandbox shuts down.
    stopping: Arc<watch::Sender<bool>>,
}

/// Everything the services remember, behind one lock.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) ledger: Ledger,
    pub(crate) draws: Draws,
    pub(crate) profiles: profile::Directory,
    pub(crate) payments: payment::Store,
    pub(crate) emails: email::Sent,
    pub(crate) sms: sms::Sent,
    pub(crate) activities: activity::Recorded,
}

impl App {
    pub(crate) fn new(options: Options) -> App {
        App {
            options: Arc::new(options),
            state: Arc::default(),
            stopping: Arc::new(watch::channel(false).0),
        }
    }

    /// Locks the state. A handler that panicked while holding the lock
    /// leaves it poisoned; the sandbox keeps serving what is there rather
    /// than failing every later request.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn snapshot(&self) -> LedgerSnapshot {
        let state = self.lock();
        state.ledger.snapshot(state.profiles.entries())
    }

    /// Wakes every request the timeout fault holds, so a graceful
    /// shutdown does not wait ten minutes for them.
    pub(crate) fn stop(&self) {
        self.stopping.send_replace(true);
    }

    fn draw(&self, service: Service, key: Option<&str>) -> Option<FaultKind> {
        let Options { faults, seed } = &*self.options;
        self.lock().draws.draw(faults, *seed, service, key)
    }

    async fn hang(&self) {
        let mut stopping = self.stopping.subscribe();
        let stopped = stopping.wait_for(|stopping| *stopping);
        // Either way the request ends; which one does not matter here.
        let _ = tokio::time::timeout(HANG, stopped).await;
    }
}

/// The headers of a request that the ledger keeps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meta {
    pub(crate) correlation_id: Option<String>,
    pub(crate) idempotency_key: Option<String>,
}

impl Meta {
    fn from_headers(headers: &HeaderMap) -> Meta {
        let text = |name: &str| {
            let value = headers.get(name)?.as_bytes();
            Some(String::from_utf8_lossy(value).into_owned())
        };
        Meta {
            correlation_id: text("x-correlation-id"),
            idempotency_key: text("idempotency-key"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Meta, Infallible> {
        Ok(Meta::from_headers(&parts.headers))
    }
}

/// The fault the guard drew for this request and let through to the
/// handler: only `decline` ever arrives here.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Drawn(pub(crate) Option<FaultKind>);

impl<S: Send + Sync> FromRequestParts<S> for Drawn {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Drawn, Infallible> {
        Ok(parts.extensions.get::<Drawn>().copied().unwrap_or_default())
    }
}

/// Puts `router`'s routes behind the fault guard of `service`.
pub(crate) fn guarded(router: Router<App>, app: &App, service: Service) -> Router<App> {
    let layer = middleware::from_fn_with_state((app.clone(), service), guard);
    router.route_layer(layer)
}

/// Draws a fault before the handler runs, answers in its place when an
/// HTTP or timeout fault fires, and records the request either way.
async fn guard(
    Shared((app, service)): Shared<(App, Service)>,
    mut request: Request,
    next: Next,
) -> Response {
    let meta = Meta::from_headers(request.headers());
    let drawn = app.draw(service, meta.idempotency_key.as_deref());
    let mut entry = RequestEntry {
        service: service.name().to_owned(),
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        idempotency_key: meta.idempotency_key,
        correlation_id: meta.correlation_id,
        status: None,
        fault: drawn.map(|kind| kind.name().to_owned()),
    };

    let response = match drawn {
        Some(FaultKind::Timeout) => {
            record(&app, entry);
            app.hang().await;
            // Only reached at shutdown or after the hang: the client gave
            // up long ago, so this answer is for the connection's sake.
            return fault_response(service, StatusCode::SERVICE_UNAVAILABLE);
        }
        Some(kind @ (FaultKind::Http500 | FaultKind::Http503 | FaultKind::Http429)) => {
            let status = kind
                .http_status()
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            fault_response(service, status)
        }
        Some(FaultKind::Decline) | None => {
            request.extensions_mut().insert(Drawn(drawn));
            next.run(request).await
        }
    };

    entry.status = Some(response.status().as_u16());
    record(&app, entry);
    response
}

fn record(app: &App, entry: RequestEntry) {
    tracing::debug!(
        service = %entry.service,
        http.method = %entry.method,
        http.status = entry.status,
        fault = entry.fault.as_deref(),
        "sandbox request handled"
    );
    app.lock().ledger.requests.push(entry);
}

/// The provider's own error answer for an injected HTTP fault.
fn fault_response(service: Service, status: StatusCode) -> Response {
    let mut response = match service {
        Service::Profile => profile::fault_response(status),
        Service::Payment => payment::fault_response(status),
        Service::Email => email::fault_response(status),
        Service::Sms => sms::fault_response(status),
        Service::Activity => activity::fault_response(status),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = HeaderValue::from_static("1");
        response.headers_mut().insert(RETRY_AFTER, wait);
    }
    response
}
