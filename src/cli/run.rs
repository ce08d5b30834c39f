//! `regsaga run`: register every record of an input file.
//!
//! Unfinished sagas of an earlier process are resumed first, alongside
//! the new records. One result line per input record goes to stdout as
//! NDJSON, in the order the registrations finish; `record` gives each
//! line's position in the input.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use regsaga::{Engine, HttpServices, RegistrationResult, Saga, SledStore, Store};
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{exit, input, start, ServiceArgs, StoreArgs};

#[derive(Args)]
pub struct RunArgs {
    /// Input file: NDJSON, or a JSON array; `-` reads stdin.
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// Also write rejected records, unchanged, to this file, so they can
    /// be fixed and run again.
    #[arg(long, value_name = "PATH")]
    rejects: Option<PathBuf>,

    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    services: ServiceArgs,
}

/// One stdout line: the result, and where its record was in the input.
#[derive(Serialize)]
struct Line<'a> {
    record: usize,
    #[serde(flatten)]
    result: &'a RegistrationResult,
}

/// Counts for the summary line.
#[derive(Default)]
struct Tally {
    by_status: BTreeMap<String, usize>,
    rejected: usize,
    errors: usize,
    resumed: usize,
}

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let config = args.store.load_config()?;
    let records = input::open(&args.input)?;
    let mut rejects = match &args.rejects {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("could not create the rejects file {}", path.display()))?,
        ),
        None => None,
    };

    let running = start(&args.store, &args.services, &config).await?;
    let engine = running.engine.clone();
    let started = Instant::now();

    // Sagas an earlier process left unfinished go on beside the input.
    let resume = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.resume().await })
    };

    let mut tally = Tally::default();
    let mut tasks = JoinSet::new();
    let window = engine_window(&args.services, &config);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());

    for (record, item) in records {
        let registration = match item {
            Ok(registration) => registration,
            Err(rejected) => {
                eprintln!("rejected {}: {}", rejected.position, rejected.reason);
                if let Some(file) = rejects.as_mut() {
                    writeln!(file, "{}", rejected.raw)
                        .context("could not write the rejects file")?;
                }
                tally.rejected += 1;
                continue;
            }
        };
        while tasks.len() >= window {
            collect(tasks.join_next().await, &mut out, &mut tally)?;
        }
        let engine = engine.clone();
        tasks.spawn(async move { (record, register(&engine, registration).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        collect(Some(joined), &mut out, &mut tally)?;
    }
    out.flush().context("could not write results to stdout")?;

    match resume.await {
        Ok(Ok(resumed)) => tally.resumed = resumed.len(),
        Ok(Err(e)) => warn!(error = %e, "could not resume unfinished sagas"),
        Err(e) => warn!(error = %e, "resume task failed"),
    }
    let stats = engine.store().stats();
    debug!(
        commits = stats.commits,
        flushes = stats.flushes,
        fsyncs = stats.fsyncs,
        "store"
    );
    running.shutdown().await;

    summarize(&tally, started.elapsed());
    Ok(if tally.errors > 0 {
        exit::ERROR
    } else if tally.rejected > 0 {
        exit::REJECTED
    } else {
        exit::OK
    })
}

/// How many registrations may be under way at once. Sagas waiting for a
/// retry hold no engine permit, so more of them than the concurrency may
/// be outstanding without idling the services.
fn engine_window(services: &ServiceArgs, config: &regsaga::config::Config) -> usize {
    let concurrency = services
        .concurrency
        .map(|c| c as usize)
        .or(config.concurrency)
        .unwrap_or(regsaga::engine::DEFAULT_CONCURRENCY);
    concurrency.saturating_mul(4)
}

async fn register(
    engine: &Engine<SledStore, HttpServices>,
    registration: regsaga::Registration,
) -> Result<Saga, regsaga::engine::Error> {
    let submitted = engine.submit(registration).await?;
    engine.run(submitted.id).await
}

type Joined = Result<(usize, Result<Saga, regsaga::engine::Error>), tokio::task::JoinError>;

fn collect(joined: Option<Joined>, out: &mut impl Write, tally: &mut Tally) -> anyhow::Result<()> {
    let Some(joined) = joined else {
        return Ok(());
    };
    let (record, outcome) = joined.context("a registration task failed")?;
    match outcome {
        Ok(saga) => {
            let result = RegistrationResult::from(&saga);
            *tally.by_status.entry(result.status.clone()).or_default() += 1;
            serde_json::to_writer(
                &mut *out,
                &Line {
                    record,
                    result: &result,
                },
            )
            .context("could not write results to stdout")?;
            writeln!(out).context("could not write results to stdout")?;
        }
        Err(error) => {
            eprintln!("error in record {record}: {error}");
            tally.errors += 1;
        }
    }
    Ok(())
}

fn summarize(tally: &Tally, elapsed: std::time::Duration) {
    let done: usize = tally.by_status.values().sum();
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let statuses: Vec<String> = ["Completed", "CompletedWithErrors", "Failed"]
        .iter()
        .map(|s| format!("{} {s}", tally.by_status.get(*s).copied().unwrap_or(0)))
        .collect();
    let mut line = format!(
        "regsaga: {done} registrations in {secs:.2} s ({rate:.0}/s): {}",
        statuses.join(", ")
    );
    if tally.rejected > 0 {
        line.push_str(&format!("; {} records rejected", tally.rejected));
    }
    if tally.errors > 0 {
        line.push_str(&format!("; {} could not be processed", tally.errors));
    }
    if tally.resumed > 0 {
        line.push_str(&format!(
            "; {} unfinished sagas from an earlier run resumed",
            tally.resumed
        ));
    }
    eprintln!("{line}");
}
