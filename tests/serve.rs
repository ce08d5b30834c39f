//! `regsaga serve` as a real process: 1,000 registrations over HTTP from
//! a concurrent client, each answered with its result; re-submission,
//! inspection, metrics and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use regsaga::sandbox::{Options, Sandbox};
use serde_json::Value;

const INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/registrations.ndjson");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_a_thousand_registrations_and_answers_each() {
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Options::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regsaga"))
        .current_dir(dir.path())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--store",
            "store",
            "--services",
        ])
        .arg(sandbox.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let client = reqwest::Client::new();
    let records: Vec<String> = std::fs::read_to_string(INPUT)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(records.len(), 1000);

    // Submit them all, 32 at a time.
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for record in records.clone() {
        let (client, base, gate) = (client.clone(), base.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let response = client
                .post(format!("{base}/registrations"))
                .body(record)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let body: Value = response.json().await.unwrap();
            body["sagaId"].as_str().unwrap().to_owned()
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }

    // Each answers with its result once finished.
    for id in &ids {
        let mut status = String::new();
        for _ in 0..600 {
            let result = get_json(&client, &format!("{base}/registrations/{id}")).await;
            status = result["status"].as_str().unwrap().to_owned();
            if status == "Completed" {
                assert_eq!(result["profileCreated"], true);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, "Completed", "{id}");
    }

    // The same registration again: the same saga, nothing new called.
    let again: Value = post(&client, &base, &records[0])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["existing"], true);
    assert!(ids.contains(&again["sagaId"].as_str().unwrap().to_owned()));
    let invalid = post(&client, &base, r#"{"email":"nope","fullName":"X"}"#).await;
    assert_eq!(invalid.status(), 422);
    let array = post(&client, &base, r#"["arr@b.example","Arr"]"#).await;
    assert_eq!(array.status(), 422, "only objects are registrations");
    let nowhere = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(nowhere.status(), 404);
    let body: Value = nowhere.json().await.unwrap();
    assert!(body["error"].is_string(), "errors are JSON everywhere");

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("regsaga_sagas{status=\"Completed\"} 1000"),
        "{metrics}"
    );
    assert!(
        metrics.contains("regsaga_attempts_total{service=\"profile\",outcome=\"succeeded\"} 2000")
    );
    let stats = get_json(&client, &format!("{base}/stats")).await;
    assert_eq!(stats["sagas"], 1000);
    assert_eq!(sandbox.state().profiles.len(), 1000);

    // While serve holds the store, inspect asks it, in every form.
    let inspect = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_regsaga"))
            .current_dir(dir.path())
            .arg("inspect")
            .args(args)
            .args(["--store", "store"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{args:?}: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(inspect(&["list", "--json"]).lines().count(), 1000);
    assert_eq!(
        inspect(&["list", "--json", "--limit", "10"])
            .lines()
            .count(),
        10
    );
    let email: Value = serde_json::from_str(&records[0]).unwrap();
    let shown: Value = serde_json::from_str(&inspect(&[
        "show",
        email["email"].as_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(shown["status"], "Completed");
    assert_eq!(inspect(&["dump"]).lines().count(), 1000);
    let stats: Value = serde_json::from_str(&inspect(&["stats", "--json"])).unwrap();
    assert_eq!(stats["sagas"], 1000);
    assert!(inspect(&["audit", "--json"]).lines().count() >= 500);

    let stop = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    sandbox.shutdown().await;
}

#[test]
fn inspect_reads_a_store_left_by_a_killed_run_in_every_form() {
    let dir = tempfile::tempdir().unwrap();
    let regsaga = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_regsaga"));
        command.current_dir(dir.path());
        command
    };
    let crashed = regsaga()
        .args(["run", INPUT, "--store", "store"])
        .env("REGSAGA_CRASH_AT", "after-response:send-sms-verification")
        .output()
        .unwrap();
    assert_eq!(crashed.status.code(), None, "aborted");

    for args in [
        &["list", "--status", "InFlight", "--json"][..],
        &["stats", "--json"][..],
        &["dump"][..],
        &["audit", "--json"][..],
    ] {
        let output = regsaga()
            .arg("inspect")
            .args(args)
            .args(["--store", "store"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(!output.stdout.is_empty(), "{args:?}");
    }
    let listed = regsaga()
        .args([
            "inspect", "list", "--status", "InFlight", "--json", "--store", "store",
        ])
        .output()
        .unwrap();
    let row: Value = serde_json::from_str(
        String::from_utf8(listed.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let shown = regsaga()
        .args([
            "inspect",
            "show",
            row["sagaId"].as_str().unwrap(),
            "--store",
            "store",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(shown.stdout).unwrap();
    assert!(
        text.contains(": an attempt is in flight (attempts so far: "),
        "{text}"
    );
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(client: &reqwest::Client, base: &str, body: &str) -> reqwest::Response {
    client
        .post(format!("{base}/registrations"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}
