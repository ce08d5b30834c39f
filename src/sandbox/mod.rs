//! Sandbox services: one HTTP server that imitates every provider a
//! registration talks to, so sagas can run end to end on one machine.
//!
//! The library never calls this module; the binary and the tests start
//! it. It serves, on one address:
//!
//! - `profile`: a SCIM 2.0 user directory under `/scim/v2/Users`,
//! - `payment`: Stripe-style `POST /v1/payment_intents`, with Stripe's
//!   idempotency rules,
//! - `email`: SendGrid-style `POST /v3/mail/send`,
//! - `sms`: Twilio-style `POST /2010-04-01/Accounts/{sid}/Messages.json`,
//! - `activity`: our own `POST /internal/v1/activity-log`,
//! - `GET /__sandbox/state`: the [`LedgerSnapshot`] of all of the above.
//!
//! Each service lives in its own file and mirrors its provider's request
//! and response shapes, errors included. [`faults`] makes services fail
//! on purpose, deterministically for a given seed; `app` holds the shared
//! state and the guard that injects faults and records every request in
//! the [`ledger`]. `docs/SANDBOX.md` describes every endpoint.
//!
//! State lives in memory only: a restarted sandbox starts empty.
//!
//! # Examples
//!
//! ```no_run
//! use regsaga::sandbox::{Options, Sandbox};
//!
//! # async fn run() -> std::io::Result<()> {
//! let options = Options {
//!     faults: vec!["payment:http-503@0.3".parse().unwrap()],
//!     seed: 7,
//! };
//! let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), options).await?;
//! println!("providers at {}", sandbox.url());
//! // ... run sagas against sandbox.url() ...
//! println!("{} charges", sandbox.state().charges.len());
//! sandbox.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod activity;
mod app;
mod email;
pub mod faults;
pub mod ledger;
mod payment;
mod profile;
mod sms;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use app::App;
pub use faults::{Fault, FaultKind, Service};
pub use ledger::LedgerSnapshot;
pub use payment::PaymentHold;

/// How long [`Sandbox::shutdown`] lets open connections finish before it
/// drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the sandbox misbehaves. The default injects no faults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Faults to inject; for each request, the first one of its service
    /// that fires wins.
    pub faults: Vec<Fault>,
    /// Seeds the fault draws: the same seed fails the same requests.
    pub seed: u64,
}

/// A running sandbox server.
pub struct Sandbox {
    addr: SocketAddr,
    app: App,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Sandbox {
    /// Binds `addr` (port 0 picks a free port) and serves the sandbox on
    /// a spawned task until [`Sandbox::shutdown`].
    ///
    /// # Errors
    ///
    /// Fails when the address cannot be bound, for example because the
    /// port is taken.
    pub async fn start(addr: SocketAddr, options: Options) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = App::new(options);
        let (stop, stopped) = oneshot::channel::<()>();

        let service = routes(&app);
        let server = tokio::spawn(async move {
            let stopped = async {
                // A dropped sender also stops the server.
                let _ = stopped.await;
            };
            axum::serve(listener, service)
                .with_graceful_shutdown(stopped)
                .await
        });

        tracing::debug!(%addr, "sandbox listening");
        Ok(Sandbox {
            addr,
            app,
            stop,
            server,
        })
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for clients, such as `http://127.0.0.1:8080`. A
    /// wildcard bind address becomes the loopback address.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// What the services have recorded so far; the same data as
    /// `GET /__sandbox/state`.
    pub fn state(&self) -> LedgerSnapshot {
        self.app.snapshot()
    }

    /// Test hook: holds every payment request after it has claimed its
    /// idempotency key and before it executes, until the returned hold
    /// is released or dropped. This makes "same key while the first
    /// request is still executing" reproducible.
    pub fn hold_payments(&self) -> PaymentHold {
        PaymentHold::install(&self.app)
    }

    /// Stops accepting connections, wakes requests held by the timeout
    /// fault, and waits a few seconds at most for open ones to finish.
    pub async fn shutdown(self) {
        self.app.stop();
        let _ = self.stop.send(());

        let mut server = self.server;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        tracing::debug!(addr = %self.addr, "sandbox stopped");
    }
}

/// The sandbox as a router, for embedding in another server. Faults and
/// ledger work as with [`Sandbox::start`]; requests held by the timeout
/// fault are released only after ten minutes.
pub fn router(options: Options) -> Router {
    routes(&App::new(options))
}

fn routes(app: &App) -> Router {
    Router::new()
        .merge(profile::routes(app))
        .merge(payment::routes(app))
        .merge(email::routes(app))
        .merge(sms::routes(app))
        .merge(activity::routes(app))
        .route("/__sandbox/state", get(state))
        .with_state(app.clone())
}

async fn state(State(app): State<App>) -> Json<LedgerSnapshot> {
    Json(app.snapshot())
}
