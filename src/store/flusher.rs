//! Group commit: many writers, one flush.
//!
//! A writer inserts its record into sled, then calls [`Flusher::commit`],
//! which hands it a ticket and waits until a flush that began after its
//! insert has returned. One background thread runs the flushes: each takes
//! every ticket issued so far, so writers that arrive while a flush runs
//! share the next one. Under load, one `fsync` covers many transitions;
//! alone, a writer waits for exactly one flush.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::{Durability, Error, Stats};

/// What the flusher thread has made durable so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every ticket up to and including this one is durable.
    durable: u64,
    /// Set once a flush fails; every later commit fails with it.
    failed: Option<String>,
}

struct Shared {
    issued: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    commits: AtomicU64,
    flushes: AtomicU64,
    fsyncs: AtomicU64,
}

/// The group-commit flusher of one sled database.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flusher thread for `db`, whose log file is `log`.
    pub fn start(db: sled::Db, log: &Path, durability: Durability) -> std::io::Result<Flusher> {
        let log = match durability {
            Durability::Power => Some(File::open(log)?),
            Durability::Process => None,
        };
        let shared = Arc::new(Shared {
            issued: AtomicU64::new(0),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
            commits: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
        });

        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("regsaga-flusher".into())
            .spawn(move || run(&thread_shared, &db, log.as_ref()))?;
        Ok(Flusher {
            shared,
            thread: Some(thread),
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
        let shared = &self.shared;
        let mut progress = shared.progress.subscribe();
        let ticket = shared.issued.fetch_add(1, Ordering::SeqCst) + 1;
        shared.commits.fetch_add(1, Ordering::Relaxed);

        // Taking the lock orders this wake-up after the thread's check.
        drop(shared.stop.lock().unwrap_or_else(|p| p.into_inner()));
        shared.wake.notify_one();

        let seen = progress
            .wait_for(|p| p.durable >= ticket || p.failed.is_some())
            .await
            .map_err(|_| Error::Flush("the flusher has stopped".into()))?;
        match &seen.failed {
            Some(reason) => Err(Error::Flush(reason.clone())),
            None => Ok(()),
        }
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
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flusher thread: sleep until a ticket is waiting, flush, publish.
fn run(shared: &Shared, db: &sled::Db, log: Option<&File>) {
    let mut durable = 0;
    loop {
        let mut stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
        while !*stop && shared.issued.load(Ordering::SeqCst) == durable {
            stop = shared.wake.wait(stop).unwrap_or_else(|p| p.into_inner());
        }
        let stopping = *stop;
        drop(stop);

        // Every ticket issued by now belongs to an insert that finished
        // before it, so one flush covers them all.
        let target = shared.issued.load(Ordering::SeqCst);
        if target == durable && stopping {
            return;
        }
        match flush(shared, db, log) {
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
fn flush(shared: &Shared, db: &sled::Db, log: Option<&File>) -> Result<(), String> {
    db.flush().map_err(|e| e.to_string())?;
    shared.flushes.fetch_add(1, Ordering::Relaxed);
    if let Some(file) = log {
        file.sync_data().map_err(|e| e.to_string())?;
        shared.fsyncs.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
