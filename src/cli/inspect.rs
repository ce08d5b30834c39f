//! `regsaga inspect list|show`: read-only views of a store.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use comfy_table::{presets, Table};
use regsaga::store::Durability;
use regsaga::view::{SagaDetail, SagaRow};
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
    Audit(AuditArgs),
    /// Every saga decoded in full, one JSON object per line.
    #[command(after_help = exit::HELP)]
    Dump(DumpArgs),
    /// Counts by status; per service attempts, failures, retries, latency.
    #[command(after_help = exit::HELP)]
    Stats(AuditArgs),
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
pub struct AuditArgs {
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only sagas with this status (Completed, CompletedWithErrors,
    /// Failed, Running, Retrying, InFlight).
    #[arg(long)]
    status: Option<String>,

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

pub fn inspect(command: InspectCommand) -> anyhow::Result<u8> {
    match command {
        InspectCommand::List(args) => list(args),
        InspectCommand::Show(args) => show(args),
        InspectCommand::Audit(args) => audit(args),
        InspectCommand::Dump(args) => dump(args),
        InspectCommand::Stats(args) => stats(args),
    }
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

fn dump(args: DumpArgs) -> anyhow::Result<u8> {
    check_status(args.status.as_ref())?;
    let store = open(&args.store)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for id in store.ids()? {
        let Some(saga) = store.load(id)? else {
            continue;
        };
        let label = saga.state.label();
        if args
            .status
            .as_ref()
            .is_some_and(|s| !s.eq_ignore_ascii_case(label))
        {
            continue;
        }
        serde_json::to_writer(&mut out, &regsaga::view::SagaDump::from(&saga))?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(exit::OK)
}

fn stats(args: AuditArgs) -> anyhow::Result<u8> {
    let store = open(&args.store)?;
    let mut stats = regsaga::view::Stats::default();
    for id in store.ids()? {
        if let Some(saga) = store.load(id)? {
            stats.add(&saga);
        }
    }
    stats.finish();

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

fn audit(args: AuditArgs) -> anyhow::Result<u8> {
    let store = open(&args.store)?;
    let mut out = std::io::stdout().lock();
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header([
        "AT", "SAGA", "WHO", "AMOUNT", "KEY", "ATTEMPT", "OUTCOME", "PAYMENT",
    ]);
    for id in store.ids()? {
        let Some(saga) = store.load(id)? else {
            continue;
        };
        for row in regsaga::view::payment_audit(&saga) {
            if args.json {
                serde_json::to_writer(&mut out, &row)?;
                writeln!(out)?;
                continue;
            }
            table.add_row([
                row.at,
                row.saga_id,
                row.who,
                row.amount,
                row.idempotency_key,
                row.attempt.to_string(),
                row.outcome,
                row.payment_id.or(row.error).unwrap_or_default(),
            ]);
        }
    }
    if !args.json {
        writeln!(out, "{table}")?;
    }
    Ok(exit::OK)
}

fn open(args: &StoreArgs) -> anyhow::Result<SledStore> {
    let config = args.load_config()?;
    let path = args.store_path(&config);
    // Inspection only reads; nothing is committed, so no fsync is needed.
    Ok(SledStore::open_existing(&path, Durability::Process)?)
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

fn list(args: ListArgs) -> anyhow::Result<u8> {
    check_status(args.status.as_ref())?;
    let store = open(&args.store)?;
    let mut rows = Vec::new();
    for id in store.ids()? {
        if args.limit.is_some_and(|limit| rows.len() >= limit) {
            break;
        }
        let Some(saga) = store.load(id)? else {
            continue;
        };
        let row = SagaRow::from(&saga);
        if args
            .status
            .as_ref()
            .is_some_and(|s| !s.eq_ignore_ascii_case(&row.status))
        {
            continue;
        }
        rows.push(row);
    }

    let mut out = std::io::stdout().lock();
    if args.json {
        for row in &rows {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        }
        return Ok(exit::OK);
    }
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header([
        "SAGA", "E-MAIL", "STATUS", "STEP", "ATTEMPTS", "NEXT DUE", "UPDATED",
    ]);
    for row in rows {
        table.add_row([
            row.saga_id,
            row.email,
            row.status,
            row.step.unwrap_or_else(|| "-".into()),
            row.attempts.to_string(),
            row.next_attempt_due.unwrap_or_else(|| "-".into()),
            row.updated_at,
        ]);
    }
    writeln!(out, "{table}")?;
    Ok(exit::OK)
}

fn show(args: ShowArgs) -> anyhow::Result<u8> {
    let store = open(&args.store)?;
    let saga = find(&store, &args.id)?;
    let detail = SagaDetail::from(&saga);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &detail)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(&detail))?;
    }
    Ok(exit::OK)
}

fn find(store: &SledStore, key: &str) -> anyhow::Result<Saga> {
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
        let due = w.due.as_deref().unwrap_or("now");
        let _ = writeln!(
            s,
            "waiting      {} ({}, due {due}, {} attempts made)",
            w.step, w.reason, w.attempts_made
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
