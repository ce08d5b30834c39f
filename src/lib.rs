//! regsaga registers users as crash-safe sagas.
//!
//! A registration creates a profile at a profile service (critical),
//! charges an optional initial payment, sends notifications, sets the
//! profile's status and records the whole in an activity log. Each
//! registration is a [`Saga`] whose state is persisted after every
//! transition, so a process that dies at any moment resumes exactly where
//! it stood, and every request carries an idempotency key, so a retry
//! never charges twice.
//!
//! # A tour
//!
//! - [`registration`]: the input users send, and its checked form.
//! - [`saga`]: the durable state; [`saga::transition`] the pure rules
//!   that move it, [`saga::history`] the record of every attempt.
//! - [`engine`]: the runner that persists a transition, then acts on it.
//! - [`retry`]: retry policies and the table of retryable failures.
//! - [`store`]: the storage trait, its sled backend, and the versioned
//!   record format.
//! - [`services`]: the service trait and its HTTP clients.
//! - [`sandbox`]: stand-ins for the providers, for tests and trials. The
//!   library never starts it; the binary and the tests do.
//! - [`config`]: the TOML configuration.
//! - [`crash`]: named crash points for tests that kill the process.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//!
//! use regsaga::{Engine, Endpoints, HttpServices, Options, RegistrationInput, SledStore};
//! use regsaga::store::Durability;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SledStore::open(Path::new("regsaga.db"), Durability::Power)?;
//! let endpoints = Endpoints::all_at("http://127.0.0.1:8080");
//! let services = HttpServices::new(endpoints, |_service| Duration::from_secs(10))?;
//! let engine = Engine::new(store, services, Options::default())?;
//!
//! // Finish whatever an earlier process left behind.
//! engine.resume().await?;
//!
//! let input: RegistrationInput = serde_json::from_str(
//!     r#"{"email": "jane.roe@example.com", "fullName": "Jane Roe"}"#,
//! )?;
//! // `submit` returns once the saga is durable; `run` drives it to its end.
//! let submitted = engine.submit(input.validate()?).await?;
//! let saga = engine.run(submitted.id).await?;
//! println!("{}", serde_json::to_string(&regsaga::RegistrationResult::from(&saga))?);
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod crash;
pub mod engine;
pub mod registration;
pub mod result;
pub mod retry;
pub mod saga;
pub mod sandbox;
pub mod services;
pub mod store;
pub mod view;

pub use engine::{Engine, Options, Submitted};
pub use registration::{Registration, RegistrationInput};
pub use result::RegistrationResult;
pub use saga::{FinalStatus, Saga, SagaId, State, Step};
pub use services::{Endpoints, HttpServices, Services};
pub use store::{SledStore, Store};
