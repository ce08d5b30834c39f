//! What the tests that run the real binary share: starting `regsaga`
//! and reading what it printed, a sandbox to point it at, the input
//! records, and the checks that a sandbox ledger must pass after a run.
//!
//! Every command runs in a temporary directory of its own, so that a
//! forgotten `--store` can never leave a `regsaga.db` in the repository.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use regsaga::sandbox::{LedgerSnapshot, Options, Sandbox};
use serde_json::Value;

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_regsaga");

/// The statuses a finished saga can have.
pub const TERMINAL: [&str; 3] = ["Completed", "CompletedWithErrors", "Failed"];

/// A file under `tests/data`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `examples/registrations.ndjson`: the first 1,000 sign-ups.
pub fn example_input() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/registrations.ndjson")
}

/// The non-blank lines of an NDJSON file, each parsed.
pub fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Writes the first `n` lines of `from` to `to`, and returns `to`.
pub fn head(from: &Path, n: usize, to: &Path) -> PathBuf {
    let text = std::fs::read_to_string(from).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    assert_eq!(
        lines.len(),
        n,
        "{} has fewer than {n} lines",
        from.display()
    );
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
    to.to_owned()
}

/// A `regsaga` command that runs in `dir`, with stdin closed and the
/// default log level (whatever the environment of the test says).
pub fn regsaga(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("REGSAGA_LOG")
        .stdin(Stdio::null());
    cmd
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Output {
    /// `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics, showing stderr, unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Every stdout line, parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"))
            })
            .collect()
    }
}

impl From<std::process::Output> for Output {
    fn from(output: std::process::Output) -> Self {
        Output {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}

/// Runs `cmd` to its end.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap().into()
}

/// Runs `cmd` to its end with `input` on stdin.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap().into()
}

/// `regsaga run INPUT --store STORE` plus `extra`, in `dir`.
pub fn run(dir: &Path, input: &Path, store: &Path, extra: &[&str]) -> Output {
    output(
        regsaga(dir)
            .arg("run")
            .arg(input)
            .arg("--store")
            .arg(store)
            .args(extra),
    )
}

/// The rows of `regsaga inspect list --json`.
pub fn inspect_list(dir: &Path, store: &Path) -> Vec<Value> {
    let out = output(
        regsaga(dir)
            .args(["inspect", "list", "--json", "--store"])
            .arg(store),
    );
    out.expect_code(0);
    out.json_lines()
}

/// `regsaga inspect show ID --json`.
pub fn inspect_show(dir: &Path, store: &Path, id: &str) -> Value {
    let out = output(
        regsaga(dir)
            .args(["inspect", "show", id, "--json", "--store"])
            .arg(store),
    );
    out.expect_code(0);
    serde_json::from_str(&out.stdout).unwrap()
}

/// A sandbox in this test process, on a free loopback port.
pub async fn sandbox(faults: &[&str], seed: u64) -> Sandbox {
    let faults = faults.iter().map(|spec| spec.parse().unwrap()).collect();
    let addr = "127.0.0.1:0".parse().unwrap();
    Sandbox::start(addr, Options { faults, seed })
        .await
        .unwrap()
}

/// A `regsaga sandbox` process; killed when dropped.
pub struct SandboxProcess {
    child: Child,
    pub url: String,
}

impl SandboxProcess {
    /// Starts `regsaga sandbox --addr 127.0.0.1:0` plus `extra` and
    /// reads the URL it prints first.
    pub fn start(dir: &Path, extra: &[&str]) -> SandboxProcess {
        let mut child = regsaga(dir)
            .args(["sandbox", "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "first line: {line:?}");
        SandboxProcess { child, url }
    }

    /// `GET /__sandbox/state`.
    pub async fn state(&self) -> LedgerSnapshot {
        let url = format!("{}/__sandbox/state", self.url);
        let response = reqwest::get(url).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap()
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a configuration file into `dir` and returns its path.
pub fn config(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

/// Retries fast enough for a test; each external attempt still gets a
/// second, so a busy machine does not turn a slow answer into a timeout.
pub const FAST_RETRIES: &str = r#"
[retry.external]
attempt_timeout = "1s"
initial_interval = "10ms"
max_interval = "50ms"

[retry.internal]
initial_interval = "10ms"
max_interval = "50ms"
"#;

/// A JSON amount in major units as integer minor units, read from its
/// decimal text (29.99 -> 2999), never through a float multiply.
pub fn minor_units(amount: &Value) -> u64 {
    let text = amount.as_number().expect("amount is a number").to_string();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    assert!(
        fraction.len() <= 2,
        "amount {text} has more than two decimals"
    );
    let whole: u64 = whole.parse().expect("amount is a plain decimal");
    let cents: u64 = format!("{fraction:0<2}").parse().unwrap();
    whole * 100 + cents
}

/// The e-mail as regsaga stores it: trimmed, domain lower-cased.
pub fn normalized_email(raw: &str) -> String {
    let raw = raw.trim();
    let (local, domain) = raw.rsplit_once('@').expect("an e-mail address");
    format!("{local}@{}", domain.to_ascii_lowercase())
}

/// The saga id in an idempotency key `<sagaId>:<step>`.
pub fn key_saga(key: &str) -> &str {
    key.split_once(':').map_or(key, |(saga, _)| saga)
}

/// The results of a run by record position; panics on a position seen
/// twice.
pub fn by_record(results: &[Value]) -> BTreeMap<u64, Value> {
    let mut map = BTreeMap::new();
    for result in results {
        let record = result["record"].as_u64().expect("record is a number");
        let previous = map.insert(record, result.clone());
        assert!(previous.is_none(), "record {record} has two results");
    }
    map
}

/// Checks a no-fault run against its ledger: `results` holds one line per
/// record of `inputs` (NDJSON, no blank lines), and every saga completed.
///
/// - exactly one profile per record, made by that record's saga;
/// - exactly one charge per paid record, of the right amount and
///   currency, under the saga's payment key, and no declines;
/// - every idempotency key of every ledger list used once;
/// - every request carries a key of a known saga and that saga's
///   correlation id.
pub fn check_ledger(ledger: &LedgerSnapshot, inputs: &[Value], results: &[Value]) {
    let results = by_record(results);
    let positions: Vec<u64> = results.keys().copied().collect();
    let expected: Vec<u64> = (1..=inputs.len() as u64).collect();
    assert_eq!(positions, expected, "one result per input record");

    // saga id -> (input record, correlation id)
    let mut sagas: HashMap<String, (&Value, String)> = HashMap::new();
    for (record, result) in &results {
        assert_eq!(result["status"], "Completed", "{result}");
        let input = &inputs[*record as usize - 1];
        let saga = result["sagaId"].as_str().unwrap().to_owned();
        let correlation = result["correlationId"].as_str().unwrap().to_owned();
        let previous = sagas.insert(saga.clone(), (input, correlation));
        assert!(previous.is_none(), "saga {saga} answers two records");
    }

    check_profiles(ledger, &sagas, &results);
    check_charges(ledger, &sagas, inputs);
    check_keys_used_once(ledger);
    assert_eq!(
        ledger.activities.len(),
        sagas.len(),
        "one activity log per saga"
    );

    for request in &ledger.requests {
        let key = request.idempotency_key.as_deref();
        let key = key.unwrap_or_else(|| panic!("request without a key: {request:?}"));
        let (_, correlation) = sagas
            .get(key_saga(key))
            .unwrap_or_else(|| panic!("request of an unknown saga: {request:?}"));
        assert_eq!(
            request.correlation_id.as_deref(),
            Some(correlation.as_str()),
            "request with another saga's correlation id: {request:?}"
        );
    }
}

fn check_profiles(
    ledger: &LedgerSnapshot,
    sagas: &HashMap<String, (&Value, String)>,
    results: &BTreeMap<u64, Value>,
) {
    assert_eq!(ledger.profiles.len(), sagas.len(), "one profile per record");
    let user_ids: HashMap<&str, &str> = results
        .values()
        .map(|r| (r["sagaId"].as_str().unwrap(), r["userId"].as_str().unwrap()))
        .collect();

    let mut owners = BTreeSet::new();
    for profile in &ledger.profiles {
        let saga = profile.external_id.as_deref().expect("externalId is set");
        assert!(owners.insert(saga), "two profiles for saga {saga}");
        let (input, correlation) = sagas
            .get(saga)
            .unwrap_or_else(|| panic!("profile of an unknown saga: {profile:?}"));
        let email = normalized_email(input["email"].as_str().unwrap());
        assert!(
            profile.user_name.eq_ignore_ascii_case(&email),
            "{profile:?} is not {email}"
        );
        assert_eq!(
            profile.correlation_id.as_deref(),
            Some(correlation.as_str())
        );
        assert_eq!(Some(profile.id.as_str()), user_ids.get(saga).copied());
    }
}

fn check_charges(
    ledger: &LedgerSnapshot,
    sagas: &HashMap<String, (&Value, String)>,
    inputs: &[Value],
) {
    let paid = inputs
        .iter()
        .filter(|r| r.get("initialPayment").is_some())
        .count();
    assert_eq!(ledger.charges.len(), paid, "one charge per paid record");
    assert!(ledger.declines.is_empty(), "{:?}", ledger.declines);

    for charge in &ledger.charges {
        let key = charge.idempotency_key.as_deref().expect("charge has a key");
        let saga = key_saga(key);
        assert_eq!(key, format!("{saga}:charge-payment"));
        assert_eq!(charge.saga_id.as_deref(), Some(saga));
        let (input, correlation) = sagas
            .get(saga)
            .unwrap_or_else(|| panic!("charge of an unknown saga: {charge:?}"));
        assert_eq!(charge.correlation_id.as_deref(), Some(correlation.as_str()));

        let payment = &input["initialPayment"];
        assert!(
            payment.is_object(),
            "charge for an unpaid record: {charge:?}"
        );
        assert_eq!(charge.amount, minor_units(&payment["amount"]), "{input}");
        let currency = payment["currency"].as_str().unwrap_or("usd");
        assert_eq!(charge.currency, currency.to_ascii_lowercase());
    }
}

/// The sandbox keeps what a repeated key asks for once; a key listed
/// twice would mean the same step ran as two different requests.
fn check_keys_used_once(ledger: &LedgerSnapshot) {
    let lists: [(&str, Vec<Option<&String>>); 4] = [
        (
            "charges",
            ledger
                .charges
                .iter()
                .map(|c| c.idempotency_key.as_ref())
                .collect(),
        ),
        (
            "emails",
            ledger
                .emails
                .iter()
                .map(|e| e.idempotency_key.as_ref())
                .collect(),
        ),
        (
            "sms",
            ledger
                .sms
                .iter()
                .map(|s| s.idempotency_key.as_ref())
                .collect(),
        ),
        (
            "activities",
            ledger
                .activities
                .iter()
                .map(|a| a.idempotency_key.as_ref())
                .collect(),
        ),
    ];
    for (name, keys) in lists {
        let mut seen = BTreeSet::new();
        for key in keys {
            let key = key.unwrap_or_else(|| panic!("an entry of {name} has no key"));
            assert!(seen.insert(key), "{name}: key {key} used twice");
        }
    }
}

/// The committed version-1 fixture store.
pub fn fixture_store() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

/// Copies a store (or any folder) recursively, so a test can open a
/// committed fixture without touching it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
