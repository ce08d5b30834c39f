//! Retries against the sandbox's injected faults, over real HTTP on
//! loopback, with policies short enough to run in seconds.

use std::time::Duration;

use regsaga::retry::{Jitter, Override, Policies, RetryPolicy};
use regsaga::saga::{AttemptOutcome, GiveUp, Saga};
use regsaga::sandbox::{Options as SandboxOptions, Sandbox};
use regsaga::services::ErrorKind;
use regsaga::store::Durability;
use regsaga::{
    Endpoints, Engine, FinalStatus, HttpServices, Options, RegistrationInput, SledStore, State,
    Step,
};

struct Setup {
    engine: Engine<SledStore, HttpServices>,
    sandbox: Sandbox,
    _dir: tempfile::TempDir,
}

/// A sandbox with `faults`, and an engine whose external policy waits
/// 20–100 ms between attempts unless `changes` say otherwise.
async fn setup(faults: &[&str], changes: &[(&str, Override)]) -> Setup {
    let options = SandboxOptions {
        faults: faults.iter().map(|f| f.parse().unwrap()).collect(),
        seed: 3,
    };
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();

    let fast = RetryPolicy {
        attempt_timeout: Duration::from_secs(5),
        initial_interval: Duration::from_millis(20),
        max_interval: Duration::from_millis(100),
        step_budget: Duration::from_secs(60),
        ..RetryPolicy::external()
    };
    let mut policies = Policies {
        external: fast.clone(),
        internal: fast,
        services: Default::default(),
    };
    for (service, change) in changes {
        policies.services.insert((*service).into(), change.clone());
    }

    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("store"), Durability::Process).unwrap();
    let services = HttpServices::new(Endpoints::all_at(&sandbox.url()), |_| {
        Duration::from_secs(2)
    })
    .unwrap();
    let engine = Engine::new(
        store,
        services,
        Options {
            policies,
            concurrency: 16,
            jitter_seed: Some(5),
            crash: None,
        },
    )
    .unwrap();
    Setup {
        engine,
        sandbox,
        _dir: dir,
    }
}

fn person(i: usize) -> regsaga::Registration {
    let json = format!(
        r#"{{"email":"person{i}@example.com","fullName":"Person {i}",
            "phoneNumber":"+1202555{i:04}",
            "initialPayment":{{"amount":12.5,"paymentMethod":"debit_card"}}}}"#
    );
    serde_json::from_str::<RegistrationInput>(&json)
        .unwrap()
        .validate()
        .unwrap()
}

async fn register_all(engine: &Engine<SledStore, HttpServices>, n: usize) -> Vec<Saga> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let engine = engine.clone();
        tasks.spawn(async move { engine.register(person(i)).await.unwrap() });
    }
    let mut sagas = Vec::new();
    while let Some(saga) = tasks.join_next().await {
        sagas.push(saga.unwrap());
    }
    sagas
}

fn attempts(saga: &Saga, step: Step) -> Vec<&regsaga::saga::Attempt> {
    saga.history.iter().filter(|a| a.step == step).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_as_the_server_asks() {
    // The sandbox's 429 carries `Retry-After: 1`, far above our backoff.
    let s = setup(&["email:http-429@0.5"], &[]).await;

    let sagas = register_all(&s.engine, 8).await;

    // Saga ids are random, so which keys draw a fault varies; 16 e-mails
    // at a rate of one half make a run without any 429 a 1-in-65536 event.
    let mut limited = 0;
    let emails = [Step::SendWelcomeEmail, Step::SendPaymentConfirmation];
    for (saga, step) in sagas.iter().flat_map(|s| emails.map(|e| (s, e))) {
        for pair in attempts(saga, step).windows(2) {
            let AttemptOutcome::Failed {
                http_status: Some(429),
                retry_after_ms,
                ..
            } = pair[0].outcome
            else {
                continue;
            };
            limited += 1;
            assert_eq!(retry_after_ms, Some(1000));
            let waited = pair[1].started_at - pair[0].ended_at.unwrap();
            assert!(waited >= chrono::TimeDelta::milliseconds(1000), "{waited}");
        }
    }
    assert!(limited > 0, "some e-mails were rate-limited");
    s.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_503_are_retried_and_charge_once() {
    // 30 attempts at a 60% failure rate: all 20 give up together with a
    // chance below one in a million.
    let more = Override {
        max_attempts: Some(30),
        ..Override::default()
    };
    let s = setup(&["payment:http-503@0.6"], &[("payment", more)]).await;

    let sagas = register_all(&s.engine, 20).await;

    let ledger = s.sandbox.state();
    let mut retried = 0;
    for saga in &sagas {
        assert_eq!(
            saga.state,
            State::Finished(FinalStatus::Completed),
            "{:?}",
            saga.report
        );
        let payment = attempts(saga, Step::ChargePayment);
        retried += usize::from(payment.len() > 1);
        assert_eq!(payment.last().unwrap().outcome, AttemptOutcome::Succeeded);
    }
    assert!(retried >= 5, "{retried} payments needed a retry");
    assert_eq!(ledger.charges.len(), 20, "one charge each");
    s.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_cut_by_the_attempt_timeout() {
    let short = Override {
        attempt_timeout: Some(Duration::from_millis(300)),
        max_attempts: Some(2),
        ..Override::default()
    };
    let s = setup(&["sms:timeout"], &[("sms", short)]).await;

    let sagas = register_all(&s.engine, 2).await;

    for saga in &sagas {
        // Two attempts, then two more to learn the outcome of one in doubt.
        let sms = attempts(saga, Step::SendSmsVerification);
        assert_eq!(sms.len(), 4);
        for attempt in &sms {
            assert!(matches!(
                attempt.outcome,
                AttemptOutcome::Failed {
                    kind: ErrorKind::Timeout,
                    ..
                }
            ));
            let took = attempt.duration().unwrap();
            assert!(took >= Duration::from_millis(300), "{took:?}");
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
        assert_eq!(sms[3].gave_up, Some(GiveUp::AttemptsExhausted));
        let result = regsaga::RegistrationResult::from(saga);
        assert_eq!(
            result.errors,
            [
                "Failed to send notifications: SMS service timeout (gave up after 4 attempts; \
              the last attempt's outcome is unknown)"
            ]
        );
        assert_eq!(result.status, "CompletedWithErrors");
    }
    s.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_shorter_than_the_retries_fails_the_step_with_its_reason() {
    let tight = Override {
        step_budget: Some(Duration::from_millis(500)),
        attempt_timeout: Some(Duration::from_millis(400)),
        initial_interval: Some(Duration::from_millis(200)),
        max_interval: Some(Duration::from_millis(200)),
        max_attempts: Some(50),
        jitter: Some(Jitter::None),
        ..Override::default()
    };
    let s = setup(&["profile:http-503"], &[("profile", tight)]).await;

    let sagas = register_all(&s.engine, 1).await;

    let saga = &sagas[0];
    assert_eq!(saga.state, State::Finished(FinalStatus::Failed));
    let profile = attempts(saga, Step::CreateProfile);
    assert!(profile.len() <= 3, "{} attempts in 500 ms", profile.len());
    assert_eq!(
        profile.last().unwrap().gave_up,
        Some(GiveUp::BudgetExhausted)
    );
    let errors = regsaga::RegistrationResult::from(saga).errors;
    assert!(
        errors[0].contains("past the step's budget of 500ms"),
        "{errors:?}"
    );
    assert!(
        s.sandbox.state().charges.is_empty(),
        "nothing after a failed profile"
    );
    s.sandbox.shutdown().await;
}
