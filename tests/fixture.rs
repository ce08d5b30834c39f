//! The stored format, pinned: `tests/fixtures/store-v1` is a small store
//! written by the release that introduced format version 1. Every later
//! release must decode every saga in it and finish the unfinished ones.
//!
//! The fixture holds sagas in each kind of state: Completed,
//! CompletedWithErrors (a declined payment), Failed (a profile that
//! belongs to someone else), one waiting for a retry and one caught in
//! flight by a crash. `regenerate_the_fixture` (ignored) wrote it; run it
//! only when a new format version gets its own fixture, never to paper
//! over a change to version 1.

mod common;

use common::copy_dir;
use std::path::Path;
use std::process::{Command, Output};

use regsaga::sandbox::{Options as SandboxOptions, Sandbox};
use regsaga::store::{codec, Durability};
use regsaga::{Endpoints, Engine, HttpServices, Options, SledStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_saga_of_the_version_1_fixture_decodes_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    copy_dir(&common::fixture_store(), &path);

    let store = SledStore::open(&path, Durability::Process).unwrap();
    let sagas: Vec<_> = store
        .ids()
        .unwrap()
        .into_iter()
        .map(|id| store.load(id).unwrap().unwrap())
        .collect();
    assert_eq!(sagas.len(), 6);
    let labels: std::collections::BTreeSet<_> = sagas.iter().map(|s| s.state.label()).collect();
    for label in [
        "Completed",
        "CompletedWithErrors",
        "Failed",
        "Retrying",
        "InFlight",
    ] {
        assert!(labels.contains(label), "{label} missing from {labels:?}");
    }
    for saga in &sagas {
        assert_eq!(codec::version(&codec::encode(saga)), Some(1));
    }

    let sandbox = sandbox(&[]).await;
    let engine = engine(store, &sandbox);
    let resumed = engine.resume().await.unwrap();

    assert_eq!(resumed.len(), 2, "the waiting and the in-flight saga");
    for saga in &resumed {
        assert!(saga.state.is_finished(), "{:?}", saga.state);
    }
    assert!(engine.store().unfinished().unwrap().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_version_is_left_alone_while_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    copy_dir(&common::fixture_store(), &path);

    // Mark the in-flight saga as written by a newer regsaga.
    let (newer, bytes) = {
        let store = SledStore::open(&path, Durability::Process).unwrap();
        let id = store
            .ids()
            .unwrap()
            .into_iter()
            .find(|id| {
                matches!(
                    store.load(*id).unwrap().unwrap().state,
                    regsaga::State::InFlight { .. }
                )
            })
            .unwrap();
        drop(store);
        let db = sled::open(&path).unwrap();
        let sagas = db.open_tree("sagas").unwrap();
        let mut record = sagas.get(id.as_bytes()).unwrap().unwrap().to_vec();
        record[..2].copy_from_slice(&2u16.to_be_bytes());
        sagas.insert(id.as_bytes(), record.clone()).unwrap();
        db.flush().unwrap();
        (id, record)
    };

    let store = SledStore::open(&path, Durability::Process).unwrap();
    let sandbox = sandbox(&[]).await;
    let engine = engine(store, &sandbox);

    let resumed = engine.resume().await.unwrap();
    assert_eq!(resumed.len(), 1, "the waiting saga went on");
    let err = engine.store().load(newer).unwrap_err();
    assert!(err.to_string().contains("format version 2"), "{err}");
    assert_eq!(
        engine.store().unfinished().unwrap(),
        [newer],
        "left as it was"
    );
    drop(engine);

    let db = sled::open(&path).unwrap();
    let after = db
        .open_tree("sagas")
        .unwrap()
        .get(newer.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(after.to_vec(), bytes, "the record is untouched");
    sandbox.shutdown().await;
}

/// An engine over `store` and `sandbox`. A due time read back from the
/// store is capped at max_interval, here 100 ms, so waits are short.
fn engine(store: SledStore, sandbox: &Sandbox) -> Engine<SledStore, HttpServices> {
    let services = HttpServices::new(Endpoints::all_at(&sandbox.url()), |_| {
        std::time::Duration::from_secs(2)
    })
    .unwrap();
    let mut options = Options::default();
    options.policies.external.max_interval = std::time::Duration::from_millis(100);
    options.policies.external.initial_interval = std::time::Duration::from_millis(10);
    Engine::new(store, services, options).unwrap()
}

async fn sandbox(faults: &[&str]) -> Sandbox {
    let options = SandboxOptions {
        faults: faults.iter().map(|f| f.parse().unwrap()).collect(),
        seed: 1,
    };
    Sandbox::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

/// Runs `input` into `store` in `dir`, with extra arguments and a crash
/// point; the outcome is read back from the store, not from here.
fn run(dir: &Path, input: &str, url: &str, store: &str, extra: &[&str], crash: Option<&str>) {
    std::fs::write(dir.join("in.ndjson"), input).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_regsaga"));
    command
        .current_dir(dir)
        .args(["run", "in.ndjson", "--services", url, "--store", store])
        .args(extra)
        .env_remove("REGSAGA_CRASH_AT");
    if let Some(spec) = crash {
        command.env("REGSAGA_CRASH_AT", spec);
    }
    let output: Output = command.output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes tests/fixtures/store-v1; run by hand for a new format version only"]
async fn regenerate_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let target = "store-v1";

    // Completed, and CompletedWithErrors: declined payments.
    let s = sandbox(&["payment:decline@1.0"]).await;
    let done = concat!(
        r#"{"email":"ada@example.com","fullName":"Ada Lovelace","phoneNumber":"+447700900001","#,
        r#""preferences":{"newsletter":true,"sms_notifications":false}}"#,
        "\n",
        r#"{"email":"grace@example.org","fullName":"Grace Hopper","#,
        r#""initialPayment":{"amount":29.99,"paymentMethod":"credit_card"}}"#,
        "\n",
        r#"{"email":"zoe@example.com","fullName":"Zoë Ångström-Ölund","#,
        r#""initialPayment":{"amount":500,"currency":"jpy","paymentMethod":"paypal"}}"#,
        "\n",
    );
    run(d, done, &s.url(), target, &[], None);
    s.shutdown().await;

    // Failed: another store's saga made this profile first.
    let s = sandbox(&[]).await;
    let taken = r#"{"email":"taken@example.net","fullName":"Taken Name"}"#;
    run(d, taken, &s.url(), "other", &[], None);
    run(d, taken, &s.url(), target, &[], None);
    s.shutdown().await;

    // Waiting half an hour for a retry of its welcome e-mail, recorded just
    // before the process died.
    let s = sandbox(&["email:http-503@1.0"]).await;
    let hour = "[retry.external]\ninitial_interval = \"30m\"\nmax_interval = \"30m\"\n\
                jitter = \"none\"\n";
    std::fs::write(d.join("hour.toml"), hour).unwrap();
    let waiting = r#"{"email":"wait@example.com","fullName":"Wai Ting"}"#;
    let crash = Some("after-outcome-persisted:send-welcome-email");
    run(
        d,
        waiting,
        &s.url(),
        target,
        &["--config", "hour.toml"],
        crash,
    );
    s.shutdown().await;

    // In flight: its payment attempt recorded, its outcome never.
    let s = sandbox(&[]).await;
    let flying = concat!(
        r#"{"email":"fly@example.com","fullName":"Fly Away","#,
        r#""initialPayment":{"amount":8.2,"paymentMethod":"debit_card"}}"#
    );
    let crash = Some("after-attempt-persisted:charge-payment");
    run(d, flying, &s.url(), target, &[], crash);
    s.shutdown().await;

    let _ = std::fs::remove_dir_all(common::fixture_store());
    copy_dir(&d.join(target), &common::fixture_store());
}

#[test]
fn the_payment_audit_lists_every_payment_operation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    copy_dir(&common::fixture_store(), &path);

    let output = Command::new(env!("CARGO_BIN_EXE_regsaga"))
        .args(["inspect", "audit", "--json", "--store"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success());
    let rows: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // Two declines and one attempt caught in flight.
    assert_eq!(rows.len(), 3);
    let amounts: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["amountMinor"].as_u64().unwrap(),
                r["currency"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(amounts.contains(&(500, "jpy")) && amounts.contains(&(2999, "usd")));
    for row in &rows {
        let who = row["who"].as_str().unwrap();
        assert!(who.contains("***@"), "masked: {who}");
        let key = row["idempotencyKey"].as_str().unwrap();
        assert_eq!(
            key,
            format!("{}:charge-payment", row["sagaId"].as_str().unwrap())
        );
    }
    let outcomes: Vec<_> = rows
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "failed").count(), 2);
    assert!(outcomes.contains(&"pending"));
}

#[test]
fn dump_and_stats_read_the_whole_store_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    copy_dir(&common::fixture_store(), &path);
    let inspect = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_regsaga"))
            .arg("inspect")
            .args(args)
            .arg("--store")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };

    let dump = inspect(&["dump"]);
    let sagas: Vec<serde_json::Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sagas.len(), 6);
    for saga in &sagas {
        assert!(saga["registration"]["email"].is_string());
        assert!(saga["steps"].is_array() && saga["result"].is_object());
    }
    assert_eq!(inspect(&["dump", "--status", "failed"]).lines().count(), 1);

    let stats: serde_json::Value = serde_json::from_str(&inspect(&["stats", "--json"])).unwrap();
    assert_eq!(stats["sagas"], 6);
    assert_eq!(stats["byStatus"]["CompletedWithErrors"], 2);
    assert_eq!(stats["services"]["payment"]["failures"]["declined"], 2);
    assert!(stats["services"]["profile"]["latencyP50Ms"].is_u64());

    // Reading twice gives the same: nothing was written in between.
    assert_eq!(inspect(&["dump"]), dump);
}
