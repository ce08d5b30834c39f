//! The sled backend.
//!
//! Three trees: `sagas` (saga id → versioned record), `emails` (normalised
//! e-mail → saga id) and `unfinished` (saga id → nothing). A new saga is
//! written to all three in one sled transaction. Later saves touch only
//! `sagas`, and a finishing save then removes the id from `unfinished`;
//! sled recovers a prefix of its log, so `unfinished` is always a superset
//! of the sagas that are not finished.
//!
//! An `insert` into sled is in memory until a flush returns. Every write
//! method here returns only after [`Flusher::commit`], whose flush covers
//! the write.

use std::path::{Path, PathBuf};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::flusher::Flusher;
use super::{codec, Created, Durability, Error, Stats, Store};
use crate::saga::{Saga, SagaId};

const LOCK_RETRIES: u32 = 10;
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
const LOCK_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// A store in a sled database directory. One process at a time.
pub struct SledStore {
    path: PathBuf,
    sagas: sled::Tree,
    emails: sled::Tree,
    unfinished: sled::Tree,
    flusher: Flusher,
    _db: sled::Db,
}

impl SledStore {
    /// Opens the store at `path`, creating it if it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another process has it open, [`Error::Corrupt`]
    /// if its files cannot be read, [`Error::Open`] otherwise.
    pub fn open(path: &Path, durability: Durability) -> Result<SledStore, Error> {
        Self::open_with(path, durability, false)
    }

    /// As [`SledStore::open`]; with `record_latencies`, every commit's
    /// latency is kept for [`SledStore::commit_latencies`] (benchmarks).
    ///
    /// # Errors
    ///
    /// As [`SledStore::open`].
    pub fn open_with(
        path: &Path,
        durability: Durability,
        record_latencies: bool,
    ) -> Result<SledStore, Error> {
        // sled releases its file lock from a background thread after the
        // last handle is dropped, so a store closed a moment ago in this
        // same process may still look held. Another process holding it
        // stays refused after this short grace.
        let mut tries = 0;
        loop {
            match Self::open_once(path, durability, record_latencies) {
                Err(Error::Locked { .. }) if tries < LOCK_RETRIES => {
                    tries += 1;
                    std::thread::sleep(LOCK_RETRY_WAIT);
                }
                other => return other,
            }
        }
    }

    /// Refuses a path that holds something other than a store, so that
    /// a mistyped `--store` never scatters files into a folder of
    /// documents.
    fn check_path(path: &Path) -> Result<(), Error> {
        let refuse = |reason: &str| {
            Err(Error::Open {
                path: path.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if path.is_file() {
            return refuse("it is a file, not a store directory");
        }
        let Ok(mut entries) = std::fs::read_dir(path) else {
            return Ok(());
        };
        let empty = entries.next().is_none();
        if !empty && !path.join("conf").is_file() && !path.join("db").is_file() {
            return refuse(
                "the folder exists and holds other files; give a new or an existing store path",
            );
        }
        Ok(())
    }

    fn open_once(
        path: &Path,
        durability: Durability,
        record_latencies: bool,
    ) -> Result<SledStore, Error> {
        Self::check_path(path)?;
        // sled's own periodic flusher is off: every write is flushed by
        // our group commit, and its thread would delay closing the store.
        // Reads are rare (a saga is read once when its driving starts), so
        // a small cache keeps memory flat however large the store grows.
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None);
        // A damaged file must become an error, even where sled's recovery
        // would rather panic.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|_| Error::Corrupt {
                path: path.to_owned(),
                reason: "sled could not recover its log".into(),
            })?
            .map_err(|e| open_error(path, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_error(path, e));
        let sagas = tree("sagas")?;
        let emails = tree("emails")?;
        let unfinished = tree("unfinished")?;

        sync_dir(path);
        let flusher = Flusher::new(db.clone(), &path.join("db"), durability, record_latencies)
            .map_err(|e| Error::Open {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(SledStore {
            path: path.to_owned(),
            sagas,
            emails,
            unfinished,
            flusher,
            _db: db,
        })
    }

    /// Opens a store that must already exist; never creates files.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] naming the path if there is no store there, and
    /// the errors of [`SledStore::open`].
    pub fn open_existing(path: &Path, durability: Durability) -> Result<SledStore, Error> {
        if !path.join("db").is_file() {
            return Err(Error::Open {
                path: path.to_owned(),
                reason: "there is no regsaga store there (pass --store PATH)".into(),
            });
        }
        Self::open(path, durability)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every commit's latency so far, when opened to record them.
    pub fn commit_latencies(&self) -> Vec<std::time::Duration> {
        self.flusher.latencies()
    }

    /// Writes `saga` and claims its e-mail in one transaction, unless a
    /// live saga other than `yielding` holds the e-mail; durable when Ok.
    async fn claim(&self, saga: &Saga, yielding: Option<SagaId>) -> Result<Created, Error> {
        let id = saga.id.as_bytes().to_vec();
        let email = saga.registration.email.as_bytes();
        let record = codec::encode(saga);

        let created = (&self.sagas, &self.emails, &self.unfinished)
            .transaction(|(sagas, emails, unfinished)| {
                if let Some(owner) = emails.get(email)? {
                    let yields = yielding.is_some_and(|y| owner.as_ref() == y.as_bytes());
                    // A claim whose saga is missing is left over from a
                    // failed write; it is taken over, not honoured.
                    if !yields && sagas.get(&owner)?.is_some() {
                        return Ok(Created::Existing(id_from(&owner)?));
                    }
                }
                emails.insert(email, id.as_slice())?;
                unfinished.insert(id.as_slice(), &[])?;
                sagas.insert(id.as_slice(), record.as_slice())?;
                Ok(Created::New)
            })
            .map_err(|e: TransactionError<Error>| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend(e),
            })?;

        self.flusher.commit().await?;
        Ok(created)
    }

    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<Saga, Error> {
        codec::decode(bytes).map_err(|e| {
            let key = key_name(key);
            match e {
                codec::Error::UnknownVersion(version) => Error::UnknownVersion {
                    key,
                    version,
                    known: codec::CURRENT,
                },
                other => Error::Decode {
                    key,
                    reason: other.to_string(),
                },
            }
        })
    }
}

impl Store for SledStore {
    async fn create(&self, saga: &Saga) -> Result<Created, Error> {
        self.claim(saga, None).await
    }

    async fn take_over(&self, previous: SagaId, saga: &Saga) -> Result<Created, Error> {
        self.claim(saga, Some(previous)).await
    }

    async fn save(&self, saga: &Saga) -> Result<(), Error> {
        let id = saga.id.as_bytes();
        self.sagas
            .insert(id, codec::encode(saga))
            .map_err(backend)?;
        if saga.state.is_finished() {
            self.unfinished.remove(id).map_err(backend)?;
        }
        self.flusher.commit().await
    }

    fn load(&self, id: SagaId) -> Result<Option<Saga>, Error> {
        let key = id.as_bytes();
        match self.sagas.get(key).map_err(backend)? {
            Some(bytes) => self.decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn find_by_email(&self, email: &str) -> Result<Option<SagaId>, Error> {
        match self.emails.get(email.as_bytes()).map_err(backend)? {
            Some(id) => Ok(Some(parse_id(&id)?)),
            None => Ok(None),
        }
    }

    fn unfinished(&self) -> Result<Vec<SagaId>, Error> {
        self.unfinished
            .iter()
            .keys()
            .map(|k| parse_id(&k.map_err(backend)?))
            .collect()
    }

    fn ids(&self) -> Result<Vec<SagaId>, Error> {
        self.sagas
            .iter()
            .keys()
            .map(|k| parse_id(&k.map_err(backend)?))
            .collect()
    }

    fn stats(&self) -> Stats {
        self.flusher.stats()
    }
}

fn parse_id(bytes: &[u8]) -> Result<SagaId, Error> {
    let array: [u8; 16] = bytes.try_into().map_err(|_| Error::Decode {
        key: key_name(bytes),
        reason: "a saga id must be 16 bytes".into(),
    })?;
    Ok(SagaId(uuid::Uuid::from_bytes(array)))
}

fn id_from(bytes: &[u8]) -> Result<SagaId, ConflictableTransactionError<Error>> {
    parse_id(bytes).map_err(ConflictableTransactionError::Abort)
}

fn key_name(key: &[u8]) -> String {
    match <[u8; 16]>::try_from(key) {
        Ok(bytes) => uuid::Uuid::from_bytes(bytes).to_string(),
        Err(_) => format!("{key:02x?}"),
    }
}

fn backend(e: sled::Error) -> Error {
    Error::Backend(e.to_string())
}

/// Maps sled's open errors to ones that tell the operator what to do.
fn open_error(path: &Path, e: sled::Error) -> Error {
    let path = path.to_owned();
    match e {
        sled::Error::Io(io) if is_lock_conflict(&io) => Error::Locked { path },
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => Error::Corrupt {
            path,
            // sled appends an empty backtrace to its message.
            reason: e.to_string().replace(" backtrace ()", ""),
        },
        sled::Error::Io(io) => Error::Open {
            path,
            reason: io.to_string(),
        },
        other => Error::Open {
            path,
            reason: other.to_string(),
        },
    }
}

fn is_lock_conflict(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::WouldBlock
        || io.raw_os_error() == Some(11)
        || io.to_string().contains("could not acquire lock")
}

/// Makes the directory entries of the store's files durable. Best effort:
/// a failure here is repeated by the first flush, which reports it.
fn sync_dir(path: &Path) {
    if let Ok(dir) = std::fs::File::open(path) {
        let _ = dir.sync_all();
    }
}
