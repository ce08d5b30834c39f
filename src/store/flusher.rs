//! Group commit: many writers, one flush.
//!
//! A writer inserts its record into sled, then calls [`Flusher::commit`],
//! which hands it a ticket and waits until a flush that began after its
//! insert has returned. One flusher task runs the flushes, each on tokio's
//! blocking pool: a flush takes every ticket issued before it began, so
//! writers that arrive while a flush runs share the next one. Under load,
//! one `fdatasync` covers many transitions; alone, a writer waits for
//! exactly one flush.
//!
//! The flush runs through `spawn_blocking` rather than on a thread of our
//! own so that tokio knows work is under way: on a paused test clock, time
//! does not jump ahead while a flush runs.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::{watch, Notify};

use super::{Durability, Error, Stats};

/// What the flusher has made durable so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every ticket up to and including this one is durable.
    durable: u64,
    /// Set once a flush fails; every later commit fails with it.
    failed: Option<String>,
}

/// Owned by the [`Flusher`]; the task holds it only while flushing, so
/// dropping the store closes sled at once.
struct Shared {
    db: sled::Db,
    /// The log file to `fdatasync`, in power mode.
    log: Option<File>,
    issued: AtomicU64,
    wake: Arc<Notify>,
    progress: watch::Sender<Progress>,
    commits: AtomicU64,
    flushes: AtomicU64,
    fsyncs: AtomicU64,
    /// Commit latencies in microseconds, kept only when asked for.
    latencies: Option<Mutex<Vec<u32>>>,
}

/// The group-commit flusher of one sled database.
pub struct Flusher {
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

impl Flusher {
    /// A flusher for `db`, whose log file is `log`. Its task starts with
    /// the first commit, on that commit's runtime.
    ///
    /// # Errors
    ///
    /// The log file cannot be opened (power mode only).
    pub fn new(
        db: sled::Db,
        log: &Path,
        durability: Durability,
        record_latencies: bool,
    ) -> std::io::Result<Flusher> {
        let log = match durability {
            Durability::Power => Some(File::open(log)?),
            Durability::Process => None,
        };
        let shared = Arc::new(Shared {
            db,
            log,
            issued: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            progress: watch::Sender::new(Progress::default()),
            commits: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            latencies: record_latencies.then(|| Mutex::new(Vec::new())),
        });
        Ok(Flusher {
            shared,
            started: OnceLock::new(),
        })
    }

    /// Waits until everything inserted before this call is durable.
    ///
    /// # Errors
    ///
    /// A flush failed, now or earlier.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the wait, not the flush.
    pub async fn commit(&self) -> Result<(), Error> {
        self.started.get_or_init(|| {
            let wake = Arc::clone(&self.shared.wake);
            tokio::spawn(run(Arc::downgrade(&self.shared), wake));
        });
        let shared = &self.shared;
        let started = std::time::Instant::now();
        let mut progress = shared.progress.subscribe();
        let ticket = shared.issued.fetch_add(1, Ordering::SeqCst) + 1;
        shared.commits.fetch_add(1, Ordering::Relaxed);
        shared.wake.notify_one();

        let seen = progress
            .wait_for(|p| p.durable >= ticket || p.failed.is_some())
            .await
            .map_err(|_| Error::Flush("the flusher has stopped".into()))?;
        if let Some(reason) = &seen.failed {
            return Err(Error::Flush(reason.clone()));
        }
        if let Some(latencies) = &shared.latencies {
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(micros);
        }
        Ok(())
    }

    /// Commit latencies so far, if they are being recorded.
    pub fn latencies(&self) -> Vec<std::time::Duration> {
        let Some(latencies) = &self.shared.latencies else {
            return Vec::new();
        };
        let micros = latencies.lock().unwrap_or_else(|p| p.into_inner());
        micros
            .iter()
            .map(|m| std::time::Duration::from_micros(u64::from(*m)))
            .collect()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            flushes: self.shared.flushes.load(Ordering::Relaxed),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // The task finds the store gone and ends.
        self.shared.wake.notify_one();
    }
}

/// The flusher task: wait for a ticket, flush, publish.
async fn run(shared: Weak<Shared>, wake: Arc<Notify>) {
    let mut durable = 0;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.issued.load(Ordering::SeqCst) == durable {
            drop(shared);
            wake.notified().await;
            continue;
        }

        // Every ticket issued by now belongs to an insert that finished
        // before it, so one flush covers them all.
        let target = shared.issued.load(Ordering::SeqCst);
        let flusher = Arc::clone(&shared);
        let flushed = tokio::task::spawn_blocking(move || flush(&flusher))
            .await
            .unwrap_or_else(|e| Err(format!("the flush task failed: {e}")));
        match flushed {
            Ok(()) => {
                durable = target;
                shared.progress.send_modify(|p| p.durable = target);
            }
            Err(reason) => {
                shared.progress.send_modify(|p| p.failed = Some(reason));
                return;
            }
        }
    }
}

/// The one place that makes writes durable: sled's flush, then, in power
/// mode, `fdatasync` on the log file, which also empties the device cache.
fn flush(shared: &Shared) -> Result<(), String> {
    shared.db.flush().map_err(|e| e.to_string())?;
    shared.flushes.fetch_add(1, Ordering::Relaxed);
    if let Some(file) = &shared.log {
        file.sync_data().map_err(|e| e.to_string())?;
        shared.fsyncs.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
