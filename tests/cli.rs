//! The `regsaga` binary from the outside. Every test runs the real
//! executable in a temporary directory with a store of its own, against
//! the embedded sandbox or a sandbox on a loopback port, and checks what
//! it printed, what it stored and what the services saw.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    by_record, check_ledger, config, data, head, inspect_list, inspect_show, key_saga, output,
    output_with_stdin, read_records, regsaga, run, SandboxProcess, FAST_RETRIES, TERMINAL,
};
use regsaga::sandbox::LedgerSnapshot;
use serde_json::Value;
use tempfile::TempDir;

/// The keys of one `run` result line.
const RESULT_KEYS: [&str; 9] = [
    "record",
    "sagaId",
    "correlationId",
    "status",
    "userId",
    "profileCreated",
    "paymentProcessed",
    "notificationsSent",
    "errors",
];

fn keys(value: &Value) -> BTreeSet<&str> {
    let object = value.as_object().unwrap_or_else(|| panic!("{value}"));
    object.keys().map(String::as_str).collect()
}

/// A result line without its `record`: the result as the library has it.
fn without_record(result: &Value) -> Value {
    let mut result = result.clone();
    result.as_object_mut().unwrap().remove("record");
    result
}

/// The first `n` records of the 200-record sample, as a file in `dir`.
fn sample(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join(format!("registrations-{n}.ndjson"));
    head(&data("registrations-200.ndjson"), n, &path)
}

/// `run` with the embedded sandbox and no faults: one terminal result per
/// record, in the documented shape, with the steps each record asks for.
#[test]
fn run_prints_one_result_per_record() {
    let dir = TempDir::new().unwrap();
    let input = data("registrations-200.ndjson");
    let inputs = read_records(&input);

    let out = run(dir.path(), &input, &dir.path().join("store"), &[]);
    out.expect_code(0);
    let results = out.json_lines();
    assert_eq!(results.len(), inputs.len());

    for result in &results {
        assert_eq!(keys(result), BTreeSet::from(RESULT_KEYS), "{result}");
        let status = result["status"].as_str().unwrap();
        assert!(TERMINAL.contains(&status), "{result}");
        assert!(result["sagaId"].is_string() && result["correlationId"].is_string());
        assert!(result["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string));
        assert_eq!(result["profileCreated"], result["userId"].is_string());

        // Without faults every step succeeds: a welcome e-mail always, a
        // payment and its confirmation for a paid record, an SMS for a
        // record with a phone number.
        let input = &inputs[result["record"].as_u64().unwrap() as usize - 1];
        let paid = input.get("initialPayment").is_some();
        let phone = input.get("phoneNumber").is_some();
        assert_eq!(status, "Completed", "{result}");
        assert_eq!(result["paymentProcessed"], paid, "{result}");
        let prefixes: Vec<&str> = result["notificationsSent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                assert!(n["status"].is_string(), "{n}");
                let id = n["notificationId"].as_str().unwrap();
                id.split('_').next().unwrap()
            })
            .collect();
        let mut expected = vec!["welcome"];
        if paid {
            expected.push("payment");
        }
        if phone {
            expected.push("sms");
        }
        assert_eq!(prefixes, expected, "{result}");
    }

    let records: Vec<u64> = by_record(&results).into_keys().collect();
    assert_eq!(records, (1..=inputs.len() as u64).collect::<Vec<_>>());
    assert!(
        out.stderr.contains("regsaga: 200 registrations"),
        "summary line: {}",
        out.stderr
    );
    assert!(!dir.path().join("regsaga.db").exists());
}

/// Re-submission returns the existing saga: the second run of the same
/// input prints the same results and sends not a single request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_input_twice_returns_the_same_sagas() {
    let sandbox = common::sandbox(&[], 0).await;
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 30);
    let store = dir.path().join("store");
    let url = sandbox.url();

    let first = run(dir.path(), &input, &store, &["--services", &url]);
    first.expect_code(0);
    let requests = sandbox.state().requests.len();
    let second = run(dir.path(), &input, &store, &["--services", &url]);
    second.expect_code(0);

    let first = by_record(&first.json_lines());
    let second = by_record(&second.json_lines());
    assert_eq!(first.len(), 30);
    assert_eq!(first, second);
    assert_eq!(sandbox.state().requests.len(), requests, "nothing called");
    assert_eq!(inspect_list(dir.path(), &store).len(), 30);
    sandbox.shutdown().await;
}

/// The same record twice in one input is one saga; the same e-mail with
/// other details is rejected for that record alone (exit code 3), and
/// its raw line goes to the rejects file.
#[test]
fn a_repeated_email_in_one_input_is_one_saga() {
    let dir = TempDir::new().unwrap();
    let records = read_records(&data("registrations-200.ndjson"));
    let mut changed = records[0].clone();
    changed["fullName"] = "Someone Else".into();
    let lines = [&records[0], &records[1], &records[0], &changed];
    let text: String = lines.iter().map(|r| format!("{r}\n")).collect();
    let input = dir.path().join("repeated.ndjson");
    std::fs::write(&input, &text).unwrap();
    let store = dir.path().join("store");
    let rejects = dir.path().join("rejects.ndjson");

    let out = run(
        dir.path(),
        &input,
        &store,
        &["--rejects", rejects.to_str().unwrap()],
    );
    out.expect_code(3);
    let results = by_record(&out.json_lines());
    assert_eq!(results.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(results[&1]["sagaId"], results[&3]["sagaId"]);
    assert_ne!(results[&1]["sagaId"], results[&2]["sagaId"]);

    let existing = results[&1]["sagaId"].as_str().unwrap();
    let rejected: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("rejected "))
        .collect();
    assert_eq!(rejected.len(), 1, "{}", out.stderr);
    let line = rejected[0];
    assert!(
        line.contains(" 4: ") && line.contains("already registered") && line.contains(existing),
        "{line}"
    );
    let written = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(
        written.lines().collect::<Vec<_>>(),
        [text.lines().nth(3).unwrap()]
    );
    assert_eq!(inspect_list(dir.path(), &store).len(), 2);
}

/// A JSON array, from a file or from stdin, and NDJSON from stdin.
#[test]
fn json_arrays_and_stdin_are_read() {
    let dir = TempDir::new().unwrap();
    let records = read_records(&data("registrations-200.ndjson"));
    let records = &records[..4];
    let array = serde_json::to_string_pretty(records).unwrap();
    let ndjson: String = records.iter().map(|r| format!("{r}\n")).collect();
    let emails: BTreeSet<String> = records
        .iter()
        .map(|r| common::normalized_email(r["email"].as_str().unwrap()))
        .collect();

    let file = dir.path().join("in.json");
    std::fs::write(&file, &array).unwrap();
    let runs = [
        (
            "array file",
            run(dir.path(), &file, &dir.path().join("a"), &[]),
        ),
        ("array stdin", stdin_run(dir.path(), "b", array.as_bytes())),
        (
            "ndjson stdin",
            stdin_run(dir.path(), "c", ndjson.as_bytes()),
        ),
    ];

    for (name, out) in runs {
        out.expect_code(0);
        let results = by_record(&out.json_lines());
        assert_eq!(
            results.into_keys().collect::<Vec<_>>(),
            [1, 2, 3, 4],
            "{name}"
        );
    }
    for store in ["a", "b", "c"] {
        let rows = inspect_list(dir.path(), &dir.path().join(store));
        let stored: BTreeSet<String> = rows
            .iter()
            .map(|row| row["email"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(stored, emails, "store {store}");
    }
}

fn stdin_run(dir: &Path, store: &str, input: &[u8]) -> common::Output {
    let mut cmd = regsaga(dir);
    cmd.args(["run", "-", "--store"]).arg(dir.join(store));
    output_with_stdin(&mut cmd, input)
}

/// A byte-order mark, CRLF endings and blank lines are accepted, and
/// `record` is the line number, blank lines counted.
#[test]
fn record_is_the_line_number_of_the_input() {
    let dir = TempDir::new().unwrap();
    let records = read_records(&data("registrations-200.ndjson"));
    let text = format!(
        "\u{feff}{}\r\n\r\n{}\r\n   \r\n{}\r\n",
        records[0], records[1], records[2]
    );
    let input = dir.path().join("crlf.ndjson");
    std::fs::write(&input, text).unwrap();

    let out = run(dir.path(), &input, &dir.path().join("store"), &[]);
    out.expect_code(0);
    let results = by_record(&out.json_lines());
    assert_eq!(results.into_keys().collect::<Vec<_>>(), [1, 3, 5]);
}

/// The malformed file: each rejected record is named by line and field,
/// its raw line goes to the rejects file, and the two valid records run.
#[test]
fn rejected_records_are_named_and_kept_and_the_rest_run() {
    let dir = TempDir::new().unwrap();
    let input = data("registrations-bad.ndjson");
    let rejects = dir.path().join("rejects.ndjson");
    let store = dir.path().join("store");

    let out = run(
        dir.path(),
        &input,
        &store,
        &["--rejects", rejects.to_str().unwrap()],
    );
    out.expect_code(3);

    let expected = [
        (1, "email: "),
        (2, "email: "),
        (3, "fullName: "),
        (4, "phoneNumber: "),
        (5, "initialPayment.amount: "),
        (6, "initialPayment.amount: "),
        (7, "not valid JSON"),
        (8, "initialPayment.amount: "),
        (9, "initialPayment.paymentMethod: "),
        (10, "initialPayment.amount: "),
        (11, "email: "),
        (12, "fullName: "),
        (13, "phoneNumber: "),
        (14, "initialPayment.paymentMethod: "),
        (15, "preferences.newsletter: "),
    ];
    let reasons: BTreeMap<usize, &str> = out
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("rejected line "))
        .map(|rest| {
            let (number, reason) = rest.split_once(": ").unwrap();
            (number.parse().unwrap(), reason)
        })
        .collect();
    assert_eq!(reasons.len(), expected.len(), "{}", out.stderr);
    for (line, field) in expected {
        let reason = reasons.get(&line).copied().unwrap_or_default();
        assert!(reason.starts_with(field), "line {line}: {reason:?}");
    }
    // Rejections name the rule, not the value that broke it.
    for value in ["2025550101", "carrier_pigeon", "29.999"] {
        assert!(
            !out.stderr.contains(value),
            "{value} echoed: {}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("15 records rejected"), "{}", out.stderr);

    let results = by_record(&out.json_lines());
    assert_eq!(results.keys().copied().collect::<Vec<_>>(), [16, 17]);
    assert!(results.values().all(|r| r["status"] == "Completed"));
    assert_eq!(results[&16]["paymentProcessed"], true);
    assert_eq!(inspect_list(dir.path(), &store).len(), 2);

    let text = std::fs::read_to_string(&input).unwrap();
    let raw: Vec<&str> = text.lines().take(15).collect();
    let written = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(written.lines().collect::<Vec<_>>(), raw);
}

/// Against a separate `regsaga sandbox` process: the ledger holds exactly
/// what the input asked for, and every request is tagged with its saga.
#[tokio::test]
async fn a_sandbox_process_sees_exactly_what_the_input_asks_for() {
    let dir = TempDir::new().unwrap();
    let sandbox = SandboxProcess::start(dir.path(), &[]);
    let input = sample(dir.path(), 100);
    let inputs = read_records(&input);

    let out = run(
        dir.path(),
        &input,
        &dir.path().join("store"),
        &["--services", &sandbox.url],
    );
    out.expect_code(0);

    let ledger = sandbox.state().await;
    check_ledger(&ledger, &inputs, &out.json_lines());
}

/// Faults on payment and SMS with short retries: every saga ends, the
/// errors say exactly what failed, and the history of each step in the
/// store matches the requests the sandbox saw for its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_every_attempt_is_recorded() {
    let faults = ["payment:http-503@0.3", "sms:timeout@0.2"];
    let sandbox = common::sandbox(&faults, 7).await;
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 60);
    let inputs = read_records(&input);
    let store = dir.path().join("store");
    let retries =
        FAST_RETRIES.replace("[retry.external]\n", "[retry.external]\nmax_attempts = 2\n");
    let cfg = config(dir.path(), "fast.toml", &retries);

    let url = sandbox.url();
    let out = run(
        dir.path(),
        &input,
        &store,
        &["--services", &url, "--config", cfg.to_str().unwrap()],
    );
    out.expect_code(0);
    let results = by_record(&out.json_lines());
    assert_eq!(results.len(), inputs.len());
    let ledger = sandbox.state();
    for fault in ["http-503", "timeout"] {
        let fired = ledger
            .requests
            .iter()
            .any(|r| r.fault.as_deref() == Some(fault));
        assert!(fired, "no {fault} fault fired");
    }

    let mut most_retried: Option<(usize, Value)> = None;
    for (record, result) in &results {
        let input = &inputs[*record as usize - 1];
        check_payment_outcome(input, result, &ledger);

        let saga = result["sagaId"].as_str().unwrap();
        let detail = inspect_show(dir.path(), &store, saga);
        assert_eq!(detail["result"], without_record(result));
        check_attempts_match_requests(&detail, &ledger);
        check_payment_history(&detail, input, &ledger);

        let attempts = detail["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["attempts"].as_array().unwrap().len())
            .max()
            .unwrap();
        if most_retried
            .as_ref()
            .is_none_or(|(most, _)| attempts > *most)
        {
            most_retried = Some((attempts, detail));
        }
    }

    let given_up = results
        .values()
        .filter(|r| r["paymentProcessed"] == false)
        .filter(|r| {
            r["errors"]
                .to_string()
                .contains("Failed to process payment")
        })
        .count();
    eprintln!("{given_up} payments given up on");

    let (attempts, detail) = most_retried.unwrap();
    assert!(attempts > 1, "with these faults some step needs a retry");
    check_text_shows_every_attempt(dir.path(), &store, &detail);
    sandbox.shutdown().await;
}

fn check_payment_outcome(input: &Value, result: &Value, ledger: &LedgerSnapshot) {
    let status = result["status"].as_str().unwrap();
    assert!(TERMINAL.contains(&status), "{result}");
    assert_eq!(
        result["profileCreated"], true,
        "no profile faults: {result}"
    );

    let payment_errors = result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.as_str().unwrap().starts_with("Failed to process payment"))
        .count();
    let processed = result["paymentProcessed"] == true;
    let expected_errors = usize::from(!processed && input.get("initialPayment").is_some());
    assert_eq!(payment_errors, expected_errors, "{result}");
    if expected_errors == 1 {
        assert_eq!(status, "CompletedWithErrors", "{result}");
    }

    let saga = result["sagaId"].as_str().unwrap();
    let charges = ledger
        .charges
        .iter()
        .filter(|c| c.saga_id.as_deref() == Some(saga))
        .count();
    assert_eq!(charges, usize::from(processed), "{result}");
}

/// A payment given up on was tried `max_attempts` (2) times, each refused
/// by the injected 503, and left the profile waiting for payment.
fn check_payment_history(detail: &Value, input: &Value, ledger: &LedgerSnapshot) {
    let result = &detail["result"];
    let user = result["userId"].as_str().unwrap();
    let profile = ledger.profiles.iter().find(|p| p.id == user).unwrap();
    let failed = result["paymentProcessed"] == false && input.get("initialPayment").is_some();
    let status = if failed { "PENDING_PAYMENT" } else { "ACTIVE" };
    assert_eq!(profile.registration_status.as_deref(), Some(status));
    if !failed {
        return;
    }

    let steps = detail["steps"].as_array().unwrap();
    let payment = steps
        .iter()
        .find(|s| s["step"] == "charge-payment")
        .unwrap();
    let attempts = payment["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{payment}");
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["outcome"], "failed", "{attempt}");
        assert_eq!(attempt["httpStatus"], 503, "{attempt}");
        let last = i + 1 == attempts.len();
        let gave_up = if last {
            "attempts-exhausted".into()
        } else {
            Value::Null
        };
        assert_eq!(attempt["gaveUp"], gave_up, "{attempt}");
    }
}

/// Every step's attempts in the store are the requests the sandbox saw
/// with that step's key, and the saga's keys are the only ones it sent.
/// (A profile lookup by `externalId` after a `409` belongs to the attempt
/// that met the 409, so GETs are not counted as attempts.)
fn check_attempts_match_requests(detail: &Value, ledger: &LedgerSnapshot) {
    let saga = detail["sagaId"].as_str().unwrap();
    let correlation = detail["correlationId"].as_str().unwrap();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for request in &ledger.requests {
        let key = request.idempotency_key.as_deref().unwrap();
        if key_saga(key) == saga {
            assert_eq!(request.correlation_id.as_deref(), Some(correlation));
            if request.method != "GET" {
                *seen.entry(key).or_default() += 1;
            }
        }
    }

    let mut recorded = BTreeMap::new();
    for step in detail["steps"].as_array().unwrap() {
        let key = step["idempotencyKey"].as_str().unwrap();
        let name = step["step"].as_str().unwrap();
        assert_eq!(key, format!("{saga}:{name}"));
        let count = step["attemptCount"].as_u64().unwrap() as usize;
        let kept = step["attempts"].as_array().unwrap().len();
        let dropped = step["earlierAttempts"].as_u64().unwrap() as usize;
        assert_eq!(count, kept + dropped, "{step}");
        recorded.insert(key, count);
    }
    assert_eq!(
        seen, recorded,
        "requests per key vs attempts of saga {saga}"
    );
}

/// `inspect show` as text lists every attempt of every step.
fn check_text_shows_every_attempt(dir: &Path, store: &Path, detail: &Value) {
    let saga = detail["sagaId"].as_str().unwrap();
    let out = output(
        regsaga(dir)
            .args(["inspect", "show", saga, "--store"])
            .arg(store),
    );
    out.expect_code(0);

    let lines: Vec<&str> = out.stdout.lines().collect();
    let attempt_lines = lines.iter().filter(|l| l.starts_with("  #")).count();
    let mut total = 0;
    for step in detail["steps"].as_array().unwrap() {
        let key = step["idempotencyKey"].as_str().unwrap();
        let heading = lines.iter().position(|l| l.contains(key)).unwrap();
        for attempt in step["attempts"].as_array().unwrap() {
            total += 1;
            let start = format!(
                "  #{} {} {}",
                attempt["number"],
                attempt["startedAt"].as_str().unwrap(),
                attempt["outcome"].as_str().unwrap()
            );
            let line = lines[heading..]
                .iter()
                .find(|l| l.starts_with(&start))
                .unwrap_or_else(|| panic!("no line {start:?} in\n{}", out.stdout));
            if let Some(status) = attempt["httpStatus"].as_u64() {
                assert!(line.contains(&format!("HTTP {status}")), "{line}");
            }
            for field in ["message", "gaveUp"] {
                if let Some(text) = attempt[field].as_str() {
                    assert!(line.contains(text), "{field}: {line}");
                }
            }
        }
    }
    assert_eq!(attempt_lines, total, "{}", out.stdout);
}

/// `inspect list` and `inspect show`: the JSON shapes, the filters, the
/// lookup by e-mail, and clear errors for what is not there.
#[test]
fn inspect_lists_and_shows_sagas() {
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 5);
    let inputs = read_records(&input);
    let store = dir.path().join("store");
    let out = run(dir.path(), &input, &store, &[]);
    out.expect_code(0);
    let results = by_record(&out.json_lines());

    let rows = inspect_list(dir.path(), &store);
    assert_eq!(rows.len(), 5);
    let row_keys = BTreeSet::from([
        "sagaId",
        "email",
        "status",
        "step",
        "attempts",
        "nextAttemptDue",
        "updatedAt",
    ]);
    for row in &rows {
        assert_eq!(keys(row), row_keys, "{row}");
        assert_eq!(row["status"], "Completed");
        assert!(row["step"].is_null() && row["nextAttemptDue"].is_null());
        assert!(row["attempts"].as_u64().unwrap() >= 4, "{row}");
    }
    let ids: Vec<&str> = rows.iter().map(|r| r["sagaId"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "oldest first");
    let from_run: BTreeSet<&str> = results
        .values()
        .map(|r| r["sagaId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), from_run);

    check_list_filters(dir.path(), &store, &ids);
    check_show(dir.path(), &store, &inputs, &results, &rows);
    check_show_errors(dir.path(), &store);
}

fn check_list_filters(dir: &Path, store: &Path, ids: &[&str]) {
    let list = |extra: &[&str]| {
        let out = output(
            regsaga(dir)
                .args(["inspect", "list", "--store"])
                .arg(store)
                .args(extra),
        );
        out.expect_code(0);
        out
    };
    assert_eq!(list(&["--json", "--limit", "2"]).json_lines().len(), 2);
    assert_eq!(
        list(&["--json", "--status", "completed"])
            .json_lines()
            .len(),
        5
    );
    assert_eq!(
        list(&["--json", "--status", "Failed"]).json_lines().len(),
        0
    );

    let table = list(&[]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("SAGA") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert_eq!(lines.len(), 1 + ids.len(), "{table}");
    for id in ids {
        assert!(table.contains(id), "{table}");
    }
}

fn check_show(
    dir: &Path,
    store: &Path,
    inputs: &[Value],
    results: &BTreeMap<u64, Value>,
    rows: &[Value],
) {
    let result = &results[&1];
    let saga = result["sagaId"].as_str().unwrap();
    let detail = inspect_show(dir, store, saga);
    let detail_keys = BTreeSet::from([
        "sagaId",
        "correlationId",
        "email",
        "status",
        "createdAt",
        "updatedAt",
        "waiting",
        "result",
        "steps",
    ]);
    assert_eq!(keys(&detail), detail_keys);
    assert_eq!(detail["result"], without_record(result));
    assert!(detail["waiting"].is_null());

    let attempt_keys = BTreeSet::from([
        "number",
        "startedAt",
        "endedAt",
        "durationMs",
        "outcome",
        "errorKind",
        "httpStatus",
        "message",
        "retryAfterMs",
        "nextDue",
        "gaveUp",
    ]);
    let steps = detail["steps"].as_array().unwrap();
    assert_eq!(steps[0]["step"], "create-profile");
    assert_eq!(steps.last().unwrap()["step"], "record-activity");
    let mut attempts = 0;
    for step in steps {
        let step_keys = BTreeSet::from([
            "step",
            "service",
            "idempotencyKey",
            "attemptCount",
            "earlierAttempts",
            "attempts",
        ]);
        assert_eq!(keys(step), step_keys);
        for attempt in step["attempts"].as_array().unwrap() {
            assert_eq!(keys(attempt), attempt_keys, "{attempt}");
            assert_eq!(attempt["outcome"], "succeeded");
            attempts += 1;
        }
    }
    let row = rows.iter().find(|r| r["sagaId"] == saga).unwrap();
    assert_eq!(row["attempts"], attempts);

    // By e-mail, whatever the case of its domain.
    let email = inputs[0]["email"].as_str().unwrap();
    let (local, domain) = email.rsplit_once('@').unwrap();
    for key in [
        email.to_owned(),
        format!("{local}@{}", domain.to_uppercase()),
    ] {
        let out = output(
            regsaga(dir)
                .args(["inspect", "show", &key, "--store"])
                .arg(store),
        );
        out.expect_code(0);
        let first = out.stdout.lines().next().unwrap_or_default();
        assert_eq!(first, format!("saga         {saga}"), "{key}");
    }
}

fn check_show_errors(dir: &Path, store: &Path) {
    let show = |key: &str, store: &Path| {
        let out = output(
            regsaga(dir)
                .args(["inspect", "show", key, "--store"])
                .arg(store),
        );
        out.expect_code(1);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        out.stderr
    };

    let unknown = "01900000-0000-7000-8000-000000000000";
    let stderr = show(unknown, store);
    assert!(stderr.contains(&format!("no saga {unknown}")), "{stderr}");
    let stderr = show("nobody@example.com", store);
    assert!(
        stderr.contains("no saga for e-mail nobody@example.com"),
        "{stderr}"
    );
    let stderr = show("not-an-id", store);
    assert!(
        stderr.contains("neither a saga id nor an e-mail"),
        "{stderr}"
    );

    let missing = dir.join("no-store-here");
    let stderr = show(unknown, &missing);
    assert!(stderr.contains("there is no regsaga store"), "{stderr}");
    assert!(!missing.exists(), "inspect created a store");
}

/// `resume` on a store whose sagas are all finished says so, prints no
/// result and calls no service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_a_finished_store_does_nothing() {
    let sandbox = common::sandbox(&[], 0).await;
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 5);
    let store = dir.path().join("store");
    let url = sandbox.url();
    run(dir.path(), &input, &store, &["--services", &url]).expect_code(0);
    let requests = sandbox.state().requests.len();

    let out = output(
        regsaga(dir.path())
            .args(["resume", "--services", &url, "--store"])
            .arg(&store),
    );
    out.expect_code(0);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("nothing to resume"), "{}", out.stderr);
    assert_eq!(sandbox.state().requests.len(), requests);
    sandbox.shutdown().await;
}

/// While one process holds a store, another fails at once, naming the
/// store; the first one is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_held_store_is_refused() {
    let sandbox = common::sandbox(&[], 0).await;
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 10);
    let records = read_records(&input);
    let store = dir.path().join("held-store");
    let url = sandbox.url();

    // `run -` opens the store once its first input has arrived and keeps
    // it while stdin stays open.
    let mut first = regsaga(dir.path())
        .args(["run", "-", "--services", &url, "--store"])
        .arg(&store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = first.stdin.take().unwrap();
    writeln!(stdin, "{}\n{}", records[0], records[1]).unwrap();
    stdin.flush().unwrap();

    // Two activity logs mean two sagas ran to their end: the store is open.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.state().activities.len() < 2 {
        assert!(Instant::now() < deadline, "the first run made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let store_arg = store.to_str().unwrap();
    let url_arg = url.as_str();
    let input_arg = input.to_str().unwrap();
    let attempts: [&[&str]; 3] = [
        &[
            "run",
            input_arg,
            "--services",
            url_arg,
            "--store",
            store_arg,
        ],
        &["resume", "--services", url_arg, "--store", store_arg],
        &["inspect", "list", "--store", store_arg],
    ];
    let requests = sandbox.state().requests.len();
    for args in attempts {
        let out = output(regsaga(dir.path()).args(args));
        out.expect_code(1);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.contains(&format!("the store at {store_arg}"))
                && out.stderr.contains("in use by another process"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    assert_eq!(sandbox.state().requests.len(), requests, "nothing called");

    drop(stdin);
    let out: common::Output = first.wait_with_output().unwrap().into();
    out.expect_code(0);
    assert_eq!(out.json_lines().len(), 2);
    sandbox.shutdown().await;
}

/// A configuration that cannot work is refused before anything starts,
/// naming what is wrong.
#[test]
fn bad_configurations_are_refused_by_name() {
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 2);
    let store = dir.path().join("store");
    let cases = [
        ("[retry.external]\nmax_attempts = 0\n", "external services"),
        ("[retry.internal]\nmax_attempts = 0\n", "internal services"),
        ("concurency = 4\n", "concurency"),
        ("[retry.external]\nmax_atempts = 3\n", "max_atempts"),
        ("[store]\ndurability = \"maybe\"\n", "durability"),
    ];

    for (i, (toml, named)) in cases.into_iter().enumerate() {
        let cfg = config(dir.path(), &format!("bad-{i}.toml"), toml);
        let cfg = cfg.to_str().unwrap();
        let out = run(dir.path(), &input, &store, &["--config", cfg]);
        out.expect_code(1);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert!(out.stderr.contains(named), "{toml}: {}", out.stderr);
        assert!(!store.exists(), "{toml}: the store was created");

        let out = output(
            regsaga(dir.path())
                .args(["inspect", "list", "--config", cfg, "--store"])
                .arg(&store),
        );
        out.expect_code(1);
        assert!(out.stderr.contains(named), "{toml}: {}", out.stderr);
    }
}

/// The command line itself: exit code 2 for what clap refuses, the exit
/// codes in `--help`, and errors that name the file or flag at fault.
#[test]
fn command_line_errors_have_their_exit_codes() {
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 2);
    let store = dir.path().join("store");
    let input_arg = input.to_str().unwrap();

    for args in [
        &["run"][..],
        &["run", input_arg, "--concurrency", "0"],
        &["run", input_arg, "--fault", "payment:http-999"],
        &["frobnicate"],
    ] {
        let out = output(regsaga(dir.path()).args(args));
        out.expect_code(2);
        assert!(out.stderr.contains("error"), "{args:?}: {}", out.stderr);
    }

    let help = output(regsaga(dir.path()).arg("--help"));
    help.expect_code(0);
    // Compared word by word: the column widths are not the contract.
    let words: Vec<String> = help
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for line in [
        "Exit codes:",
        "0 success",
        "2 invalid command line",
        "3 some input records were rejected; all others were processed",
    ] {
        assert!(words.iter().any(|w| w == line), "{line}: {}", help.stdout);
    }

    let missing = dir.path().join("missing.ndjson");
    let out = run(dir.path(), &missing, &store, &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("missing.ndjson"), "{}", out.stderr);
    assert!(!store.exists());

    let out = run(
        dir.path(),
        &input,
        &store,
        &[
            "--services",
            "http://127.0.0.1:9",
            "--fault",
            "payment:http-503",
        ],
    );
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("--fault applies to the embedded sandbox"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

/// A refused command leaves nothing behind: `--fault` together with
/// `--services` is refused before the store is opened or created.
#[test]
fn refused_fault_flag_creates_no_store() {
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 1);
    let store = dir.path().join("store");
    let out = run(
        dir.path(),
        &input,
        &store,
        &[
            "--services",
            "http://127.0.0.1:9",
            "--fault",
            "payment:http-503",
        ],
    );
    out.expect_code(1);
    assert!(
        !store.exists(),
        "the refused command created {}",
        store.display()
    );
}

/// Output piped into a reader that stops early (`| head`) must end the
/// command quietly, not with a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 3);
    let store = dir.path().join("store");
    let out = run(dir.path(), &input, &store, &[]);
    out.expect_code(0);
    let saga = out.json_lines()[0]["sagaId"].as_str().unwrap().to_owned();

    let store_arg = store.to_str().unwrap();
    let input_arg = input.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["inspect", "list", "--store", store_arg],
        &["inspect", "list", "--json", "--store", store_arg],
        &["inspect", "show", &saga, "--store", store_arg],
        &["run", input_arg, "--store", store_arg],
    ];
    for args in commands {
        // A stdout whose reader is already gone: every write fails with
        // EPIPE, as after `| head` has read enough.
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(ours);
        let out = regsaga(dir.path())
            .args(args)
            .stdout(OwnedFd::from(theirs))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

/// Messages on stderr are for people and log files: no terminal colour
/// codes when stderr is not a terminal.
#[test]
fn stderr_has_no_colour_codes_when_not_a_terminal() {
    let dir = TempDir::new().unwrap();
    let input = sample(dir.path(), 1);
    let out = run(dir.path(), &input, &dir.path().join("store"), &[]);
    out.expect_code(0);
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
}
