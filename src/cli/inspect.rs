//! `regsaga inspect`: read-only views of a store.
//!
//! Inspection reads the store directly. While a `regsaga serve` holds it
//! (the server leaves its address in the store's `serve.url`), the same
//! views come from that process over HTTP instead. Nothing here writes.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};
use comfy_table::{presets, Table};
use regsaga::store::Durability;
use regsaga::view::{PaymentAudit, SagaDetail, SagaDump, SagaRow, Stats};
use regsaga::{Saga, SagaId, SledStore, Store};

use super::{exit, StoreArgs};

#[derive(Subcommand)]
pub enum InspectCommand {
    /// One row per saga, oldest first.
    #[command(after_help = exit::HELP)]
    List(ListArgs),
    /// One saga in full: state, result and every attempt of every step.
    #[command(after_help = exit::HELP)]
    Show(ShowArgs),
    /// Every payment operation: when, whose, how much, key and outcome.
    #[command(after_help = exit::HELP)]
    Audit(JsonArgs),
    /// Every saga decoded in full, one JSON object per line.
    #[command(after_help = exit::HELP)]
    Dump(DumpArgs),
    /// Counts by status; per service attempts, failures, retries, latency.
    #[command(after_help = exit::HELP)]
    Stats(JsonArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Only sagas with this status (Completed, CompletedWithErrors,
    /// Failed, Running, Retrying, InFlight).
    #[arg(long)]
    status: Option<String>,

    /// Only sagas whose current step is this one (e.g. charge-payment).
    #[arg(long)]
    step: Option<String>,

    /// Only the saga of this e-mail address.
    #[arg(long)]
    email: Option<String>,

    /// Only sagas updated at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    since: Option<chrono::DateTime<chrono::Utc>>,

    /// Rows after this saga id (the last id of the previous page).
    #[arg(long)]
    after: Option<SagaId>,

    /// At most this many rows.
    #[arg(long)]
    limit: Option<usize>,

    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct ShowArgs {
    /// A saga id, or the e-mail it was registered with.
    id: String,

    /// JSON instead of text.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct DumpArgs {
    /// Only sagas with this status.
    #[arg(long)]
    status: Option<String>,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct JsonArgs {
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    store: StoreArgs,
}

/// The statuses `--status` accepts.
const STATUSES: [&str; 6] = [
    "Completed",
    "CompletedWithErrors",
    "Failed",
    "Running",
    "Retrying",
    "InFlight",
];

/// The file in a store's folder where `regsaga serve` leaves its address.
pub const SERVE_URL_FILE: &str = "serve.url";

pub async fn inspect(command: InspectCommand) -> anyhow::Result<u8> {
    match command {
        InspectCommand::List(args) => list(args).await,
        InspectCommand::Show(args) => show(args).await,
        InspectCommand::Audit(args) => audit(args).await,
        InspectCommand::Dump(args) => dump(args).await,
        InspectCommand::Stats(args) => stats(args).await,
    }
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-03T10:00:00Z: {e}"))
}

fn check_status(status: Option<&String>) -> anyhow::Result<()> {
    if let Some(status) = status {
        anyhow::ensure!(
            STATUSES.iter().any(|s| s.eq_ignore_ascii_case(status)),
            "--status {status:?} is not a status; use one of {}",
            STATUSES.join(", ")
        );
    }
    Ok(())
}

/// Where the views come from.
enum Source {
    /// The store itself, read with the configured retry policies.
    Local(Box<(SledStore, regsaga::retry::Policies)>),
    /// A `regsaga serve` holding the store, at this base URL.
    Remote(String),
}

fn open(args: &StoreArgs) -> anyhow::Result<Source> {
    let config = args.load_config()?;
    let path = args.store_path(&config);
    // Inspection only reads; nothing is committed, so no fsync is needed.
    match SledStore::open_existing(&path, Durability::Process) {
        Ok(store) => Ok(Source::Local(Box::new((store, config.retry)))),
        Err(regsaga::store::Error::Locked { .. }) => match serving(&path) {
            Some(url) => Ok(Source::Remote(url)),
            None => anyhow::bail!(
                "the store at {} is in use by another process, which is not a \
                 `regsaga serve`; inspect it once that process has ended (a store \
                 held by `regsaga serve` can be inspected while it runs)",
                path.display()
            ),
        },
        Err(e) => Err(e.into()),
    }
}

/// The address a `regsaga serve` holding the store left in it.
fn serving(store: &Path) -> Option<String> {
    let text = std::fs::read_to_string(store.join(SERVE_URL_FILE)).ok()?;
    let url = text.trim();
    url.starts_with("http://").then(|| url.to_owned())
}

impl Source {
    async fn rows(&self) -> anyhow::Result<Vec<SagaRow>> {
        match self {
            Source::Local(local) => Ok(sagas(&local.0)?.iter().map(SagaRow::from).collect()),
            Source::Remote(url) => fetch(&format!("{url}/sagas")).await,
        }
    }

    async fn detail(&self, key: &str) -> anyhow::Result<SagaDetail> {
        match self {
            Source::Local(local) => {
                let (store, policies) = &**local;
                Ok(SagaDetail::with_policies(&find(store, key)?, policies))
            }
            Source::Remote(url) => fetch(&format!("{url}/sagas/{key}")).await,
        }
    }

    async fn dump(&self) -> anyhow::Result<Vec<SagaDump>> {
        match self {
            Source::Local(local) => Ok(sagas(&local.0)?.iter().map(SagaDump::from).collect()),
            Source::Remote(url) => fetch(&format!("{url}/dump")).await,
        }
    }

    async fn stats(&self) -> anyhow::Result<Stats> {
        match self {
            Source::Local(local) => Ok(stats_of(&sagas(&local.0)?)),
            Source::Remote(url) => fetch(&format!("{url}/stats")).await,
        }
    }

    async fn audit(&self) -> anyhow::Result<Vec<PaymentAudit>> {
        match self {
            Source::Local(local) => Ok(sagas(&local.0)?
                .iter()
                .flat_map(regsaga::view::payment_audit)
                .collect()),
            Source::Remote(url) => fetch(&format!("{url}/audit")).await,
        }
    }
}

/// Every saga of a store, oldest first.
pub fn sagas(store: &SledStore) -> anyhow::Result<Vec<Saga>> {
    let mut sagas = Vec::new();
    for id in store.ids()? {
        if let Some(saga) = store.load(id)? {
            sagas.push(saga);
        }
    }
    Ok(sagas)
}

/// The counts of `inspect stats` over some sagas.
pub fn stats_of(sagas: &[Saga]) -> Stats {
    let mut stats = Stats::default();
    for saga in sagas {
        stats.add(saga);
    }
    stats.finish();
    stats
}

/// GETs JSON from a serving process; its error answers become errors.
async fn fetch<T: serde::de::DeserializeOwned>(url: &str) -> anyhow::Result<T> {
    let response = reqwest::get(url)
        .await
        .with_context(|| format!("could not reach the serving process at {url}"))?;
    if !response.status().is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"].as_str().unwrap_or("the request failed");
        anyhow::bail!("{message}");
    }
    Ok(response.json().await?)
}

async fn list(args: ListArgs) -> anyhow::Result<u8> {
    check_status(args.status.as_ref())?;
    if let Some(step) = &args.step {
        anyhow::ensure!(
            regsaga::Step::ALL.iter().any(|s| s.name() == step),
            "--step {step:?} is not a step; use one of {}",
            regsaga::Step::ALL.map(|s| s.name()).join(", ")
        );
    }
    let email = args
        .email
        .as_deref()
        .map(regsaga::registration::normalize_email)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--email: {}", e.rule))?;
    let source = open(&args.store)?;

    // Saga ids are UUIDv7, whose text sorts in creation order, so
    // `--after` pages through them; times are RFC 3339 in UTC and sort too.
    let after = args.after.map(|id| id.to_string());
    let since = args.since.map(regsaga::view::time);
    let rows: Vec<SagaRow> = source
        .rows()
        .await?
        .into_iter()
        .filter(|row| {
            after.as_ref().is_none_or(|a| row.saga_id > *a)
                && args
                    .status
                    .as_ref()
                    .is_none_or(|s| s.eq_ignore_ascii_case(&row.status))
                && args
                    .step
                    .as_ref()
                    .is_none_or(|s| row.step.as_ref() == Some(s))
                && email.as_ref().is_none_or(|e| *e == row.email)
                && since.as_ref().is_none_or(|t| row.updated_at >= *t)
        })
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();

    let header = [
        "SAGA", "E-MAIL", "STATUS", "STEP", "ATTEMPTS", "NEXT DUE", "UPDATED",
    ];
    print_rows(&rows, args.json, &header, |row| {
        vec![
            row.saga_id.clone(),
            row.email.clone(),
            row.status.clone(),
            row.step.clone().unwrap_or_else(|| "-".into()),
            row.attempts.to_string(),
            row.next_attempt_due.clone().unwrap_or_else(|| "-".into()),
            row.updated_at.clone(),
        ]
    })
}

async fn show(args: ShowArgs) -> anyhow::Result<u8> {
    let detail = open(&args.store)?.detail(&args.id).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &detail)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(&detail))?;
    }
    Ok(exit::OK)
}

async fn dump(args: DumpArgs) -> anyhow::Result<u8> {
    check_status(args.status.as_ref())?;
    let source = open(&args.store)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for saga in source.dump().await? {
        let status = &saga.detail.status;
        if args
            .status
            .as_ref()
            .is_some_and(|s| !s.eq_ignore_ascii_case(status))
        {
            continue;
        }
        serde_json::to_writer(&mut out, &saga)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(exit::OK)
}

async fn stats(args: JsonArgs) -> anyhow::Result<u8> {
    let stats = open(&args.store)?.stats().await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &stats)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    let statuses: Vec<String> = stats
        .by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    writeln!(out, "{} sagas: {}\n", stats.sagas, statuses.join(", "))?;
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header([
        "SERVICE", "ATTEMPTS", "OK", "FAILED", "RETRIES", "P50 MS", "P95 MS", "P99 MS",
    ]);
    let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for (name, s) in &stats.services {
        let failed: Vec<String> = s.failures.iter().map(|(k, n)| format!("{n} {k}")).collect();
        table.add_row([
            name.clone(),
            s.attempts.to_string(),
            s.successes.to_string(),
            if failed.is_empty() {
                "0".to_owned()
            } else {
                failed.join(", ")
            },
            s.retries.to_string(),
            ms(s.latency_p50_ms),
            ms(s.latency_p95_ms),
            ms(s.latency_p99_ms),
        ]);
    }
    writeln!(out, "{table}")?;
    Ok(exit::OK)
}

async fn audit(args: JsonArgs) -> anyhow::Result<u8> {
    let rows = open(&args.store)?.audit().await?;
    let header = [
        "AT", "SAGA", "WHO", "AMOUNT", "KEY", "ATTEMPT", "OUTCOME", "PAYMENT",
    ];
    print_rows(&rows, args.json, &header, |row| {
        vec![
            row.at.clone(),
            row.saga_id.clone(),
            row.who.clone(),
            row.amount.clone(),
            row.idempotency_key.clone(),
            row.attempt.to_string(),
            row.outcome.clone(),
            row.payment_id
                .clone()
                .or(row.error.clone())
                .unwrap_or_default(),
        ]
    })
}

/// Prints rows as JSON lines, or as a table with `header` and the cells
/// that `cells` makes of each row.
fn print_rows<T: serde::Serialize>(
    rows: &[T],
    json: bool,
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    if json {
        for row in rows {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        }
        return Ok(exit::OK);
    }
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header);
    for row in rows {
        table.add_row(cells(row));
    }
    writeln!(out, "{table}")?;
    Ok(exit::OK)
}

/// A saga by id or by the e-mail it was registered with.
pub fn find(store: &SledStore, key: &str) -> anyhow::Result<Saga> {
    let id = match key.parse::<SagaId>() {
        Ok(id) => id,
        Err(_) => {
            let email = regsaga::registration::normalize_email(key)
                .with_context(|| format!("{key:?} is neither a saga id nor an e-mail address"))?;
            store.find_by_email(&email)?.with_context(|| {
                format!("no saga for e-mail {email}; `regsaga inspect list` shows them all")
            })?
        }
    };
    store.load(id)?.with_context(|| {
        format!("no saga {id} in the store; `regsaga inspect list` shows them all")
    })
}

fn render(d: &SagaDetail) -> String {
    use std::fmt::Write;

    let mut s = String::new();
    let _ = writeln!(s, "saga         {}", d.saga_id);
    let _ = writeln!(s, "correlation  {}", d.correlation_id);
    let _ = writeln!(s, "e-mail       {}", d.email);
    let _ = writeln!(s, "status       {}", d.status);
    let _ = writeln!(s, "created      {}", d.created_at);
    let _ = writeln!(s, "updated      {}", d.updated_at);
    if let Some(w) = &d.waiting {
        let what = match (w.reason.as_str(), w.due.as_deref()) {
            ("due", Some(due)) => format!("next attempt at {due}"),
            ("in-flight", _) => "an attempt is in flight".to_owned(),
            _ => "ready to run".to_owned(),
        };
        let left = w
            .attempts_left
            .map(|n| format!(", {n} left"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "waiting      {}: {what} (attempts so far: {}{left})",
            w.step, w.attempts_made
        );
    }
    let r = &d.result;
    let _ = writeln!(s, "user id      {}", r.user_id.as_deref().unwrap_or("-"));
    let _ = writeln!(
        s,
        "payment      {}",
        if r.payment_processed {
            "processed"
        } else {
            "no"
        }
    );
    for n in &r.notifications_sent {
        let _ = writeln!(s, "notification {} {}", n.notification_id, n.status);
    }
    for e in &r.errors {
        let _ = writeln!(s, "error        {e}");
    }

    for step in &d.steps {
        let _ = writeln!(
            s,
            "\n{} ({}, key {})",
            step.step, step.service, step.idempotency_key
        );
        for a in &step.attempts {
            let took = a.duration_ms.map_or("-".into(), |ms| format!("{ms} ms"));
            let _ = write!(s, "  #{} {} {} {took}", a.number, a.started_at, a.outcome);
            if let Some(message) = &a.message {
                let _ = write!(s, ": {message}");
            }
            if let Some(ms) = a.retry_after_ms {
                let _ = write!(s, "; the service asked to wait {ms} ms");
            }
            if let Some(due) = &a.next_due {
                let _ = write!(s, "; next attempt at {due}");
            }
            if let Some(reason) = &a.gave_up {
                let _ = write!(s, "; gave up ({reason})");
            }
            let _ = writeln!(s);
        }
    }
    s
}
