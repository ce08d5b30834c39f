//! Embeds regsaga: registers one user, durably, against the sandbox.
//!
//! ```text
//! cargo run --example register_one
//! ```
//!
//! A real application passes its providers' endpoints instead of the
//! sandbox's URL and keeps the store in a lasting place.

use std::time::Duration;

use regsaga::sandbox::{Options as SandboxOptions, Sandbox};
use regsaga::store::Durability;
use regsaga::{
    Endpoints, Engine, HttpServices, Options, RegistrationInput, RegistrationResult, SledStore,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Sandbox::start("127.0.0.1:0".parse()?, SandboxOptions::default()).await?;
    let path = std::env::temp_dir().join(format!("regsaga-example-{}", std::process::id()));

    let store = SledStore::open(&path, Durability::Power)?;
    let services = HttpServices::new(Endpoints::all_at(&sandbox.url()), |_| {
        Duration::from_secs(5)
    })?;
    let engine = Engine::new(store, services, Options::default())?;

    // Anything an earlier process left unfinished is finished first.
    engine.resume().await?;

    let input: RegistrationInput = serde_json::from_str(
        r#"{"email": "jane.roe@example.com", "fullName": "Jane Roe",
            "phoneNumber": "+12025550143",
            "initialPayment": {"amount": 29.99, "paymentMethod": "credit_card"},
            "preferences": {"newsletter": true, "sms_notifications": false}}"#,
    )?;
    // `submit` returns once the saga is on disk; `run` drives it to its end.
    let submitted = engine.submit(input.validate()?).await?;
    let saga = engine.run(submitted.id).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&RegistrationResult::from(&saga))?
    );

    drop(engine);
    sandbox.shutdown().await;
    std::fs::remove_dir_all(&path)?;
    Ok(())
}
