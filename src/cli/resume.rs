//! `regsaga resume`: drive every unfinished saga to its end.
//!
//! With nothing unfinished it says so and calls no service; otherwise it
//! prints each resumed saga's result as NDJSON on stdout.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use regsaga::{RegistrationResult, SledStore, Store};

use super::{exit, start, stop_on_signal, ServiceArgs, Signals, StoreArgs};

#[derive(Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    services: ServiceArgs,
}

pub async fn resume(args: ResumeArgs) -> anyhow::Result<u8> {
    let signals = Signals::listen();
    let config = args.store.load_config()?;
    let path = args.store.store_path(&config);

    // Look before starting anything: a store with nothing to do must not
    // cause a single request.
    {
        let store = SledStore::open_existing(&path, config.store.durability)?;
        if still_unfinished(&store)? == 0 {
            eprintln!(
                "regsaga: nothing to resume: every saga in {} is finished",
                path.display()
            );
            return Ok(exit::OK);
        }
    }

    let running = start(&args.store, &args.services, &config).await?;
    let stopped = stop_on_signal(signals, &running.engine);
    let finished = running.engine.resume().await?;
    let remaining = still_unfinished(running.engine.store())?;
    running.shutdown().await;

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for saga in &finished {
        serde_json::to_writer(&mut out, &RegistrationResult::from(saga))
            .context("could not write results to stdout")?;
        writeln!(out).context("could not write results to stdout")?;
    }
    out.flush().context("could not write results to stdout")?;

    eprintln!("regsaga: resumed {} sagas to their end", finished.len());
    if stopped.load(std::sync::atomic::Ordering::SeqCst) {
        eprintln!("regsaga: {remaining} sagas left unfinished; `regsaga resume` finishes them");
        return Ok(exit::INTERRUPTED);
    }
    if remaining > 0 {
        eprintln!("regsaga: {remaining} sagas could not be resumed; see the warnings above");
        return Ok(exit::ERROR);
    }
    let failed = finished
        .iter()
        .any(|s| s.state == regsaga::State::Finished(regsaga::FinalStatus::Failed));
    Ok(if failed { exit::FAILED } else { exit::OK })
}

/// Sagas not finished. The store's list of unfinished sagas may still
/// name one whose last write landed just before a crash: it is finished.
pub(super) fn still_unfinished(store: &SledStore) -> anyhow::Result<usize> {
    let mut count = 0;
    for id in store.unfinished()? {
        // A saga that cannot be read counts as unfinished: it needs an
        // operator, and the warning names it.
        let finished = store
            .load(id)
            .ok()
            .flatten()
            .is_some_and(|s| s.state.is_finished());
        if !finished {
            count += 1;
        }
    }
    Ok(count)
}
