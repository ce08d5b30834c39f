//! The sled store, for real, in temporary folders.

use regsaga::saga::transition::{apply, Event};
use regsaga::saga::{now, Saga};
use regsaga::store::{Created, Durability, Error};
use regsaga::{RegistrationInput, SledStore, Store};

fn saga(email: &str) -> Saga {
    let input: RegistrationInput = serde_json::from_str(&format!(
        r#"{{"email":"{email}","fullName":"Test Person"}}"#
    ))
    .unwrap();
    Saga::new(input.validate().unwrap(), now())
}

fn open(dir: &tempfile::TempDir, durability: Durability) -> SledStore {
    SledStore::open(&dir.path().join("store"), durability).unwrap()
}

#[tokio::test]
async fn create_claims_the_email_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Durability::Process);
    let first = saga("a@example.com");
    let second = saga("a@example.com");

    assert_eq!(store.create(&first).await.unwrap(), Created::New);
    assert_eq!(
        store.create(&second).await.unwrap(),
        Created::Existing(first.id)
    );
    assert_eq!(
        store.load(second.id).unwrap(),
        None,
        "nothing written for it"
    );
    assert_eq!(
        store.find_by_email("a@example.com").unwrap(),
        Some(first.id)
    );
    assert_eq!(store.ids().unwrap(), [first.id]);
}

#[tokio::test]
async fn concurrent_creates_of_one_email_make_one_saga() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir, Durability::Process));

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let store = store.clone();
        tasks.spawn(async move { store.create(&saga("race@example.com")).await.unwrap() });
    }
    let mut new = 0;
    while let Some(created) = tasks.join_next().await {
        if created.unwrap() == Created::New {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    assert_eq!(store.ids().unwrap().len(), 1);
}

#[tokio::test]
async fn sagas_survive_reopening_and_leave_unfinished_when_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = saga("b@example.com");
    {
        let store = open(&dir, Durability::Power);
        store.create(&s).await.unwrap();
        assert_eq!(store.unfinished().unwrap(), [s.id]);

        let policies = Default::default();
        apply(&mut s, Event::Begin { now: now() }, &policies).unwrap();
        let failed = Event::Ended {
            now: now(),
            result: Err(regsaga::services::CallError::new(
                regsaga::services::ErrorKind::Http(400),
                "bad",
            )),
            jitter: 0.5,
        };
        apply(&mut s, failed, &policies).unwrap();
        assert!(s.state.is_finished());
        store.save(&s).await.unwrap();
        assert!(store.unfinished().unwrap().is_empty());
    }

    let store = open(&dir, Durability::Power);
    assert_eq!(store.load(s.id).unwrap(), Some(s));
    assert!(store.unfinished().unwrap().is_empty());
}

#[tokio::test]
async fn power_mode_fsyncs_and_process_mode_does_not() {
    for (durability, fsyncs) in [(Durability::Power, true), (Durability::Process, false)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, durability);
        store.create(&saga("c@example.com")).await.unwrap();

        let stats = store.stats();
        assert_eq!(stats.commits, 1);
        assert!(stats.flushes >= 1);
        assert_eq!(stats.fsyncs >= 1, fsyncs, "{durability:?}: {stats:?}");
        if fsyncs {
            assert_eq!(stats.fsyncs, stats.flushes);
        }
    }
}

#[tokio::test]
async fn concurrent_commits_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir, Durability::Power));

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.spawn(async move {
            let s = saga(&format!("p{i}@example.com"));
            store.create(&s).await.unwrap();
            // Durable means readable after the commit returned.
            assert!(store.load(s.id).unwrap().is_some());
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    let stats = store.stats();
    assert_eq!(stats.commits, 200);
    // The writers wait together; a flush with fsync takes far longer
    // than issuing 200 inserts, so most of them share a flush.
    assert!(stats.flushes < stats.commits / 2, "{stats:?}");
}

#[tokio::test]
async fn a_second_open_of_a_held_store_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _held = open(&dir, Durability::Process);

    let err = SledStore::open(&dir.path().join("store"), Durability::Process)
        .err()
        .expect("second open must fail");
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("in use by another process"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn open_existing_does_not_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing");
    let err = SledStore::open_existing(&path, Durability::Process)
        .err()
        .expect("no store there");
    assert!(err.to_string().contains("no regsaga store"), "{err}");
    assert!(!path.exists(), "nothing created");
}

#[tokio::test]
async fn a_record_of_an_unknown_version_is_reported_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let s = saga("d@example.com");
    {
        let store = open(&dir, Durability::Process);
        store.create(&s).await.unwrap();
    }
    {
        // A newer regsaga wrote this record.
        let db = sled::open(dir.path().join("store")).unwrap();
        let tree = db.open_tree("sagas").unwrap();
        let mut record = tree.get(s.id.as_bytes()).unwrap().unwrap().to_vec();
        record[..2].copy_from_slice(&9u16.to_be_bytes());
        tree.insert(s.id.as_bytes(), record).unwrap();
        db.flush().unwrap();
    }

    let store = open(&dir, Durability::Process);
    let err = store.load(s.id).unwrap_err();
    assert!(
        matches!(err, Error::UnknownVersion { version: 9, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer regsaga"), "{err}");
}

#[tokio::test]
async fn a_damaged_store_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir, Durability::Process);
        store.create(&saga("e@example.com")).await.unwrap();
    }
    // Every file of the store overwritten: nothing left to recover from.
    let log = dir.path().join("store").join("db");
    let damaged = vec![0xab_u8; 65_536];
    for entry in std::fs::read_dir(dir.path().join("store")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, &damaged).unwrap();
        }
    }
    let files = |dir: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = files(&dir.path().join("store"));

    let err = SledStore::open(&dir.path().join("store"), Durability::Process)
        .err()
        .expect("a damaged log must not open");

    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("could not be read") && message.contains("untouched"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        damaged,
        "the log is not rewritten"
    );
    assert_eq!(
        files(&dir.path().join("store")),
        before,
        "no file added or removed"
    );
}
