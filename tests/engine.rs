//! The engine on tokio's paused clock, over a real sled store in a
//! temporary folder and scripted services: minutes of backoff run in
//! milliseconds, and every call the engine makes is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regsaga::retry::{Jitter, Policies, RetryPolicy};
use regsaga::saga::transition::{apply, Event};
use regsaga::saga::AttemptOutcome;
use regsaga::services::{Call, CallError, ErrorKind, Request, StepOutput};
use regsaga::store::Durability;
use regsaga::{
    Engine, FinalStatus, Options, RegistrationInput, Services, SledStore, State, Step, Store,
};
use tokio::time::Instant;

type Answers = HashMap<Step, VecDeque<Result<StepOutput, CallError>>>;

/// Services that answer from a script per step, then succeed.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<Answers>>,
    /// Per step: attempts up to this number fail with this error.
    failing_attempts: Arc<Mutex<HashMap<Step, (u32, CallError)>>>,
    calls: Arc<Mutex<Vec<(Call, Instant)>>>,
}

impl Scripted {
    fn fail_attempts(&self, step: Step, upto: u32, error: CallError) {
        self.failing_attempts
            .lock()
            .unwrap()
            .insert(step, (upto, error));
    }

    /// When each call of `step` was made.
    fn times(&self, step: Step) -> Vec<Instant> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(c, _)| c.step == step)
            .map(|(_, t)| *t)
            .collect()
    }

    fn fail(&self, step: Step, times: usize, error: CallError) -> &Self {
        let mut script = self.script.lock().unwrap();
        let queue = script.entry(step).or_default();
        for _ in 0..times {
            queue.push_back(Err(error.clone()));
        }
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    fn steps(&self) -> Vec<Step> {
        self.calls().iter().map(|c| c.step).collect()
    }
}

fn success(call: &Call) -> StepOutput {
    match &call.request {
        Request::CreateProfile { .. } => StepOutput::ProfileCreated {
            user_id: "user_1".into(),
        },
        Request::Charge { .. } => StepOutput::PaymentCharged {
            payment_id: "pi_1".into(),
        },
        Request::SendEmail { .. } | Request::SendSms { .. } => StepOutput::NotificationSent {
            id: format!("{}", call.attempt),
            status: "ACCEPTED".into(),
        },
        Request::UpdateProfileStatus { .. } => StepOutput::ProfileStatusUpdated,
        Request::RecordActivity(_) => StepOutput::ActivityRecorded { id: "act_1".into() },
    }
}

impl Services for Scripted {
    async fn perform(&self, call: &Call) -> Result<StepOutput, CallError> {
        self.calls
            .lock()
            .unwrap()
            .push((call.clone(), Instant::now()));
        let rule = self
            .failing_attempts
            .lock()
            .unwrap()
            .get(&call.step)
            .cloned();
        if let Some((upto, error)) = rule {
            if call.attempt <= upto {
                return Err(error);
            }
        }
        let next = self
            .script
            .lock()
            .unwrap()
            .get_mut(&call.step)
            .and_then(VecDeque::pop_front);
        // Yield like a real request would, so concurrent tasks interleave.
        tokio::task::yield_now().await;
        next.unwrap_or_else(|| Ok(success(call)))
    }
}

fn http(status: u16) -> CallError {
    CallError::new(ErrorKind::Http(status), format!("HTTP {status}"))
}

fn exact_policies() -> Policies {
    let exact = |p: RetryPolicy| RetryPolicy {
        jitter: Jitter::None,
        ..p
    };
    Policies {
        external: exact(RetryPolicy::external()),
        internal: exact(RetryPolicy::internal()),
        services: Default::default(),
    }
}

fn engine(dir: &tempfile::TempDir, services: &Scripted) -> Engine<SledStore, Scripted> {
    engine_with(dir, services, exact_policies())
}

fn engine_with(
    dir: &tempfile::TempDir,
    services: &Scripted,
    policies: Policies,
) -> Engine<SledStore, Scripted> {
    let store = SledStore::open(&dir.path().join("store"), Durability::Process).unwrap();
    let options = Options {
        policies,
        concurrency: 8,
        jitter_seed: Some(1),
        crash: None,
    };
    Engine::new(store, services.clone(), options).unwrap()
}

fn registration(json: &str) -> regsaga::Registration {
    serde_json::from_str::<RegistrationInput>(json)
        .unwrap()
        .validate()
        .unwrap()
}

fn full() -> regsaga::Registration {
    registration(
        r#"{"email":"jane.roe@example.com","fullName":"Jane Roe","phoneNumber":"+12025550143",
            "initialPayment":{"amount":29.99,"paymentMethod":"credit_card"}}"#,
    )
}

#[tokio::test(start_paused = true)]
async fn every_step_runs_once_in_order_with_stable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    let engine = engine(&dir, &services);

    let saga = engine.register(full()).await.unwrap();

    assert_eq!(saga.state, State::Finished(FinalStatus::Completed));
    assert_eq!(services.steps(), Step::ALL);
    for call in services.calls() {
        assert_eq!(call.correlation_id, saga.correlation_id);
        assert_eq!(call.idempotency_key, format!("{}:{}", saga.id, call.step));
        assert!(
            !call.idempotency_key.contains("jane"),
            "no personal data in keys"
        );
    }
    let result = regsaga::RegistrationResult::from(&saga);
    assert!(result.profile_created && result.payment_processed);
    assert_eq!(result.notifications_sent.len(), 3);
    assert!(result.errors.is_empty());
    assert_eq!(engine.store().load(saga.id).unwrap(), Some(saga));
}

#[tokio::test(start_paused = true)]
async fn optional_steps_are_skipped_without_their_input() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    let engine = engine(&dir, &services);

    engine
        .register(registration(r#"{"email":"a@example.com","fullName":"A"}"#))
        .await
        .unwrap();

    assert_eq!(
        services.steps(),
        [
            Step::CreateProfile,
            Step::SendWelcomeEmail,
            Step::UpdateProfileStatus,
            Step::RecordActivity
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_critical_failure_fails_the_saga_and_calls_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    services.fail(Step::CreateProfile, 1, http(400));
    let engine = engine(&dir, &services);

    let saga = engine.register(full()).await.unwrap();

    assert_eq!(saga.state, State::Finished(FinalStatus::Failed));
    assert_eq!(services.steps(), [Step::CreateProfile]);
    let result = regsaga::RegistrationResult::from(&saga);
    assert_eq!(
        result.errors,
        ["Failed to create profile: HTTP 400 (not retryable)"]
    );
    assert!(!result.profile_created && result.user_id.is_none());
}

#[tokio::test(start_paused = true)]
async fn five_attempts_over_minutes_run_on_the_paused_clock() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    services.fail(Step::CreateProfile, 10, http(503));
    let mut policies = exact_policies();
    policies.external.initial_interval = Duration::from_secs(30);
    policies.external.max_interval = Duration::from_secs(300);
    let engine = engine_with(&dir, &services, policies);

    let started = Instant::now();
    let saga = engine.register(full()).await.unwrap();

    // Waits of 30 s, 60 s, 120 s and 240 s between five attempts. Due
    // times are wall-clock, so the real milliseconds spent flushing are
    // taken off the paused clock's waits.
    assert!(
        started.elapsed() >= Duration::from_secs(449),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(services.steps(), [Step::CreateProfile; 5]);
    assert_eq!(saga.state, State::Finished(FinalStatus::Failed));
    assert_eq!(
        regsaga::RegistrationResult::from(&saga).errors,
        ["Failed to create profile: HTTP 503 (gave up after 5 attempts)"]
    );
    let keys: Vec<_> = services
        .calls()
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "one key for every retry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_recovered_retry_is_history_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    services.fail(Step::ChargePayment, 2, http(503));
    let engine = engine(&dir, &services);

    let saga = engine.register(full()).await.unwrap();

    assert_eq!(saga.state, State::Finished(FinalStatus::Completed));
    let payments: Vec<_> = saga
        .history
        .iter()
        .filter(|a| a.step == Step::ChargePayment)
        .collect();
    assert_eq!(payments.len(), 3);
    assert!(matches!(
        payments[0].outcome,
        AttemptOutcome::Failed {
            http_status: Some(503),
            ..
        }
    ));
    assert!(payments[0].next_due.is_some());
    assert_eq!(payments[2].outcome, AttemptOutcome::Succeeded);
    assert!(regsaga::RegistrationResult::from(&saga).errors.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_declined_payment_degrades_the_registration() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    services.fail(
        Step::ChargePayment,
        1,
        CallError::new(ErrorKind::Declined, "Payment declined (card_declined)"),
    );
    let engine = engine(&dir, &services);

    let saga = engine.register(full()).await.unwrap();

    assert_eq!(
        saga.state,
        State::Finished(FinalStatus::CompletedWithErrors)
    );
    assert!(!services.steps().contains(&Step::SendPaymentConfirmation));
    let status_update = services
        .calls()
        .into_iter()
        .find(|c| c.step == Step::UpdateProfileStatus)
        .unwrap();
    assert!(matches!(
        status_update.request,
        Request::UpdateProfileStatus { ref status, .. } if status == "PENDING_PAYMENT"
    ));
    let result = regsaga::RegistrationResult::from(&saga);
    assert!(!result.payment_processed);
    assert_eq!(
        result.errors,
        ["Failed to process payment: Payment declined (card_declined) (not retryable)"]
    );
    assert_eq!(
        result.notifications_sent.len(),
        2,
        "welcome and SMS still sent"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_the_backoff_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    let mut limited = http(429);
    limited.retry_after = Some(Duration::from_secs(90));
    services.fail(Step::SendWelcomeEmail, 1, limited);
    let engine = engine(&dir, &services);

    let started = Instant::now();
    let saga = engine.register(full()).await.unwrap();

    assert!(
        started.elapsed() >= Duration::from_secs(89),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(saga.state, State::Finished(FinalStatus::Completed));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_in_flight_at_a_crash_is_retried_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    let id = {
        let engine = engine(&dir, &services);
        let submitted = engine.submit(full()).await.unwrap();

        // What a process leaves behind when it dies after persisting the
        // attempt and before recording its outcome.
        let mut saga = engine.store().load(submitted.id).unwrap().unwrap();
        apply(
            &mut saga,
            Event::Begin {
                now: regsaga::saga::now(),
            },
            &Policies::default(),
        )
        .unwrap();
        engine.store().save(&saga).await.unwrap();
        submitted.id
    };

    let engine = engine(&dir, &services);
    let resumed = engine.resume().await.unwrap();

    assert_eq!(resumed.len(), 1);
    let saga = &resumed[0];
    assert_eq!(saga.id, id);
    assert_eq!(saga.state, State::Finished(FinalStatus::Completed));
    let profile: Vec<_> = saga
        .history
        .iter()
        .filter(|a| a.step == Step::CreateProfile)
        .collect();
    assert_eq!(profile.len(), 2);
    assert_eq!(profile[0].outcome, AttemptOutcome::Interrupted);
    assert_eq!(profile[0].idempotency_key, profile[1].idempotency_key);
    assert_eq!(services.calls()[0].attempt, 2);
}

#[tokio::test(start_paused = true)]
async fn one_saga_is_driven_by_one_task_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    let engine = engine(&dir, &services);
    let submitted = engine.submit(full()).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let engine = engine.clone();
        tasks.spawn(async move { engine.run(submitted.id).await.unwrap() });
    }
    tasks.spawn({
        let engine = engine.clone();
        async move { engine.resume().await.unwrap().pop().unwrap() }
    });
    while let Some(saga) = tasks.join_next().await {
        assert!(saga.unwrap().state.is_finished());
    }

    assert_eq!(services.steps(), Step::ALL, "each step called exactly once");
}

#[tokio::test(start_paused = true)]
async fn resubmission_returns_the_saga_and_conflicts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    let engine = engine(&dir, &services);

    let first = engine.submit(full()).await.unwrap();
    let again = engine.submit(full()).await.unwrap();
    assert!(!first.existing && again.existing);
    assert_eq!(first.id, again.id);

    let mut other = full();
    other.full_name = "Someone Else".into();
    let err = engine.submit(other).await.unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
    assert!(services.calls().is_empty());

    engine.run(first.id).await.unwrap();
    let calls = services.calls().len();
    engine.register(full()).await.unwrap();
    assert_eq!(
        services.calls().len(),
        calls,
        "a finished saga calls nothing"
    );
    assert!(engine.resume().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_retry_past_the_step_budget_ends_the_step_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    services.fail_attempts(Step::ChargePayment, u32::MAX, http(503));
    let mut policies = exact_policies();
    policies.services.insert(
        "payment".into(),
        regsaga::retry::Override {
            max_attempts: Some(100),
            step_budget: Some(Duration::from_secs(10)),
            attempt_timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    );
    let engine = engine_with(&dir, &services, policies);

    let started = Instant::now();
    let saga = engine.register(full()).await.unwrap();

    // Waits of 1, 2 and 4 s fit in 10 s; the next 8 s would not.
    assert_eq!(services.times(Step::ChargePayment).len(), 4);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let last = saga
        .history
        .iter()
        .rfind(|a| a.step == Step::ChargePayment)
        .unwrap();
    assert_eq!(last.gave_up, Some(regsaga::saga::GiveUp::BudgetExhausted));
    assert_eq!(last.next_due, None);
    let errors = regsaga::RegistrationResult::from(&saga).errors;
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].ends_with("past the step's budget of 10s)"),
        "{errors:?}"
    );
    assert_eq!(
        saga.state,
        State::Finished(FinalStatus::CompletedWithErrors)
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_retried_hundreds_of_times_keeps_a_bounded_history() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    services.fail_attempts(Step::SendWelcomeEmail, u32::MAX, http(503));
    let mut policies = exact_policies();
    policies.services.insert(
        "email".into(),
        regsaga::retry::Override {
            max_attempts: Some(300),
            initial_interval: Some(Duration::from_millis(1)),
            max_interval: Some(Duration::from_millis(1)),
            step_budget: Some(Duration::from_secs(3600)),
            ..Default::default()
        },
    );
    let engine = engine_with(&dir, &services, policies);

    let saga = engine.register(full()).await.unwrap();

    assert_eq!(services.times(Step::SendWelcomeEmail).len(), 300);
    assert_eq!(
        saga.attempts(Step::SendWelcomeEmail),
        300,
        "the count is kept"
    );
    let kept: Vec<_> = saga
        .history
        .iter()
        .filter(|a| a.step == Step::SendWelcomeEmail)
        .collect();
    assert_eq!(kept.len(), regsaga::saga::MAX_KEPT_ATTEMPTS);
    assert_eq!(kept.last().unwrap().number, 300, "the latest are kept");
    let summary = saga.summary(Step::SendWelcomeEmail).unwrap();
    assert_eq!(summary.dropped, 280);
    assert_eq!(summary.failures, [(ErrorKind::Http(503), 280)]);
    assert!(regsaga::RegistrationResult::from(&saga).errors[0].contains("after 300 attempts"));
}

/// How many distinct times, over what span, the retries of 100 sagas
/// took after they all failed `failures` times together.
async fn retry_spread(initial: Duration, max: Duration, failures: u32) -> (usize, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    services.fail_attempts(Step::CreateProfile, failures, http(503));
    let mut policies = Policies::default();
    policies.external.initial_interval = initial;
    policies.external.max_interval = max;
    let engine = engine_with(&dir, &services, policies);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let engine = engine.clone();
        let email = format!(r#"{{"email":"p{i}@example.com","fullName":"P"}}"#);
        tasks.spawn(async move { engine.register(registration(&email)).await.unwrap() });
    }
    let mut sagas = Vec::new();
    while let Some(saga) = tasks.join_next().await {
        sagas.push(saga.unwrap());
    }

    // The last failing attempts happened together; the retries after
    // them start where the jitter put them.
    let failed_at: Vec<_> = sagas
        .iter()
        .map(|s| s.history[failures as usize - 1].started_at)
        .collect();
    assert!(failed_at.windows(2).all(|w| w[0] == w[1]), "one instant");
    let mut retries: Vec<_> = sagas
        .iter()
        .map(|s| s.history[failures as usize].started_at)
        .collect();
    retries.sort();
    retries.dedup();
    let spread = (*retries.last().unwrap() - retries[0]).to_std().unwrap();
    (retries.len(), spread)
}

#[tokio::test(start_paused = true)]
async fn retries_of_sagas_failing_together_are_spread_by_jitter() {
    // First retry: bound 10 s.
    let (distinct, spread) =
        retry_spread(Duration::from_secs(10), Duration::from_secs(60), 1).await;
    assert!(distinct >= 90, "{distinct} distinct retry times");
    assert!(spread >= Duration::from_secs(5), "{spread:?}");

    // The bound already at its maximum of 20 s.
    let (distinct, spread) =
        retry_spread(Duration::from_secs(20), Duration::from_secs(20), 1).await;
    assert!(distinct >= 90, "{distinct} distinct retry times");
    assert!(spread >= Duration::from_secs(10), "{spread:?}");
}

/// A store that remembers, per saga, the last state whose save returned:
/// what is durable, as far as the engine may assume.
struct Watched {
    inner: SledStore,
    durable: Arc<Mutex<HashMap<regsaga::SagaId, regsaga::Saga>>>,
}

impl Store for Watched {
    async fn create(
        &self,
        saga: &regsaga::Saga,
    ) -> Result<regsaga::store::Created, regsaga::store::Error> {
        let created = self.inner.create(saga).await?;
        if created == regsaga::store::Created::New {
            self.durable.lock().unwrap().insert(saga.id, saga.clone());
        }
        Ok(created)
    }

    async fn take_over(
        &self,
        previous: regsaga::SagaId,
        saga: &regsaga::Saga,
    ) -> Result<regsaga::store::Created, regsaga::store::Error> {
        self.inner.take_over(previous, saga).await
    }

    async fn save(&self, saga: &regsaga::Saga) -> Result<(), regsaga::store::Error> {
        self.inner.save(saga).await?;
        self.durable.lock().unwrap().insert(saga.id, saga.clone());
        Ok(())
    }

    fn load(&self, id: regsaga::SagaId) -> Result<Option<regsaga::Saga>, regsaga::store::Error> {
        self.inner.load(id)
    }

    fn find_by_email(&self, email: &str) -> Result<Option<regsaga::SagaId>, regsaga::store::Error> {
        self.inner.find_by_email(email)
    }

    fn unfinished(&self) -> Result<Vec<regsaga::SagaId>, regsaga::store::Error> {
        self.inner.unfinished()
    }

    fn ids(&self) -> Result<Vec<regsaga::SagaId>, regsaga::store::Error> {
        self.inner.ids()
    }

    fn stats(&self) -> regsaga::store::Stats {
        self.inner.stats()
    }
}

/// Services that check, at every call, that the attempt making it is
/// durable and that every earlier attempt's outcome is too.
#[derive(Clone)]
struct Checking {
    durable: Arc<Mutex<HashMap<regsaga::SagaId, regsaga::Saga>>>,
    violations: Arc<Mutex<Vec<String>>>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Services for Checking {
    async fn perform(&self, call: &Call) -> Result<StepOutput, CallError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let durable = self.durable.lock().unwrap().get(&call.saga_id).cloned();
        let ok = durable.as_ref().is_some_and(|saga| {
            let in_flight = matches!(&saga.state, State::InFlight { step, attempt, .. }
                if *step == call.step && *attempt == call.attempt);
            let pending = saga
                .history
                .iter()
                .filter(|a| a.outcome == AttemptOutcome::Pending)
                .count();
            in_flight && pending == 1
        });
        if !ok {
            self.violations
                .lock()
                .unwrap()
                .push(format!("{} {} #{}", call.saga_id, call.step, call.attempt));
        }
        tokio::task::yield_now().await;
        if call.attempt == 1 && call.step == Step::ChargePayment {
            return Err(http(503));
        }
        Ok(success(call))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_group_commit_no_request_leaves_before_its_attempt_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let durable = Arc::new(Mutex::new(HashMap::new()));
    let store = Watched {
        inner: SledStore::open(&dir.path().join("store"), Durability::Power).unwrap(),
        durable: durable.clone(),
    };
    let services = Checking {
        durable,
        violations: Arc::default(),
        calls: Arc::default(),
    };
    let mut policies = Policies::default();
    policies.external.initial_interval = Duration::from_millis(5);
    let options = Options {
        policies,
        concurrency: 32,
        jitter_seed: Some(9),
        crash: None,
    };
    let engine = Engine::new(store, services.clone(), options).unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let engine = engine.clone();
        let json = format!(
            r#"{{"email":"g{i}@example.com","fullName":"G","phoneNumber":"+12025550{i:03}",
                "initialPayment":{{"amount":3,"paymentMethod":"paypal"}}}}"#
        );
        tasks.spawn(async move { engine.register(registration(&json)).await.unwrap() });
    }
    while let Some(saga) = tasks.join_next().await {
        assert_eq!(saga.unwrap().state, State::Finished(FinalStatus::Completed));
    }

    let stats = engine.store().stats();
    assert!(
        stats.flushes < stats.commits,
        "flushes were shared: {stats:?}"
    );
    assert_eq!(
        services.calls.load(std::sync::atomic::Ordering::Relaxed),
        200 * 8
    );
    let violations = services.violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "calls before durability: {violations:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_registration_submitted_again_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let services = Scripted::default();
    services.fail(Step::CreateProfile, 1, http(400));
    let engine = engine(&dir, &services);

    let failed = engine.register(full()).await.unwrap();
    assert_eq!(failed.state, State::Finished(FinalStatus::Failed));

    let again = engine.register(full()).await.unwrap();
    assert_ne!(again.id, failed.id, "a new saga");
    assert_eq!(again.state, State::Finished(FinalStatus::Completed));
    let email = &again.registration.email;
    assert_eq!(engine.store().find_by_email(email).unwrap(), Some(again.id));
    assert_eq!(
        engine.store().load(failed.id).unwrap(),
        Some(failed),
        "kept"
    );

    // A completed one is not registered twice.
    let third = engine.register(full()).await.unwrap();
    assert_eq!(third.id, again.id);
}
