//! Crash safety of the real binary. `regsaga run` is killed with SIGKILL
//! in the middle of its work, several times, on the same store and the
//! same input, and so is one `resume`; then `resume` and a last `run`
//! finish the job. Another run is stopped with SIGTERM, the polite way.
//! The sandbox runs in this test process, so its ledger outlives every
//! kill and shows whether anything was lost or done twice.
//!
//! The kill delays are random; each is printed, so a failing run can be
//! read back. A kill that lands after a process has finished is fine:
//! the checks are invariants that hold however far each process got.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{check_ledger, inspect_list, inspect_show, output, read_records, regsaga, TERMINAL};
use rand::Rng;
use regsaga::sandbox::LedgerSnapshot;
use serde_json::Value;
use tempfile::TempDir;

/// How many runs are killed before the ones that may finish.
const KILLED_RUNS: usize = 3;

/// After SIGKILLs at random moments, every record ends with exactly one
/// completed saga, one profile and (if paid) one charge, and each step
/// left in doubt was retried under its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_processes_lose_nothing_and_repeat_nothing() {
    let sandbox = common::sandbox(&[], 0).await;
    let url = sandbox.url();
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    // 2,000 fictional sign-ups, the first of ../shared/data's 10,000.
    let input = common::data("registrations-2000.ndjson");
    let inputs = read_records(&input);
    let run = || {
        let mut cmd = regsaga(dir.path());
        cmd.arg("run")
            .arg(&input)
            .args(["--services", &url, "--store"])
            .arg(&store);
        cmd
    };
    let resume = || {
        let mut cmd = regsaga(dir.path());
        cmd.args(["resume", "--services", &url, "--store"])
            .arg(&store);
        cmd
    };

    let mut rng = rand::rng();
    for round in 1..=KILLED_RUNS {
        let delay = Duration::from_millis(rng.random_range(200..600));
        kill_after(dir.path(), run(), &format!("run-{round}"), delay);
    }
    // A kill may land before the store exists; then there is no
    // leftover to resume.
    let in_doubt = listed(dir.path(), &store).map(|rows| in_flight(&rows));
    if let Some(in_doubt) = &in_doubt {
        eprintln!("{} steps found in flight", in_doubt.len());
        let delay = Duration::from_millis(rng.random_range(50..300));
        kill_after(dir.path(), resume(), "resume-1", delay);
        finish_leftovers(dir.path(), &store, resume());
    }

    // A run to the end registers what no killed run got to, and returns
    // the existing saga of everything else.
    let last = output(&mut run());
    last.expect_code(0);
    let results = last.json_lines();
    let rows = inspect_list(dir.path(), &store);
    check_rows(&rows, inputs.len());
    let answered: BTreeSet<&str> = results
        .iter()
        .map(|r| r["sagaId"].as_str().unwrap())
        .collect();
    let stored: BTreeSet<&str> = rows.iter().map(|r| r["sagaId"].as_str().unwrap()).collect();
    assert_eq!(
        answered, stored,
        "the last run answers with the stored sagas"
    );

    let again = output(&mut resume());
    again.expect_code(0);
    assert!(
        again.stderr.contains("nothing to resume"),
        "{}",
        again.stderr
    );

    let ledger = sandbox.state();
    check_ledger(&ledger, &inputs, &results);
    for (saga, step) in in_doubt.iter().flatten() {
        check_in_doubt_attempt(dir.path(), &store, &ledger, saga, step);
    }
    sandbox.shutdown().await;
}

/// SIGTERM is a request to stop, not a crash: attempts in flight finish,
/// nothing new starts, the exit code is 130, and no saga is left in
/// doubt. `resume` then finishes every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_run_stops_cleanly_and_resume_finishes() {
    let sandbox = common::sandbox(&[], 0).await;
    let url = sandbox.url();
    let dir = TempDir::new().unwrap();
    let store = dir.path().join("store");
    let input = common::data("registrations-200.ndjson");
    let inputs = read_records(&input);

    let child = regsaga(dir.path())
        .arg("run")
        .arg(&input)
        .args(["--services", &url, "--store"])
        .arg(&store)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The signal is sent once the run is at work, which is after it
    // has set up its signal handling; then at a random moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.state().requests.is_empty() {
        assert!(Instant::now() < deadline, "the run sent no request");
        std::thread::sleep(Duration::from_millis(5));
    }
    let delay = Duration::from_millis(rand::rng().random_range(0..300));
    std::thread::sleep(delay);
    let signalled = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let out: common::Output = child.wait_with_output().unwrap().into();
    eprintln!(
        "SIGTERM {delay:?} after the first request: exit code {:?}",
        out.code
    );

    // A run that finished before the signal is valid too.
    if out.code == Some(0) {
        assert_eq!(out.json_lines().len(), inputs.len());
    } else {
        out.expect_code(130);
        assert!(out.stderr.contains("regsaga resume"), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        let rows = listed(dir.path(), &store).unwrap_or_default();
        for row in &rows {
            assert_ne!(row["status"], "InFlight", "left in doubt: {row}");
        }
        eprintln!("{} sagas stored at the stop", rows.len());
    }

    let resumed = output(
        regsaga(dir.path())
            .args(["resume", "--services", &url, "--store"])
            .arg(&store),
    );
    if out.code == Some(130) && store.exists() {
        resumed.expect_code(0);
    }
    let last = output(
        regsaga(dir.path())
            .arg("run")
            .arg(&input)
            .args(["--services", &url, "--store"])
            .arg(&store),
    );
    last.expect_code(0);
    check_rows(&inspect_list(dir.path(), &store), inputs.len());
    check_ledger(&sandbox.state(), &inputs, &last.json_lines());
    sandbox.shutdown().await;
}

/// Starts `cmd`, kills it with SIGKILL after `delay` and reaps it. Its
/// output goes to files named after `label` in `dir`.
fn kill_after(dir: &Path, mut cmd: Command, label: &str, delay: Duration) {
    // Files, not pipes: a pipe nobody reads would stall the child.
    let stdout = File::create(dir.join(format!("{label}.stdout"))).unwrap();
    let stderr_path = dir.join(format!("{label}.stderr"));
    let stderr = File::create(&stderr_path).unwrap();
    let mut child = cmd
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap();

    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().unwrap() {
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        assert!(status.success(), "{label} failed on its own: {log}");
        eprintln!("{label}: finished before the kill at {delay:?}");
        return;
    }
    // `Child::kill` sends SIGKILL on Unix: no destructor, no flush.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "{label} ended by a signal");
    eprintln!("{label}: killed after {delay:?}");
}

/// The rows of `inspect list --json`, or `None` if there is no store yet.
fn listed(dir: &Path, store: &Path) -> Option<Vec<Value>> {
    let out = output(
        regsaga(dir)
            .args(["inspect", "list", "--json", "--store"])
            .arg(store),
    );
    if out.code == Some(1) && out.stderr.contains("there is no regsaga store") {
        return None;
    }
    out.expect_code(0);
    Some(out.json_lines())
}

/// The sagas left with an attempt in flight: one for each step found in
/// flight, with that step.
fn in_flight(rows: &[Value]) -> Vec<(String, String)> {
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_flight: BTreeMap<String, String> = BTreeMap::new();
    for row in rows {
        let status = row["status"].as_str().unwrap();
        let step = row["step"].as_str().unwrap_or("-");
        *states.entry(format!("{status} at {step}")).or_default() += 1;
        if status == "InFlight" {
            let saga = row["sagaId"].as_str().unwrap().to_owned();
            in_flight.entry(step.to_owned()).or_insert(saga);
        }
    }
    eprintln!("after the kills: {states:?}");
    in_flight
        .into_iter()
        .map(|(step, saga)| (saga, step))
        .collect()
}

/// `resume` alone drives every saga the killed processes left unfinished.
fn finish_leftovers(dir: &Path, store: &Path, mut resume: Command) {
    let resumed = output(&mut resume);
    resumed.expect_code(0);
    let results = resumed.json_lines();
    eprintln!("resume finished {} sagas", results.len());
    for result in &results {
        assert_eq!(result["status"], "Completed", "{result}");
    }
    let rows = inspect_list(dir, store);
    check_rows(&rows, rows.len());
}

/// `count` sagas, one per e-mail, every one finished and completed.
fn check_rows(rows: &[Value], count: usize) {
    assert_eq!(rows.len(), count);
    let mut emails = BTreeMap::new();
    for row in rows {
        let status = row["status"].as_str().unwrap();
        assert!(TERMINAL.contains(&status), "unfinished: {row}");
        assert_eq!(status, "Completed", "{row}");
        let email = row["email"].as_str().unwrap();
        let previous = emails.insert(email, row["sagaId"].clone());
        assert!(previous.is_none(), "two sagas for {email}");
    }
}

/// An attempt a kill left in doubt shows as `interrupted`, counts as an
/// attempt, and was followed by one with the same key that succeeded.
fn check_in_doubt_attempt(
    dir: &Path,
    store: &Path,
    ledger: &LedgerSnapshot,
    saga: &str,
    step: &str,
) {
    let detail = inspect_show(dir, store, saga);
    let key = format!("{saga}:{step}");
    let steps = detail["steps"].as_array().unwrap();
    let shown = steps.iter().find(|s| s["step"] == step).unwrap();
    assert_eq!(shown["idempotencyKey"], key.as_str());

    let attempts = shown["attempts"].as_array().unwrap();
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["number"].as_u64().unwrap())
        .collect();
    let dropped = shown["earlierAttempts"].as_u64().unwrap();
    let count = shown["attemptCount"].as_u64().unwrap();
    let expected: Vec<u64> = (dropped + 1..=count).collect();
    assert_eq!(numbers, expected, "{key}: numbered after the dropped ones");
    assert!(outcomes.contains(&"interrupted"), "{key}: {outcomes:?}");
    assert_eq!(outcomes.last(), Some(&"succeeded"), "{key}: {outcomes:?}");

    // A killed request may never have reached the sandbox; the last one
    // did. A profile lookup after `409 uniqueness` is part of the attempt
    // that met the 409, so only the step's own calls are counted.
    let requests = ledger
        .requests
        .iter()
        .filter(|r| r.idempotency_key.as_deref() == Some(key.as_str()))
        .filter(|r| r.method != "GET")
        .count();
    assert!(
        (1..=count as usize).contains(&requests),
        "{key}: {requests} requests for {count} attempts"
    );
}
