//! The crash harness: the real binary aborts at every named crash point of
//! every step, is resumed, and the sandbox's ledger must show every effect
//! exactly once.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use regsaga::crash::CrashPoint;
use regsaga::saga::{AttemptOutcome, Saga};
use regsaga::sandbox::{LedgerSnapshot, Options, Sandbox};
use regsaga::store::Durability;
use regsaga::{SledStore, Step, Store};

const INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/crash.ndjson");
/// Records in INPUT, and how many of them carry a payment.
const RECORDS: usize = 4;
const PAID: usize = 3;

/// Runs the binary in `dir`. A killed process is what these tests are
/// about, not a power cut, so the store runs in `process` durability
/// (sled's flush without fdatasync), and retries wait milliseconds, not
/// seconds. Both keep the harness fast.
fn regsaga(dir: &Path, args: &[&str], crash_at: Option<&str>) -> Output {
    let config = dir.join("fast.toml");
    if !config.exists() {
        let text = "[store]\ndurability = \"process\"\n\
                    [retry.external]\ninitial_interval = \"10ms\"\nmax_interval = \"50ms\"\n";
        std::fs::write(&config, text).unwrap();
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_regsaga"));
    command
        .current_dir(dir)
        .args(args)
        .arg("--config")
        .arg(&config)
        .env_remove("REGSAGA_CRASH_AT");
    if let Some(spec) = crash_at {
        command.env("REGSAGA_CRASH_AT", spec);
    }
    command.output().expect("the regsaga binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sagas(dir: &Path) -> Vec<Saga> {
    let store = SledStore::open_existing(&dir.join("store"), Durability::Process).unwrap();
    let ids = store.ids().unwrap();
    ids.into_iter()
        .map(|id| store.load(id).unwrap().unwrap())
        .collect()
}

/// The invariants every crash must leave intact once resumed.
fn check_ledger(ledger: &LedgerSnapshot, sagas: &[Saga], context: &str) {
    assert_eq!(sagas.len(), RECORDS, "{context}: one saga per record");
    assert!(
        sagas.iter().all(|s| s.state.is_finished()),
        "{context}: all terminal"
    );
    assert_eq!(
        ledger.profiles.len(),
        RECORDS,
        "{context}: one profile per record"
    );
    assert_eq!(
        ledger.charges.len(),
        PAID,
        "{context}: one charge per paid record"
    );

    let by_key: HashMap<String, &Saga> = sagas
        .iter()
        .flat_map(|s| Step::ALL.map(|step| (s.idempotency_key(step), s)))
        .collect();
    for charge in &ledger.charges {
        let key = charge
            .idempotency_key
            .as_deref()
            .expect("charges carry a key");
        assert!(
            by_key.contains_key(key),
            "{context}: charge key {key} is a saga's"
        );
    }

    let mut sent: HashMap<&str, usize> = HashMap::new();
    for request in &ledger.requests {
        let key = request
            .idempotency_key
            .as_deref()
            .expect("requests carry a key");
        let saga = by_key[key];
        let correlation = saga.correlation_id.to_string();
        assert_eq!(
            request.correlation_id.as_deref(),
            Some(correlation.as_str()),
            "{context}"
        );
        // The profile lookup after a 409 is a read; count only writes.
        if request.method != "GET" {
            *sent.entry(key).or_default() += 1;
        }
    }

    // Every request was a recorded attempt; every recorded attempt that
    // did not die before sending made a request.
    for saga in sagas {
        for step in Step::ALL {
            let attempts: Vec<_> = saga.history.iter().filter(|a| a.step == step).collect();
            let interrupted = attempts
                .iter()
                .filter(|a| a.outcome == AttemptOutcome::Interrupted)
                .count();
            let requests = sent
                .get(saga.idempotency_key(step).as_str())
                .copied()
                .unwrap_or(0);
            assert!(
                requests <= attempts.len(),
                "{context}: {step}: {requests} requests"
            );
            assert!(
                requests + interrupted >= attempts.len(),
                "{context}: {step}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_every_step_recovers_with_effects_once() {
    for point in CrashPoint::ALL {
        for step in Step::ALL {
            let spec = format!("{point}:{step}");
            let dir = tempfile::tempdir().unwrap();
            let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Options::default())
                .await
                .unwrap();
            let url = sandbox.url();
            let common = ["--services", url.as_str(), "--store", "store"];

            let crashed = regsaga(
                dir.path(),
                &[&["run", INPUT][..], &common].concat(),
                Some(&spec),
            );
            assert_eq!(
                crashed.status.code(),
                None,
                "{spec} must abort: {}",
                stderr(&crashed)
            );
            assert!(stderr(&crashed).contains("crashing on purpose"), "{spec}");
            let resumed = regsaga(dir.path(), &[&["resume"][..], &common].concat(), None);
            assert!(resumed.status.success(), "{spec}: {}", stderr(&resumed));

            // Running the input again finds every saga finished.
            let again = regsaga(dir.path(), &[&["run", INPUT][..], &common].concat(), None);
            assert!(again.status.success(), "{spec}: {}", stderr(&again));
            let results = String::from_utf8(again.stdout).unwrap();
            assert_eq!(results.lines().count(), RECORDS, "{spec}");

            let before = sandbox.state().requests.len();
            let idle = regsaga(dir.path(), &[&["resume"][..], &common].concat(), None);
            assert!(
                stderr(&idle).contains("nothing to resume"),
                "{spec}: {}",
                stderr(&idle)
            );

            let ledger = sandbox.state();
            assert_eq!(
                ledger.requests.len(),
                before,
                "{spec}: no call after the end"
            );
            check_ledger(&ledger, &sagas(dir.path()), &spec);
            sandbox.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_crashes_every_time_ends_after_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("one.ndjson"),
        r#"{"email":"ada@example.com","fullName":"Ada","initialPayment":{"amount":5,"paymentMethod":"credit_card"}}"#,
    )
    .unwrap();
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Options::default())
        .await
        .unwrap();
    let url = sandbox.url();
    let args = ["run", "one.ndjson", "--services", &url, "--store", "store"];
    let crash = Some("after-attempt-persisted:charge-payment");

    let mut crashes = 0;
    let output = loop {
        let output = regsaga(dir.path(), &args, crash);
        if output.status.code().is_some() || crashes > 10 {
            break output;
        }
        crashes += 1;
    };

    // Five external attempts and, each being in doubt, the extra ones
    // that try to learn its outcome; each crashed before its request left.
    let limit = 5 + regsaga::saga::transition::IN_DOUBT_RETRIES;
    assert_eq!(crashes, limit, "{}", stderr(&output));
    assert!(output.status.success(), "{}", stderr(&output));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "CompletedWithErrors");
    assert_eq!(result["paymentProcessed"], false);
    let errors = result["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("gave up after 7 attempts"),
        "{errors:?}"
    );
    assert!(sandbox.state().charges.is_empty());
    sandbox.shutdown().await;
}
