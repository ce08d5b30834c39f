//! Secrets and personal data stay out of every output and of the store,
//! even at the most verbose logging: credentials set to sentinel values,
//! a card number in a name, and e-mail addresses and phone numbers are
//! searched for in stdout, stderr and every byte of the store's files.

use std::path::Path;
use std::process::{Command, Output};

use regsaga::sandbox::{Options, Sandbox};

const SECRET: &str = "SENTINEL-9c1e-do-not-leak";
const CARD: &str = "4111111111111111";

const INPUT: &str = concat!(
    r#"{"email":"secret.person@example.com","fullName":"Secret Person","phoneNumber":"+12025550187","#,
    r#""initialPayment":{"amount":12.34,"paymentMethod":"credit_card"}}"#,
    "\n",
    r#"{"email":"card.holder@example.com","fullName":"Card 4111 1111 1111 1111 Holder"}"#,
    "\n",
    r#"{"email":"other.person@example.com","fullName":"Other Person","phoneNumber":"+447700900555"}"#,
    "\n",
);

fn regsaga(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_regsaga"));
    command.current_dir(dir).args(args);
    for service in ["PROFILE", "PAYMENT", "EMAIL", "SMS", "ACTIVITY"] {
        command.env(format!("REGSAGA_TEST_{service}_SECRET"), SECRET);
    }
    command.output().unwrap()
}

fn config(url: &str) -> String {
    let mut text = format!("[services]\nbase_url = \"{url}\"\n");
    for service in ["profile", "payment", "email", "sms", "activity"] {
        let upper = service.to_uppercase();
        text.push_str(&format!(
            "[services.{service}]\nsecret_env = \"REGSAGA_TEST_{upper}_SECRET\"\n"
        ));
    }
    text
}

fn assert_clean(what: &str, bytes: &[u8], personal: bool) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(SECRET), "{what} holds the secret");
    assert!(!text.contains(CARD), "{what} holds the card number");
    assert!(
        !text.contains("4111 1111 1111 1111"),
        "{what} holds the card number"
    );
    if personal {
        for private in [
            "secret.person@",
            "+12025550187",
            "+447700900555",
            "other.person@",
        ] {
            assert!(!text.contains(private), "{what} holds {private}");
        }
    }
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_card_or_contact_detail_leaks_at_the_most_verbose_level() {
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Options::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.ndjson"), INPUT).unwrap();
    std::fs::write(d.join("config.toml"), config(&sandbox.url())).unwrap();
    let common = ["--store", "store", "--config", "config.toml", "-vv"];

    for format in ["text", "json"] {
        let run = regsaga(
            d,
            &[&["run", "in.ndjson", "--log-format", format][..], &common].concat(),
        );
        assert_eq!(run.status.code(), Some(3), "the card record is rejected");
        let log = String::from_utf8_lossy(&run.stderr);
        assert!(
            log.contains("attempt started") || format == "json",
            "trace logs are on"
        );
        assert_clean(&format!("run stderr ({format})"), &run.stderr, true);
        assert_clean("run stdout", &run.stdout, false);
    }

    let stderr =
        String::from_utf8_lossy(&regsaga(d, &[&["run", "in.ndjson"][..], &common].concat()).stderr)
            .into_owned();
    assert!(stderr.contains("card number"), "{stderr}");

    for args in [
        &["inspect", "list", "--json"][..],
        &["inspect", "show", "secret.person@example.com", "--json"][..],
        &["inspect", "show", "other.person@example.com"][..],
        &["resume"][..],
    ] {
        let out = regsaga(d, &[args, &common].concat());
        assert_clean(&format!("{args:?} stderr"), &out.stderr, true);
        assert_clean(&format!("{args:?} stdout"), &out.stdout, false);
    }

    for file in files(&d.join("store")) {
        assert_clean(
            &file.display().to_string(),
            &std::fs::read(&file).unwrap(),
            false,
        );
    }

    // The runs did reach the services, with the credentials configured.
    let ledger = sandbox.state();
    assert_eq!(ledger.profiles.len(), 2);
    sandbox.shutdown().await;
}
