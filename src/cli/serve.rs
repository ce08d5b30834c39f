//! `regsaga serve`: a long-running registration service over HTTP.
//!
//! - `POST /registrations` takes the same JSON as an input record and
//!   answers at once, once the saga is durable: `202 {sagaId, existing}`.
//! - `GET /registrations/{id}` answers the result so far (`status` says
//!   whether it is final).
//! - `GET /sagas`, `GET /sagas/{id}`, `GET /stats`: what `inspect list`,
//!   `show` and `stats` print, as JSON.
//! - `GET /metrics`: Prometheus text.
//!
//! Unfinished sagas are resumed at start. On SIGINT or SIGTERM it stops
//! taking registrations, lets attempts in flight finish for up to 10 s,
//! and leaves the rest resumable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use regsaga::engine::Error as EngineError;
use regsaga::view::{SagaDetail, SagaDump, SagaRow, Stats};
use regsaga::{
    Engine, HttpServices, RegistrationInput, RegistrationResult, SagaId, SledStore, Store,
};
use serde_json::json;
use tracing::{info, warn};

use super::{exit, inspect, start, ServiceArgs, Signals, StoreArgs};

/// The largest registration body accepted, as for input records.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long attempts in flight may take to finish after a stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; loopback by default. Port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:8686")]
    addr: SocketAddr,

    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    services: ServiceArgs,
}

type Engined = Engine<SledStore, HttpServices>;

#[derive(Clone)]
struct App {
    engine: Engined,
    policies: Arc<regsaga::retry::Policies>,
    tasks: Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>>,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let signals = Signals::listen();
    let config = args.store.load_config()?;
    let running = start(&args.store, &args.services, &config).await?;
    let engine = running.engine.clone();

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("could not listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let app = App {
        engine: engine.clone(),
        policies: Arc::new(config.retry.clone()),
        tasks: Arc::default(),
    };
    let unfinished = engine.store().unfinished()?;
    if !unfinished.is_empty() {
        info!(sagas = unfinished.len(), "resuming unfinished sagas");
        if running.sandbox.is_some() {
            warn!(
                "resuming against a new embedded sandbox, which knows nothing of their \
                 earlier calls; use --services with a lasting `regsaga sandbox` or real services"
            );
        }
    }
    for id in unfinished {
        app.drive(id).await;
    }

    let router = Router::new()
        .route("/registrations", post(register))
        .route("/registrations/{id}", get(result))
        .route("/sagas", get(list))
        .route("/sagas/{id}", get(show))
        .route("/stats", get(stats))
        .route("/dump", get(dump))
        .route("/audit", get(audit))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            problem(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app.clone());

    // The address on stdout, so scripts can read the port chosen for 0,
    // and in the store, so `regsaga inspect` can ask this process.
    let url = format!("http://{addr}");
    println!("{url}");
    let url_file = args.store.store_path(&config).join(inspect::SERVE_URL_FILE);
    std::fs::write(&url_file, &url)
        .with_context(|| format!("could not write {}", url_file.display()))?;
    info!(addr = %addr, "serving registrations");
    let stopping = engine.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            signals.recv().await;
            eprintln!("regsaga: stopping: no new registrations, attempts in flight finish");
            stopping.stop();
        })
        .await
        .context("the HTTP server failed")?;

    let mut tasks = app.tasks.lock().await;
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = tasks.len(),
            "attempts still in flight at the end of the grace period"
        );
    }
    drop(tasks);
    let _ = std::fs::remove_file(&url_file);
    let left = super::resume::still_unfinished(engine.store())?;
    running.shutdown().await;
    if left > 0 {
        eprintln!(
            "regsaga: stopped; {left} sagas left unfinished: the next `regsaga serve` \
             (or `regsaga resume`) on this store finishes them"
        );
        return Ok(exit::INTERRUPTED);
    }
    eprintln!("regsaga: stopped; every saga is finished");
    Ok(exit::OK)
}

impl App {
    /// Drives a saga in the background.
    async fn drive(&self, id: SagaId) {
        let engine = self.engine.clone();
        let mut tasks = self.tasks.lock().await;
        // Reap what finished, so a long-running service keeps no results.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            match engine.run(id).await {
                Ok(_) | Err(EngineError::Stopped(_)) => {}
                Err(error) => warn!(saga.id = %id, %error, "saga not finished"),
            }
        });
    }
}

/// An error answer: a status and `{"error": message}`.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn problem(status: StatusCode, message: impl std::fmt::Display) -> Problem {
    Problem(status, message.to_string())
}

async fn register(
    State(app): State<App>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let message = format!("the body could not be read ({rejection}); at most 64 KiB");
            return problem(rejection.status(), message).into_response();
        }
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let message = "a registration must be a JSON object";
        return problem(StatusCode::UNPROCESSABLE_ENTITY, message).into_response();
    }
    let input: RegistrationInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) if e.is_data() => {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, e).into_response()
        }
        Err(e) => {
            return problem(StatusCode::BAD_REQUEST, format!("not valid JSON: {e}")).into_response()
        }
    };
    let registration = match input.validate() {
        Ok(registration) => registration,
        Err(invalid) => return problem(StatusCode::UNPROCESSABLE_ENTITY, invalid).into_response(),
    };
    match app.engine.submit(registration).await {
        Ok(submitted) => {
            app.drive(submitted.id).await;
            let body =
                json!({ "sagaId": submitted.id.to_string(), "existing": submitted.existing });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(conflict @ EngineError::Conflict { .. }) => {
            problem(StatusCode::CONFLICT, conflict).into_response()
        }
        Err(error) => problem(StatusCode::SERVICE_UNAVAILABLE, error).into_response(),
    }
}

/// A saga by id or e-mail.
fn load(app: &App, key: &str) -> Result<regsaga::Saga, Problem> {
    inspect::find(app.engine.store(), key).map_err(|e| problem(StatusCode::NOT_FOUND, e))
}

async fn result(State(app): State<App>, Path(id): Path<String>) -> Result<Response, Problem> {
    let saga = load(&app, &id)?;
    Ok(Json(RegistrationResult::from(&saga)).into_response())
}

async fn show(State(app): State<App>, Path(id): Path<String>) -> Result<Response, Problem> {
    let saga = load(&app, &id)?;
    Ok(Json(SagaDetail::with_policies(&saga, &app.policies)).into_response())
}

fn all(app: &App) -> Result<Vec<regsaga::Saga>, Problem> {
    inspect::sagas(app.engine.store()).map_err(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, e))
}

async fn list(State(app): State<App>) -> Result<Response, Problem> {
    let sagas = all(&app)?;
    Ok(Json(sagas.iter().map(SagaRow::from).collect::<Vec<_>>()).into_response())
}

fn stats_of(app: &App) -> Result<Stats, Problem> {
    Ok(inspect::stats_of(&all(app)?))
}

async fn dump(State(app): State<App>) -> Result<Response, Problem> {
    let sagas = all(&app)?;
    Ok(Json(sagas.iter().map(SagaDump::from).collect::<Vec<_>>()).into_response())
}

async fn audit(State(app): State<App>) -> Result<Response, Problem> {
    let sagas = all(&app)?;
    let rows: Vec<_> = sagas
        .iter()
        .flat_map(regsaga::view::payment_audit)
        .collect();
    Ok(Json(rows).into_response())
}

async fn stats(State(app): State<App>) -> Result<Response, Problem> {
    Ok(Json(stats_of(&app)?).into_response())
}

/// Appends one metric family: its HELP and TYPE lines, then its samples.
fn family(
    text: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = String>,
) {
    text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for sample in samples {
        text.push_str(&sample);
        text.push('\n');
    }
}

/// Prometheus text exposition, computed from the store at each scrape.
async fn metrics(State(app): State<App>) -> Result<Response, Problem> {
    let stats = stats_of(&app)?;
    let mut text = String::new();
    let sagas = stats
        .by_status
        .iter()
        .map(|(status, n)| format!("regsaga_sagas{{status=\"{status}\"}} {n}"));
    family(
        &mut text,
        "regsaga_sagas",
        "gauge",
        "Sagas in the store by status.",
        sagas,
    );

    let mut attempts = Vec::new();
    let mut retries = Vec::new();
    let mut latency = Vec::new();
    for (service, s) in &stats.services {
        let outcomes = std::iter::once(("succeeded", &s.successes))
            .chain(s.failures.iter().map(|(k, n)| (k.as_str(), n)));
        for (outcome, n) in outcomes {
            attempts.push(format!(
                "regsaga_attempts_total{{service=\"{service}\",outcome=\"{outcome}\"}} {n}"
            ));
        }
        retries.push(format!(
            "regsaga_retries_total{{service=\"{service}\"}} {}",
            s.retries
        ));
        let quantiles = [
            ("0.5", s.latency_p50_ms),
            ("0.95", s.latency_p95_ms),
            ("0.99", s.latency_p99_ms),
        ];
        for (q, v) in quantiles {
            if let Some(v) = v {
                latency.push(format!(
                    "regsaga_attempt_latency_ms{{service=\"{service}\",quantile=\"{q}\"}} {v}"
                ));
            }
        }
    }
    let help = "Step attempts by service and outcome.";
    family(
        &mut text,
        "regsaga_attempts_total",
        "counter",
        help,
        attempts,
    );
    let help = "Attempts after a step's first, by service.";
    family(&mut text, "regsaga_retries_total", "counter", help, retries);
    let help = "Attempt latency quantiles by service.";
    family(
        &mut text,
        "regsaga_attempt_latency_ms",
        "gauge",
        help,
        latency,
    );

    let waiting = format!("regsaga_waiting_sagas {}", app.engine.waiting());
    let help = "Sagas waiting for a retry.";
    family(&mut text, "regsaga_waiting_sagas", "gauge", help, [waiting]);
    let flushes = app.engine.store().stats().flushes;
    let flushes = format!("regsaga_store_flushes_total {flushes}");
    family(
        &mut text,
        "regsaga_store_flushes_total",
        "counter",
        "Store flushes.",
        [flushes],
    );

    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; version=0.0.4",
    )];
    Ok((content_type, text).into_response())
}
