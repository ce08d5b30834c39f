//! `regsaga sandbox`: serve the sandbox services until interrupted.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use regsaga::sandbox::{Fault, Options, Sandbox};

use super::exit;

#[derive(Args)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,

    /// Inject a fault: SERVICE:KIND[@RATE], for example sms:timeout@0.1.
    /// Services: profile, payment, email, sms, activity. Kinds: http-500,
    /// http-503, http-429, timeout, decline (payment only). Repeatable.
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<Fault>,

    /// Seed of the fault draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub async fn sandbox(args: SandboxArgs) -> anyhow::Result<u8> {
    let signals = super::Signals::listen();
    let options = Options {
        faults: args.faults,
        seed: args.seed,
    };
    let sandbox = Sandbox::start(args.addr, options)
        .await
        .with_context(|| format!("could not listen on {}", args.addr))?;

    // The URL on stdout, so scripts can read the port chosen for port 0.
    writeln!(std::io::stdout(), "{}", sandbox.url())?;
    eprintln!(
        "regsaga: sandbox services at {}; Ctrl-C or SIGTERM stops",
        sandbox.url()
    );

    signals.recv().await;
    sandbox.shutdown().await;
    Ok(exit::OK)
}
