//! `regsaga bench`: how many registrations per second, at what latency,
//! CPU and memory, with every transition durable before the next step.
//!
//! Each run uses a fresh store in a temporary folder (removed afterwards)
//! unless `--store` names one, and synthetic registrations shaped like the
//! sample data: 60% with a payment, 70% with a phone number.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use comfy_table::{presets, Table};
use regsaga::registration::{Payment, PaymentMethod, Preferences, Registration};
use regsaga::sandbox::{Options as SandboxOptions, Sandbox};
use regsaga::services::InProcessServices;
use regsaga::store::Durability;
use regsaga::{Engine, HttpServices, Options, Services, SledStore, Store};
use serde::Serialize;
use tokio::task::JoinSet;

use super::exit;

#[derive(Args)]
pub struct BenchArgs {
    /// Registrations to run.
    #[arg(long, default_value_t = 10_000)]
    registrations: usize,

    /// Registrations (and attempts) in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,

    /// `in-process` (no HTTP: the engine and store alone), `sandbox`
    /// (the sandbox in this process, over loopback HTTP), or a base URL.
    #[arg(long, default_value = "in-process")]
    services: String,

    /// `power` (fdatasync after every flush) or `process`.
    #[arg(long, value_parser = parse_durability, default_value = "power")]
    durability: Durability,

    /// Keep the store here instead of a temporary folder.
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,

    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_durability(text: &str) -> Result<Durability, String> {
    match text {
        "power" => Ok(Durability::Power),
        "process" => Ok(Durability::Process),
        other => Err(format!(
            "{other:?} is not a durability; use power or process"
        )),
    }
}

/// What one run measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    registrations: usize,
    concurrency: usize,
    services: String,
    durability: String,
    seconds: f64,
    registrations_per_second: f64,
    steps_per_second: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    commit_p50_ms: f64,
    commit_p99_ms: f64,
    commits_per_registration: f64,
    flushes_per_registration: f64,
    fsyncs_per_registration: f64,
    cpu_ms_per_registration: f64,
    peak_rss_mib: f64,
    store_bytes_per_registration: f64,
}

/// What the registrations themselves yielded.
struct Measured {
    elapsed: Duration,
    latencies: Vec<Duration>,
    steps: usize,
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(args.registrations > 0, "--registrations must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let temporary = args.store.is_none();
    let path = match &args.store {
        Some(path) => path.clone(),
        None => std::env::temp_dir().join(format!("regsaga-bench-{}", uuid::Uuid::new_v4())),
    };
    let store = SledStore::open_with(&path, args.durability, true)?;
    let cpu_before = cpu_time();

    let (measured, store) = match args.services.as_str() {
        "in-process" => measure(store, InProcessServices::default(), &args).await?,
        "sandbox" => {
            let sandbox = Sandbox::start("127.0.0.1:0".parse()?, SandboxOptions::default())
                .await
                .context("could not start the sandbox")?;
            let result = measure(store, http(&sandbox.url())?, &args).await;
            sandbox.shutdown().await;
            result?
        }
        url => measure(store, http(url)?, &args).await?,
    };

    let cpu = cpu_time().saturating_sub(cpu_before);
    let report = report(&args, &measured, &store, cpu);
    drop(store);
    let size = dir_size(&path);
    let report = Report {
        store_bytes_per_registration: size as f64 / args.registrations as f64,
        ..report
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&path);
    }

    print(&report, args.json)?;
    Ok(exit::OK)
}

fn http(url: &str) -> anyhow::Result<HttpServices> {
    let config = regsaga::config::Config::default();
    let endpoints = config
        .endpoints(Some(url))?
        .context("a services URL is needed")?;
    Ok(HttpServices::new(endpoints, |_| Duration::from_secs(10))?)
}

async fn measure<X: Services>(
    store: SledStore,
    services: X,
    args: &BenchArgs,
) -> anyhow::Result<(Measured, SledStore)> {
    let options = Options {
        concurrency: args.concurrency,
        ..Options::default()
    };
    let engine = Engine::new(store, services, options)?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();

    let mut tasks = JoinSet::new();
    let mut latencies = Vec::with_capacity(args.registrations);
    let mut steps = 0;
    for i in 0..args.registrations {
        while tasks.len() >= args.concurrency {
            let (latency, attempts) = joined(tasks.join_next().await)?;
            latencies.push(latency);
            steps += attempts;
        }
        let engine = engine.clone();
        let registration = synthetic(&run[..8], i);
        tasks.spawn(async move {
            let t0 = Instant::now();
            let saga = engine.register(registration).await?;
            anyhow::Ok((t0.elapsed(), saga.history.len()))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (latency, attempts) = joined(Some(done))?;
        latencies.push(latency);
        steps += attempts;
    }
    let elapsed = started.elapsed();

    let store = into_store(engine)?;
    Ok((
        Measured {
            elapsed,
            latencies,
            steps,
        },
        store,
    ))
}

type Joined = Option<Result<anyhow::Result<(Duration, usize)>, tokio::task::JoinError>>;

fn joined(joined: Joined) -> anyhow::Result<(Duration, usize)> {
    joined
        .context("no registration task left")?
        .context("a registration task failed")?
}

/// Takes the store back out of the engine once every task is done.
fn into_store<X: Services>(engine: Engine<SledStore, X>) -> anyhow::Result<SledStore> {
    engine
        .into_store()
        .map_err(|_| anyhow::anyhow!("the engine is still in use"))
}

/// Registration `i` of a run: unique e-mail, and the sample's mix of
/// payments and phone numbers.
fn synthetic(run: &str, i: usize) -> Registration {
    let payment = (i % 10 < 6).then(|| Payment {
        amount_minor: 500 + (i as u64 % 10_000),
        currency: "usd".to_owned(),
        method: PaymentMethod::CreditCard,
    });
    Registration {
        email: format!("bench-{run}-{i}@bench.example"),
        full_name: format!("Bench Person {i}"),
        phone: (i % 10 < 7).then(|| format!("+1202{:07}", i % 10_000_000)),
        payment,
        preferences: Preferences::default(),
    }
}

fn report(args: &BenchArgs, m: &Measured, store: &SledStore, cpu: Duration) -> Report {
    let n = args.registrations as f64;
    let secs = m.elapsed.as_secs_f64();
    let stats = store.stats();
    let commits = store.commit_latencies();
    Report {
        registrations: args.registrations,
        concurrency: args.concurrency,
        services: args.services.clone(),
        durability: format!("{:?}", args.durability).to_lowercase(),
        seconds: secs,
        registrations_per_second: n / secs,
        steps_per_second: m.steps as f64 / secs,
        latency_p50_ms: percentile(&m.latencies, 0.50),
        latency_p99_ms: percentile(&m.latencies, 0.99),
        commit_p50_ms: percentile(&commits, 0.50),
        commit_p99_ms: percentile(&commits, 0.99),
        commits_per_registration: stats.commits as f64 / n,
        flushes_per_registration: stats.flushes as f64 / n,
        fsyncs_per_registration: stats.fsyncs as f64 / n,
        cpu_ms_per_registration: cpu.as_secs_f64() * 1000.0 / n,
        peak_rss_mib: peak_rss_bytes() as f64 / (1024.0 * 1024.0),
        store_bytes_per_registration: 0.0,
    }
}

fn percentile(values: &[Duration], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    let usage = rusage();
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The peak resident set size of this process.
fn peak_rss_bytes() -> u64 {
    // Linux reports ru_maxrss in KiB.
    (rusage().ru_maxrss.max(0) as u64) * 1024
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage only writes into the struct we pass, which is
    // plain old data for which all-zero bytes are a valid value.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    use std::io::Write;

    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
        return Ok(());
    }
    let r = report;
    let rows = [
        ("registrations", r.registrations.to_string()),
        ("concurrency", r.concurrency.to_string()),
        ("services", r.services.clone()),
        ("durability", r.durability.clone()),
        ("seconds", format!("{:.2}", r.seconds)),
        (
            "registrations per second",
            format!("{:.0}", r.registrations_per_second),
        ),
        ("steps per second", format!("{:.0}", r.steps_per_second)),
        (
            "registration latency p50",
            format!("{:.2} ms", r.latency_p50_ms),
        ),
        (
            "registration latency p99",
            format!("{:.2} ms", r.latency_p99_ms),
        ),
        ("commit latency p50", format!("{:.2} ms", r.commit_p50_ms)),
        ("commit latency p99", format!("{:.2} ms", r.commit_p99_ms)),
        (
            "commits per registration",
            format!("{:.2}", r.commits_per_registration),
        ),
        (
            "flushes per registration",
            format!("{:.3}", r.flushes_per_registration),
        ),
        (
            "fsyncs per registration",
            format!("{:.3}", r.fsyncs_per_registration),
        ),
        (
            "CPU per registration",
            format!("{:.3} ms", r.cpu_ms_per_registration),
        ),
        ("peak memory (RSS)", format!("{:.1} MiB", r.peak_rss_mib)),
        (
            "store per registration",
            format!("{:.0} bytes", r.store_bytes_per_registration),
        ),
    ];
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(["MEASURE", "VALUE"]);
    for (name, value) in rows {
        table.add_row([name.to_owned(), value]);
    }
    writeln!(out, "{table}")?;
    Ok(())
}
