//! The runner: drives sagas from state to state, persisting before acting.
//!
//! For each attempt the engine
//!
//! 1. applies [`Event::Begin`], which appends a pending attempt to the
//!    history and moves the saga to `InFlight`;
//! 2. saves the saga and waits until the store says it is durable;
//! 3. sends the request, cut off at the policy's attempt timeout;
//! 4. applies [`Event::Ended`] with the result, which records the outcome
//!    and picks the next state: the next step, a retry at a due time, or
//!    the end;
//! 5. saves again, durably, before anything else happens.
//!
//! Waits between attempts are `tokio` timers: a waiting saga holds no
//! thread and no concurrency permit. A saga is driven by at most one task
//! of this process at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::crash::{CrashAt, CrashPoint};
use crate::registration::Registration;
use crate::retry::Policies;
use crate::saga::transition::{self, apply, Effect, Event};
use crate::saga::{self, AttemptOutcome, Saga, SagaId, State, Step};
use crate::services::{self, Call, CallError, ErrorKind, Services};
use crate::store::{self, Created, Store};

/// Concurrency used when none is given.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// How an engine runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub policies: Policies,
    /// Attempts in flight at once, across all sagas.
    pub concurrency: usize,
    /// Seeds the retry jitter, for reproducible runs; random if `None`.
    pub jitter_seed: Option<u64>,
    /// For crash tests only: abort the process at this point.
    pub crash: Option<CrashAt>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policies: Policies::default(),
            concurrency: DEFAULT_CONCURRENCY,
            jitter_seed: None,
            crash: None,
        }
    }
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),

    #[error(transparent)]
    Transition(#[from] transition::Error),

    #[error(transparent)]
    Policy(#[from] crate::retry::Error),

    #[error(
        "{} is already registered (saga {existing}) with different details; \
         registrations are keyed by e-mail, so change the e-mail or inspect that saga",
        crate::registration::mask_email(email)
    )]
    Conflict { email: String, existing: SagaId },

    #[error("no saga {0} in the store")]
    NotFound(SagaId),

    #[error("saga {0} was left to resume later: the engine is stopping")]
    Stopped(SagaId),
}

/// What [`Engine::submit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub id: SagaId,
    /// The same registration was submitted before: this is its saga, and
    /// nothing new was written.
    pub existing: bool,
}

/// Runs registration sagas over a store and a set of services.
///
/// Cheap to clone: clones share the store, the services and the limits.
pub struct Engine<S, X> {
    inner: Arc<Inner<S, X>>,
}

impl<S, X> Clone for Engine<S, X> {
    fn clone(&self) -> Self {
        Engine {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S, X> {
    clock: Clock,
    store: S,
    services: X,
    policies: Policies,
    permits: Semaphore,
    owners: Mutex<HashMap<SagaId, Arc<tokio::sync::Mutex<()>>>>,
    rng: Mutex<SmallRng>,
    crash: Option<CrashAt>,
    stopping: tokio::sync::watch::Sender<bool>,
    /// Sagas now waiting for a retry's due time.
    waiting: std::sync::atomic::AtomicUsize,
}

impl<S: Store, X: Services> Engine<S, X> {
    /// An engine over `store` and `services`.
    ///
    /// # Errors
    ///
    /// A retry policy that cannot work.
    pub fn new(store: S, services: X, options: Options) -> Result<Self, Error> {
        options.policies.validate()?;
        let rng = match options.jitter_seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                clock: Clock::start(),
                store,
                services,
                policies: options.policies,
                permits: Semaphore::new(options.concurrency.max(1)),
                owners: Mutex::new(HashMap::new()),
                rng: Mutex::new(rng),
                crash: options.crash,
                stopping: tokio::sync::watch::Sender::new(false),
                waiting: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The store back, once no clone of this engine is left.
    ///
    /// # Errors
    ///
    /// Returns the engine unchanged while clones of it exist.
    pub fn into_store(self) -> Result<S, Self> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => Ok(inner.store),
            Err(inner) => Err(Engine { inner }),
        }
    }

    pub fn services(&self) -> &X {
        &self.inner.services
    }

    /// Creates the saga of a registration and returns once it is durable.
    ///
    /// Submitting the same registration again returns its existing saga;
    /// one whose saga `Failed` (no profile was created) gets a new saga.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] if the e-mail is taken by a registration with
    /// other details; store errors.
    pub async fn submit(&self, registration: Registration) -> Result<Submitted, Error> {
        let saga = Saga::new(registration, self.now());
        match self.inner.store.create(&saga).await? {
            Created::New => {
                debug!(saga.id = %saga.id, correlation_id = %saga.correlation_id, "saga created");
                Ok(Submitted {
                    id: saga.id,
                    existing: false,
                })
            }
            Created::Existing(id) => {
                let existing = self.inner.store.load(id)?.ok_or(Error::NotFound(id))?;
                // A failed registration created nothing (no profile, so
                // nothing after it): submitting it again starts afresh.
                // Should its profile exist after all (an attempt in
                // doubt), the new saga meets it as a conflict.
                if existing.state == State::Finished(crate::saga::FinalStatus::Failed) {
                    return self.take_over(id, saga).await;
                }
                if existing.registration != saga.registration {
                    return Err(Error::Conflict {
                        email: saga.registration.email,
                        existing: id,
                    });
                }
                Ok(Submitted { id, existing: true })
            }
        }
    }

    async fn take_over(&self, previous: SagaId, saga: Saga) -> Result<Submitted, Error> {
        match self.inner.store.take_over(previous, &saga).await? {
            Created::New => {
                debug!(saga.id = %saga.id, correlation_id = %saga.correlation_id,
                       previous = %previous, "failed saga taken over");
                Ok(Submitted {
                    id: saga.id,
                    existing: false,
                })
            }
            Created::Existing(id) => Ok(Submitted { id, existing: true }),
        }
    }

    /// Submits a registration and drives it to its end.
    ///
    /// # Errors
    ///
    /// As [`Engine::submit`] and [`Engine::run`].
    pub async fn register(&self, registration: Registration) -> Result<Saga, Error> {
        let submitted = self.submit(registration).await?;
        self.run(submitted.id).await
    }

    /// Drives one saga until it is finished and returns its final record.
    /// A finished saga is returned as it is, without calling anything.
    ///
    /// # Errors
    ///
    /// The saga does not exist, or the store failed. The saga stays
    /// resumable: everything up to the failure is durable.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may abandon an attempt in flight. Its record
    /// stays `InFlight` in the store, and the next run treats it as
    /// interrupted and retries it with the same idempotency key.
    pub async fn run(&self, id: SagaId) -> Result<Saga, Error> {
        let owner = self.owner(id);
        let result = {
            let _guard = owner.lock().await;
            match self.inner.store.load(id)? {
                Some(saga) => self.drive(saga).await,
                None => Err(Error::NotFound(id)),
            }
        };
        self.release(id, owner);
        result
    }

    /// Drives every unfinished saga in the store to its end, concurrently,
    /// and returns their final records in no particular order.
    ///
    /// # Errors
    ///
    /// The store could not list its sagas. A saga that fails on its own
    /// is logged and left resumable; the others go on.
    pub async fn resume(&self) -> Result<Vec<Saga>, Error>
    where
        S: 'static,
        X: 'static,
    {
        let unfinished = self.inner.store.unfinished()?;
        if !unfinished.is_empty() {
            debug!(sagas = unfinished.len(), "resuming unfinished sagas");
        }
        let mut tasks = JoinSet::new();
        for id in unfinished {
            let engine = self.clone();
            tasks.spawn(async move { (id, engine.run(id).await) });
        }

        let mut finished = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(saga))) => finished.push(saga),
                Ok((_, Err(Error::Stopped(_)))) => {}
                Ok((id, Err(error))) => warn!(saga.id = %id, %error, "saga not resumed"),
                Err(error) => warn!(%error, "resume task failed"),
            }
        }
        Ok(finished)
    }

    /// Stops driving sagas: attempts in flight finish and are recorded,
    /// no new attempt starts, and waits for a retry end at once. Every
    /// saga stays resumable; [`Engine::run`] returns [`Error::Stopped`].
    pub fn stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// How many sagas are waiting for a retry right now.
    pub fn waiting(&self) -> usize {
        self.inner
            .waiting
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// The per-saga lock that keeps two tasks from driving one saga.
    fn owner(&self, id: SagaId) -> Arc<tokio::sync::Mutex<()>> {
        let mut owners = lock(&self.inner.owners);
        Arc::clone(owners.entry(id).or_default())
    }

    fn release(&self, id: SagaId, owner: Arc<tokio::sync::Mutex<()>>) {
        let mut owners = lock(&self.inner.owners);
        // Two references: the map's and ours. More means another waiter.
        if Arc::strong_count(&owner) == 2 {
            owners.remove(&id);
        }
    }

    async fn drive(&self, mut saga: Saga) -> Result<Saga, Error> {
        if let State::InFlight { step, attempt, .. } = saga.state {
            debug!(
                saga.id = %saga.id, correlation_id = %saga.correlation_id,
                step = step.name(), attempt, "attempt interrupted by a restart"
            );
            let event = Event::Recovered {
                now: self.now(),
                jitter: self.jitter(),
            };
            apply(&mut saga, event, &self.inner.policies)?;
            self.inner.store.save(&saga).await?;
        }

        // A call whose attempt was made durable together with the outcome
        // of the step before it.
        let mut chained = None;
        loop {
            if let Some(call) = chained.take() {
                chained = self.attempt(&mut saga, Some(call)).await?;
                continue;
            }
            let (step, due) = match &saga.state {
                State::Finished(_) => return Ok(saga),
                State::Ready { step, due } => (*step, *due),
                State::InFlight { .. } => {
                    // `attempt` always records an outcome before returning.
                    return Err(mismatch(&saga, "drive"));
                }
            };
            if self.is_stopping() {
                return Err(Error::Stopped(saga.id));
            }
            match due {
                Some(due) if !self.wait_until(&saga, step, due).await => {
                    return Err(Error::Stopped(saga.id));
                }
                Some(_) => {}
                None if saga.attempts(step) == 0 => {
                    self.crash_point(CrashPoint::BetweenSteps, step)
                }
                None => {}
            }
            chained = self.attempt(&mut saga, None).await?;
        }
    }

    /// Sleeps until `due`. A due time read back from the store may come
    /// from a clock that has since been set back, so the wait is capped at
    /// what the policy could have asked for.
    /// Returns `false` if the engine began to stop during the wait.
    async fn wait_until(&self, saga: &Saga, step: Step, due: DateTime<Utc>) -> bool {
        let policy = self.inner.policies.for_step(step);
        let asked = saga
            .history
            .last()
            .and_then(|a| match a.outcome {
                AttemptOutcome::Failed { retry_after_ms, .. } => retry_after_ms,
                _ => None,
            })
            .map(Duration::from_millis)
            .unwrap_or_default();
        let cap = policy.max_interval.max(asked);
        let wait = (due - self.now()).to_std().unwrap_or_default().min(cap);

        debug!(saga.id = %saga.id, correlation_id = %saga.correlation_id, step = step.name(),
               wait_ms = wait.as_millis() as u64, "waiting before retry");
        let mut stopping = self.inner.stopping.subscribe();
        let waiting = &self.inner.waiting;
        waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slept = tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = stopping.wait_for(|stop| *stop) => false,
        };
        waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        slept
    }

    /// Runs one attempt of the current step: persist, call, persist.
    ///
    /// `chained` is a call whose attempt is already durable. When this
    /// attempt's outcome moves the saga straight on to the next step, the
    /// next step's attempt is begun in memory and written in the same
    /// commit as this outcome, and returned to be sent next: one flush
    /// instead of two, and still nothing is sent before it is durable.
    async fn attempt(&self, saga: &mut Saga, chained: Option<Call>) -> Result<Option<Call>, Error> {
        let inner = &*self.inner;
        let _permit = inner.permits.acquire().await;

        let call = match chained {
            // Already durable: a stop lets it finish like any attempt in
            // flight.
            Some(call) => call,
            None => {
                if self.is_stopping() {
                    return Err(Error::Stopped(saga.id));
                }
                let call = self.begin_in_memory(saga)?;
                // Durable before the request leaves: a crash from here on
                // finds the attempt recorded and retries it with its key.
                inner.store.save(saga).await?;
                call
            }
        };
        self.crash_point(CrashPoint::AfterAttemptPersisted, call.step);

        let timeout = attempt_timeout(saga, call.step, &inner.policies, self.now());
        debug!(saga.id = %saga.id, correlation_id = %call.correlation_id,
               step = call.step.name(), attempt = call.attempt, "attempt started");
        let result = tokio::time::timeout(timeout, inner.services.perform(&call))
            .await
            .unwrap_or_else(|_| Err(timed_out(call.step)));
        log_result(saga, &call, &result);
        self.crash_point(CrashPoint::AfterResponse, call.step);

        let event = Event::Ended {
            now: self.now(),
            result,
            jitter: self.jitter(),
        };
        let effect = apply(saga, event, &inner.policies)?;
        let next = match effect {
            Effect::Continue if !self.is_stopping() => {
                let step = saga.state.step().unwrap_or(call.step);
                self.crash_point(CrashPoint::BetweenSteps, step);
                Some(self.begin_in_memory(saga)?)
            }
            Effect::Continue | Effect::Call(_) | Effect::Wait(_) | Effect::Done => None,
        };
        inner.store.save(saga).await?;
        self.crash_point(CrashPoint::AfterOutcomePersisted, call.step);
        Ok(next)
    }

    /// Begins an attempt of the current step in memory; the caller saves.
    fn begin_in_memory(&self, saga: &mut Saga) -> Result<Call, Error> {
        let effect = apply(saga, Event::Begin { now: self.now() }, &self.inner.policies)?;
        let Effect::Call(call) = effect else {
            return Err(mismatch(saga, "begin"));
        };
        self.crash_point(CrashPoint::BeforeAttemptPersisted, call.step);
        Ok(call)
    }

    /// Aborts the process if a crash test asked for this point.
    fn crash_point(&self, point: CrashPoint, step: Step) {
        if self.inner.crash.is_some_and(|at| at.matches(point, step)) {
            eprintln!("regsaga: crashing on purpose at {point} of {step}");
            std::process::abort();
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn jitter(&self) -> f64 {
        lock(&self.inner.rng).random::<f64>()
    }
}

/// The policy's attempt timeout, cut to what is left of the step's
/// budget. An attempt that starts after the budget ran out (after a long
/// restart) still gets its full timeout: it is the one attempt that
/// finds out whether the service is back.
fn attempt_timeout(saga: &Saga, step: Step, policies: &Policies, now: DateTime<Utc>) -> Duration {
    let policy = policies.for_step(step);
    let Some(first) = saga.first_started_at(step) else {
        return policy.attempt_timeout;
    };
    let spent = (now - first).to_std().unwrap_or_default();
    match policy.step_budget.checked_sub(spent) {
        Some(left) if !left.is_zero() => policy.attempt_timeout.min(left),
        _ => policy.attempt_timeout,
    }
}

fn timed_out(step: Step) -> CallError {
    CallError::new(
        ErrorKind::Timeout,
        format!("{} timeout", services::title(step.service())),
    )
}

fn log_result(
    saga: &Saga,
    call: &services::Call,
    result: &Result<services::StepOutput, CallError>,
) {
    match result {
        Ok(_) => debug!(saga.id = %saga.id, correlation_id = %call.correlation_id,
                        step = call.step.name(), attempt = call.attempt, "attempt succeeded"),
        Err(e) => debug!(saga.id = %saga.id, correlation_id = %call.correlation_id,
                         step = call.step.name(), attempt = call.attempt,
                         error.kind = %e.kind, reason = %e.reason, "attempt failed"),
    }
}

fn mismatch(saga: &Saga, event: &'static str) -> Error {
    Error::Transition(transition::Error {
        saga: saga.id.to_string(),
        event,
        state: saga.state.label(),
    })
}

/// The engine's time: the wall clock read once at start, advanced by the
/// monotonic clock. Timestamps in records are wall-clock times; waits
/// within a process are monotonic, so a clock set back while it runs
/// changes nothing. (Under tokio's paused test clock, virtual waits move
/// this clock too, which keeps time-based rules testable.)
struct Clock {
    wall: DateTime<Utc>,
    mono: tokio::time::Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: saga::now(),
            mono: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound;
        let elapsed = chrono::TimeDelta::from_std(self.mono.elapsed()).unwrap_or_default();
        (self.wall + elapsed).trunc_subsecs(6)
    }
}

/// Locks a std mutex, recovering from poisoning: the data behind these
/// locks (a map of owners, an rng) stays valid whatever panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
