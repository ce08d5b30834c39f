//! Stopping a run on purpose: SIGINT lets attempts in flight finish,
//! prints what finished, and leaves the rest for `regsaga resume`.

use std::process::{Command, Stdio};
use std::time::Duration;

use regsaga::sandbox::{Options, Sandbox};

const INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/registrations.ndjson");
const RECORDS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_cleanly_and_resume_finishes_the_rest() {
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Options::default())
        .await
        .unwrap();
    let url = sandbox.url();
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_regsaga");
    let common = ["--services", url.as_str(), "--store", "store"];

    let child = Command::new(binary)
        .current_dir(dir.path())
        .args(["run", INPUT])
        .args(common)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let signal = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let stopped = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();

    let stderr = String::from_utf8_lossy(&stopped.stderr);
    let printed = String::from_utf8(stopped.stdout).unwrap().lines().count();
    if stopped.status.code() == Some(0) {
        // The run finished before the signal arrived: nothing to check.
        assert_eq!(printed, RECORDS);
        return;
    }
    assert_eq!(stopped.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("left unfinished"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(printed < RECORDS, "{printed} results");

    let resumed = Command::new(binary)
        .current_dir(dir.path())
        .arg("resume")
        .args(common)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );

    // Every saga that was created is now finished, and the records never
    // submitted come in with the next run of the same input.
    let again = Command::new(binary)
        .current_dir(dir.path())
        .args(["run", INPUT])
        .args(common)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let results = String::from_utf8(again.stdout).unwrap();
    assert_eq!(results.lines().count(), RECORDS);
    assert!(results
        .lines()
        .all(|l| l.contains(r#""status":"Completed""#)));

    let ledger = sandbox.state();
    assert_eq!(ledger.profiles.len(), RECORDS, "one profile per record");
    sandbox.shutdown().await;
}
