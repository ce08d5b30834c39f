//! Durable storage of sagas.
//!
//! The engine talks to the [`Store`] trait; [`SledStore`] is the default
//! backend. A store knows nothing of services: it keeps saga records,
//! the e-mail index that makes re-submission safe, and the set of sagas
//! that are not finished yet.
//!
//! Records are encoded by [`codec`]: a format version in front of a
//! postcard body, so that later versions can keep reading old records.

pub mod codec;
mod flusher;
mod sled_store;

use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::saga::{Saga, SagaId};

pub use sled_store::SledStore;

/// How far a write is made durable before a commit returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// sled's flush, then `fdatasync` on the store's log file: the write
    /// survives a power cut, not only a crashed process. The default,
    /// because a registration that charged a card must not be forgotten.
    #[default]
    Power,
    /// sled's flush alone (`sync_file_range` on Linux): the write survives
    /// a killed process, but the device's cache may lose it on power loss.
    Process,
}

/// What [`Store::create`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The saga was written and its e-mail claimed.
    New,
    /// Another saga already holds this e-mail; nothing was written.
    Existing(SagaId),
}

/// Counters of the durable write path, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Commits that waited for durability.
    pub commits: u64,
    /// sled flushes; a flush covers every commit written before it.
    pub flushes: u64,
    /// `fdatasync` calls (only in [`Durability::Power`]).
    pub fsyncs: u64,
}

/// Errors of the store. Only [`Error::Flush`] and [`Error::Backend`] may
/// be transient; the others need an operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the store at {path} is in use by another process; stop that process \
         (or use another --store path) and try again"
    )]
    Locked { path: PathBuf },

    #[error("could not open the store at {path}: {reason}; check the path and its permissions")]
    Open { path: PathBuf, reason: String },

    #[error(
        "the store at {path} could not be read: {reason}. It may be damaged; \
         regsaga left its files untouched. Keep a copy before trying anything else"
    )]
    Corrupt { path: PathBuf, reason: String },

    #[error(
        "saga {key} is stored in format version {version}, which this regsaga does not \
         know (it reads up to version {known}); use a newer regsaga for this store"
    )]
    UnknownVersion {
        key: String,
        version: u16,
        known: u16,
    },

    #[error("saga {key} could not be decoded: {reason}")]
    Decode { key: String, reason: String },

    #[error("could not make writes durable: {0}; the store refuses further writes until reopened")]
    Flush(String),

    #[error("store backend error: {0}")]
    Backend(String),
}

/// Where sagas are kept.
///
/// Every write method returns only when what it wrote is durable (see
/// [`Durability`]): a caller may act on the written state as soon as the
/// future resolves.
pub trait Store: Send + Sync + 'static {
    /// Writes a new saga and claims its e-mail, atomically.
    ///
    /// # Errors
    ///
    /// The write failed or could not be made durable.
    fn create(&self, saga: &Saga) -> impl Future<Output = Result<Created, Error>> + Send;

    /// Writes a new saga that takes the e-mail over from `previous`, if
    /// `previous` still holds it; atomically, like [`Store::create`].
    /// The previous saga's record stays, no longer reachable by e-mail.
    ///
    /// # Errors
    ///
    /// The write failed or could not be made durable.
    fn take_over(
        &self,
        previous: SagaId,
        saga: &Saga,
    ) -> impl Future<Output = Result<Created, Error>> + Send;

    /// Replaces a saga's record with `saga`.
    ///
    /// # Errors
    ///
    /// The write failed or could not be made durable.
    fn save(&self, saga: &Saga) -> impl Future<Output = Result<(), Error>> + Send;

    /// Reads one saga.
    ///
    /// # Errors
    ///
    /// The record exists but cannot be decoded, or the backend failed.
    fn load(&self, id: SagaId) -> Result<Option<Saga>, Error>;

    /// The saga that claimed this (normalised) e-mail, if any.
    ///
    /// # Errors
    ///
    /// The backend failed.
    fn find_by_email(&self, email: &str) -> Result<Option<SagaId>, Error>;

    /// Sagas that may not be finished: a superset of the unfinished ones.
    ///
    /// # Errors
    ///
    /// The backend failed.
    fn unfinished(&self) -> Result<Vec<SagaId>, Error>;

    /// Every saga id, in creation order.
    ///
    /// # Errors
    ///
    /// The backend failed.
    fn ids(&self) -> Result<Vec<SagaId>, Error>;

    /// Counters of the durable write path.
    fn stats(&self) -> Stats;
}
