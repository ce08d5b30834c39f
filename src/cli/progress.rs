//! Progress of a run: a bar when stderr is a terminal, otherwise one line
//! every few seconds, so a long run in a log file shows it is alive.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain progress line is written.
const EVERY: Duration = Duration::from_secs(5);

/// Counts shared with the task that shows them.
#[derive(Default)]
pub struct Counts {
    pub done: AtomicUsize,
    pub failed: AtomicUsize,
}

/// Shows progress until dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts showing the progress of `total` records (if known), with
    /// `waiting` telling how many sagas wait for a retry.
    pub fn start(
        total: Option<usize>,
        counts: Arc<Counts>,
        waiting: impl Fn() -> usize + Send + 'static,
    ) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| bar(total));
        let shown = bar.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let tick = if shown.is_some() {
                Duration::from_millis(200)
            } else {
                EVERY
            };
            loop {
                tokio::time::sleep(tick).await;
                let line = line(&counts, waiting(), total, started.elapsed());
                match &shown {
                    Some(bar) => {
                        bar.set_position(counts.done.load(Ordering::Relaxed) as u64);
                        // The bar shows the count; the message the rest.
                        let rest = line.split_once(" done, ").map_or(line.as_str(), |(_, r)| r);
                        bar.set_message(rest.to_owned());
                    }
                    None => eprintln!("regsaga: {line}"),
                }
            }
        });
        Progress { task, bar }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn bar(total: Option<usize>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n as u64),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn line(counts: &Counts, waiting: usize, total: Option<usize>, elapsed: Duration) -> String {
    let done = counts.done.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let eta = match total {
        Some(n) if rate > 0.0 && n > done => {
            format!(", about {:.0} s left", (n - done) as f64 / rate)
        }
        _ => String::new(),
    };
    let of = total.map(|n| format!("/{n}")).unwrap_or_default();
    format!("{done}{of} done, {failed} failed, {waiting} waiting to retry, {rate:.0}/s{eta}")
}
