//! `regsaga run`: register every record of an input file.
//!
//! Sagas an earlier process left unfinished are resumed first, alongside
//! the new records. One result line per accepted input record goes to
//! stdout as NDJSON, in the order the registrations finish; `record`
//! gives each line's position in the input.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use regsaga::engine::Error as EngineError;
use regsaga::{Engine, HttpServices, RegistrationResult, Saga, SledStore, Store};
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{exit, input, progress, start, stop_on_signal, ServiceArgs, Signals, StoreArgs};

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
    /// Shared with the progress display.
    progress: std::sync::Arc<progress::Counts>,
    by_status: BTreeMap<String, usize>,
    rejected: usize,
    errors: usize,
    unfinished: usize,
    resumed: usize,
    /// After a stop: input records never read, when the total is known.
    unread: Option<usize>,
}

/// Where rejected records go: stderr, and the rejects file if asked for.
struct Rejects {
    file: Option<File>,
}

impl Rejects {
    fn record(
        &mut self,
        tally: &mut Tally,
        position: &str,
        reason: &str,
        raw: &str,
    ) -> anyhow::Result<()> {
        eprintln!("rejected {position}: {reason}");
        if let Some(file) = self.file.as_mut() {
            writeln!(file, "{raw}").context("could not write the rejects file")?;
        }
        tally.rejected += 1;
        Ok(())
    }
}

type Engined = Engine<SledStore, HttpServices>;

/// How long attempts in flight may take to finish once a stop was asked.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a wait for the next finished registration looks whether a
/// stop was asked.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What waiting for the next finished registration gave.
enum Next {
    Done(Box<Done>),
    /// No registration is under way.
    Empty,
    /// A stop was asked and its grace period ran out.
    GaveUp,
}

/// Waits for finished registrations, watching for a stop: after one, the
/// registrations in flight get [`STOP_GRACE`] in all.
#[derive(Default)]
struct Draining {
    deadline: Option<tokio::time::Instant>,
}

impl Draining {
    async fn next(
        &mut self,
        tasks: &mut JoinSet<Done>,
        stopped: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<Next> {
        loop {
            let wait = if stopped.load(Ordering::SeqCst) {
                let until = *self
                    .deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + STOP_GRACE);
                match tokio::time::timeout_at(until, tasks.join_next()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(Next::GaveUp),
                }
            } else {
                match tokio::time::timeout(STOP_POLL, tasks.join_next()).await {
                    Ok(next) => next,
                    Err(_) => continue,
                }
            };
            return Ok(match joined(wait)? {
                Some(done) => Next::Done(Box::new(done)),
                None => Next::Empty,
            });
        }
    }
}

/// What a registration task hands back.
struct Done {
    record: usize,
    position: String,
    raw: String,
    outcome: Result<Saga, EngineError>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let signals = Signals::listen();
    let config = args.store.load_config()?;
    let records = input::open(&args.input)?;
    let mut rejects = Rejects {
        file: match &args.rejects {
            Some(path) => Some(File::create(path).with_context(|| {
                format!("could not create the rejects file {}", path.display())
            })?),
            None => None,
        },
    };

    let running = start(&args.store, &args.services, &config).await?;
    let engine = running.engine.clone();
    let stopped = stop_on_signal(signals, &engine);
    let started = Instant::now();

    // What an earlier process left unfinished, listed before this run
    // adds sagas of its own, goes on beside the input.
    let earlier = engine.store().unfinished()?;
    let resume = {
        let engine = engine.clone();
        tokio::spawn(async move { resume_ids(&engine, earlier).await })
    };

    let mut tally = Tally::default();
    let total = input::count(&args.input);
    let shown = {
        let engine = engine.clone();
        progress::Progress::start(total, tally.progress.clone(), move || engine.waiting())
    };
    let mut tasks = JoinSet::new();
    let window = engine_window(&args.services, &config);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());

    let mut draining = Draining::default();
    let mut last_read = 0;
    'input: for (record, item) in records {
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        let (registration, raw, position) = match item {
            Ok(accepted) => accepted,
            Err(rejected) => {
                last_read = record;
                rejects.record(
                    &mut tally,
                    &rejected.position,
                    &rejected.reason,
                    &rejected.raw,
                )?;
                continue;
            }
        };
        while tasks.len() >= window {
            match draining.next(&mut tasks, &stopped).await? {
                Next::Done(done) => collect(Some(*done), &mut out, &mut tally, &mut rejects)?,
                Next::Empty => break,
                Next::GaveUp => break 'input,
            }
        }
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        last_read = record;
        let engine = engine.clone();
        tasks.spawn(async move {
            let outcome = register(&engine, registration).await;
            Done {
                record,
                position,
                raw,
                outcome,
            }
        });
    }
    loop {
        match draining.next(&mut tasks, &stopped).await? {
            Next::Done(done) => collect(Some(*done), &mut out, &mut tally, &mut rejects)?,
            Next::Empty => break,
            Next::GaveUp => {
                tally.unfinished += tasks.len();
                break;
            }
        }
    }
    if stopped.load(Ordering::SeqCst) {
        tally.unread = total.map(|n| n.saturating_sub(last_read));
    }
    out.flush().context("could not write results to stdout")?;
    drop(shown);

    let resumed = if stopped.load(Ordering::SeqCst) {
        tokio::time::timeout(STOP_GRACE, resume).await.ok()
    } else {
        Some(resume.await)
    };
    match resumed.unwrap_or(Ok((0, 0))) {
        Ok((resumed, unfinished)) => {
            tally.resumed = resumed;
            tally.unfinished += unfinished;
        }
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
    Ok(exit_code(&tally, stopped.load(Ordering::SeqCst)))
}

fn exit_code(tally: &Tally, interrupted: bool) -> u8 {
    if tally.errors > 0 {
        exit::ERROR
    } else if interrupted {
        exit::INTERRUPTED
    } else if tally.rejected > 0 {
        exit::REJECTED
    } else if tally.by_status.get("Failed").is_some_and(|n| *n > 0) {
        exit::FAILED
    } else {
        exit::OK
    }
}

/// Drives the given sagas on; returns how many finished and how many
/// were left for later.
async fn resume_ids(engine: &Engined, ids: Vec<regsaga::SagaId>) -> (usize, usize) {
    let mut tasks = JoinSet::new();
    for id in ids {
        let engine = engine.clone();
        tasks.spawn(async move { (id, engine.run(id).await) });
    }
    let (mut resumed, mut unfinished) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(_))) => resumed += 1,
            Ok((_, Err(EngineError::Stopped(_)))) => unfinished += 1,
            Ok((id, Err(error))) => {
                warn!(saga.id = %id, %error, "saga not resumed");
                unfinished += 1;
            }
            Err(error) => warn!(%error, "resume task failed"),
        }
    }
    (resumed, unfinished)
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
    engine: &Engined,
    registration: regsaga::Registration,
) -> Result<Saga, EngineError> {
    let submitted = engine.submit(registration).await?;
    engine.run(submitted.id).await
}

fn joined(joined: Option<Result<Done, tokio::task::JoinError>>) -> anyhow::Result<Option<Done>> {
    joined.transpose().context("a registration task failed")
}

fn collect(
    done: Option<Done>,
    out: &mut impl Write,
    tally: &mut Tally,
    rejects: &mut Rejects,
) -> anyhow::Result<()> {
    let Some(Done {
        record,
        position,
        raw,
        outcome,
    }) = done
    else {
        return Ok(());
    };
    match outcome {
        Ok(saga) => {
            let result = RegistrationResult::from(&saga);
            tally.progress.done.fetch_add(1, Ordering::Relaxed);
            if saga.state == regsaga::State::Finished(regsaga::FinalStatus::Failed) {
                tally.progress.failed.fetch_add(1, Ordering::Relaxed);
            }
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
        // The same e-mail with other details is a problem of the input.
        Err(conflict @ EngineError::Conflict { .. }) => {
            rejects.record(tally, &position, &conflict.to_string(), &raw)?;
        }
        Err(EngineError::Stopped(_)) => tally.unfinished += 1,
        Err(error) => {
            eprintln!("error in record {record}: {error}");
            tally.errors += 1;
        }
    }
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
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
        "regsaga: {} in {secs:.2} s ({rate:.0}/s): {}",
        plural(done, "registration", "registrations"),
        statuses.join(", ")
    );
    if tally.rejected > 0 {
        line.push_str(&format!(
            "; {} rejected",
            plural(tally.rejected, "record", "records")
        ));
    }
    if tally.errors > 0 {
        line.push_str(&format!("; {} could not be processed", tally.errors));
    }
    if tally.resumed > 0 {
        let sagas = plural(tally.resumed, "unfinished saga", "unfinished sagas");
        line.push_str(&format!("; {sagas} from an earlier run finished"));
    }
    if tally.unfinished > 0 {
        let sagas = plural(tally.unfinished, "saga", "sagas");
        line.push_str(&format!(
            "; {sagas} left unfinished: `regsaga resume` finishes them"
        ));
    }
    match tally.unread {
        Some(0) => {}
        Some(n) => line.push_str(&format!(
            "; {} not read: run the same command again to register them",
            plural(n, "input record", "input records")
        )),
        None if tally.unfinished > 0 => line
            .push_str("; input records after the stop were not read: run the same command again"),
        None => {}
    }
    eprintln!("{line}");
}
