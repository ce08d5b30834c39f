//! Micro-benchmarks of the hot path's pure parts: encoding and decoding
//! a saga record, and one transition. `cargo bench` runs them.

use criterion::{criterion_group, criterion_main, Criterion};
use regsaga::retry::Policies;
use regsaga::saga::transition::{apply, Event};
use regsaga::saga::{now, Saga};
use regsaga::services::StepOutput;
use regsaga::store::codec;
use regsaga::RegistrationInput;

/// A saga that has been through every step, as stored at its end.
fn finished_saga() -> Saga {
    let input: RegistrationInput = serde_json::from_str(
        r#"{"email":"jane.roe@example.com","fullName":"Jane Roe","phoneNumber":"+12025550143",
            "initialPayment":{"amount":29.99,"paymentMethod":"credit_card"}}"#,
    )
    .unwrap();
    let mut saga = Saga::new(input.validate().unwrap(), now());
    let policies = Policies::default();
    while !saga.state.is_finished() {
        apply(&mut saga, Event::Begin { now: now() }, &policies).unwrap();
        let output = match saga.state.step().unwrap() {
            regsaga::Step::CreateProfile => StepOutput::ProfileCreated {
                user_id: "user_0123456789abcdef".into(),
            },
            regsaga::Step::ChargePayment => StepOutput::PaymentCharged {
                payment_id: "pi_0123456789abcdefghijklmn".into(),
            },
            regsaga::Step::UpdateProfileStatus => StepOutput::ProfileStatusUpdated,
            regsaga::Step::RecordActivity => StepOutput::ActivityRecorded {
                id: "act_0123".into(),
            },
            _ => StepOutput::NotificationSent {
                id: "AchznA8C-b-XiynIUiHFrM".into(),
                status: "ACCEPTED".into(),
            },
        };
        let ended = Event::Ended {
            now: now(),
            result: Ok(output),
            jitter: 0.5,
        };
        apply(&mut saga, ended, &policies).unwrap();
    }
    saga
}

fn codec_benches(c: &mut Criterion) {
    let saga = finished_saga();
    let bytes = codec::encode(&saga);
    eprintln!("a finished saga is {} bytes stored", bytes.len());

    c.bench_function("encode finished saga", |b| {
        b.iter(|| codec::encode(std::hint::black_box(&saga)))
    });
    c.bench_function("decode finished saga", |b| {
        b.iter(|| codec::decode(std::hint::black_box(&bytes)).unwrap())
    });
}

fn transition_benches(c: &mut Criterion) {
    let input: RegistrationInput =
        serde_json::from_str(r#"{"email":"a@example.com","fullName":"A"}"#).unwrap();
    let fresh = Saga::new(input.validate().unwrap(), now());
    let policies = Policies::default();
    let at = now();

    c.bench_function("transition: begin an attempt", |b| {
        b.iter_batched(
            || fresh.clone(),
            |mut saga| apply(&mut saga, Event::Begin { now: at }, &policies).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, codec_benches, transition_benches);
criterion_main!(benches);
