//! Command-line parsing, logging, and what every command shares.
//!
//! Data goes to stdout, messages to stderr. Each subcommand lives in its
//! own file and calls the library's public API only.

mod bench;
mod exit;
mod input;
mod inspect;
mod progress;
mod resume;
mod run;
mod sandbox;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use regsaga::config::Config;
use regsaga::sandbox::{self as sbx, Fault, Sandbox};
use regsaga::store::Durability;
use regsaga::{Engine, HttpServices, Options, SledStore};
use tracing::info;

/// Registers users as crash-safe sagas.
#[derive(Parser)]
#[command(name = "regsaga", version, about, after_help = exit::HELP)]
struct Cli {
    /// More log output: -v for debug, -vv for trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Register every record of an input file (NDJSON or a JSON array).
    #[command(after_help = exit::HELP)]
    Run(run::RunArgs),
    /// Drive every unfinished saga in the store to its end.
    #[command(after_help = exit::HELP)]
    Resume(resume::ResumeArgs),
    /// Look at the sagas in a store.
    #[command(subcommand, after_help = exit::HELP)]
    Inspect(inspect::InspectCommand),
    /// Serve the sandbox services alone.
    #[command(after_help = exit::HELP)]
    Sandbox(sandbox::SandboxArgs),
    /// Take registrations over HTTP until stopped.
    #[command(after_help = exit::HELP)]
    Serve(serve::ServeArgs),
    /// Measure throughput, latency, CPU and memory on a fresh store.
    #[command(after_help = exit::HELP)]
    Bench(bench::BenchArgs),
}

/// Ctrl-C and SIGTERM, listened for from the moment this is made, so a
/// signal that arrives while a command starts up is not lost.
pub struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves at the first Ctrl-C or SIGTERM.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        {
            let interrupt = async {
                match self.interrupt.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let terminate = async {
                match self.terminate.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = interrupt => {}
                _ = terminate => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Stops `engine` at the first signal; the returned flag says whether
/// that happened.
fn stop_on_signal<S, X>(
    signals: Signals,
    engine: &Engine<S, X>,
) -> std::sync::Arc<std::sync::atomic::AtomicBool>
where
    S: regsaga::Store,
    X: regsaga::Services,
{
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (engine, set) = (engine.clone(), flag.clone());
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("regsaga: stopping: attempts in flight finish, nothing new starts");
        set.store(true, std::sync::atomic::Ordering::SeqCst);
        engine.stop();
    });
    flag
}

/// Where the store is and how it is configured.
#[derive(Args, Clone)]
struct StoreArgs {
    /// The store directory [default: store.path from --config, else ./regsaga.db].
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,

    /// A TOML configuration file (see docs/CONFIG.md).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

impl StoreArgs {
    fn load_config(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(path) => Ok(Config::load(path)?),
            None => Ok(Config::default()),
        }
    }

    fn store_path(&self, config: &Config) -> PathBuf {
        self.store
            .clone()
            .or_else(|| config.store.path.clone())
            .unwrap_or_else(|| PathBuf::from("regsaga.db"))
    }
}

/// How `run` and `resume` reach the services.
#[derive(Args, Clone)]
struct ServiceArgs {
    /// Send every service to this base URL (for example a `regsaga
    /// sandbox`) instead of starting the embedded sandbox.
    #[arg(long, value_name = "URL")]
    services: Option<String>,

    /// Attempts in flight at once [default: concurrency from --config, else 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: Option<u32>,

    /// Inject a fault into the embedded sandbox: SERVICE:KIND[@RATE],
    /// for example payment:http-503@0.3. Repeatable.
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<Fault>,

    /// Seed of the sandbox's faults and of the retry jitter.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

/// An engine over HTTP services, and the sandbox it may have started.
struct Running {
    engine: Engine<SledStore, HttpServices>,
    sandbox: Option<Sandbox>,
}

impl Running {
    async fn shutdown(self) {
        if let Some(sandbox) = self.sandbox {
            sandbox.shutdown().await;
        }
    }
}

/// Opens the store, finds or starts the services, and builds the engine.
async fn start(
    store: &StoreArgs,
    services: &ServiceArgs,
    config: &Config,
) -> anyhow::Result<Running> {
    // Everything that can be refused is checked before the store is
    // opened, so a refused command leaves no store behind.
    let endpoints = config.endpoints(services.services.as_deref())?;
    anyhow::ensure!(
        endpoints.is_none() || services.faults.is_empty(),
        "--fault applies to the embedded sandbox only, and services are configured; \
         pass --fault to `regsaga sandbox` instead"
    );
    let crash = crash_point()?;
    let path = store.store_path(config);
    let store = open_store(&path, config.store.durability)?;

    let (endpoints, sandbox) = match endpoints {
        Some(endpoints) => (endpoints, None),
        None => {
            let options = sbx::Options {
                faults: services.faults.clone(),
                seed: services.seed.unwrap_or(0),
            };
            let addr = "127.0.0.1:0".parse().context("loopback address")?;
            let sandbox = Sandbox::start(addr, options)
                .await
                .context("could not start the embedded sandbox services")?;
            info!(url = %sandbox.url(), "no services configured: started the sandbox services");
            (regsaga::Endpoints::all_at(&sandbox.url()), Some(sandbox))
        }
    };

    let policies = &config.retry;
    let http = HttpServices::new(endpoints, |service| {
        policies.for_service(service).connect_timeout
    })
    .context("could not set up the HTTP client")?;
    let options = Options {
        policies: config.retry.clone(),
        concurrency: services
            .concurrency
            .map(|c| c as usize)
            .or(config.concurrency)
            .unwrap_or(regsaga::engine::DEFAULT_CONCURRENCY),
        jitter_seed: services.seed,
        crash,
    };
    let engine = Engine::new(store, http, options)?;
    Ok(Running { engine, sandbox })
}

/// The crash test hook: `REGSAGA_CRASH_AT=POINT[:STEP]`.
fn crash_point() -> anyhow::Result<Option<regsaga::crash::CrashAt>> {
    match std::env::var("REGSAGA_CRASH_AT") {
        Ok(spec) if !spec.is_empty() => Ok(Some(spec.parse()?)),
        _ => Ok(None),
    }
}

fn open_store(path: &Path, durability: Durability) -> anyhow::Result<SledStore> {
    Ok(SledStore::open(path, durability)?)
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let kind = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => Some(io.kind()),
            None => cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;

    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "warn,regsaga::cli=info",
        (false, 1) => "info,regsaga=debug",
        (false, _) => "info,regsaga=trace",
    };
    let filter = EnvFilter::try_from_env("REGSAGA_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return exit::code(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_logging(&cli);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return exit::code(exit::ERROR);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Resume(args) => resume::resume(args).await,
            Command::Inspect(command) => inspect::inspect(command).await,
            Command::Sandbox(args) => sandbox::sandbox(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::Serve(args) => serve::serve(args).await,
        }
    });

    match result {
        Ok(code) => exit::code(code),
        // A reader that stopped early (`| head`) is not an error.
        Err(error) if is_broken_pipe(&error) => exit::code(exit::OK),
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::code(exit::ERROR)
        }
    }
}
