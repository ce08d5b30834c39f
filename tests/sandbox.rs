//! The sandbox over real HTTP: each test starts a server on a free
//! loopback port and talks to it with reqwest, as the saga clients do.

use std::time::{Duration, Instant};

use regsaga::sandbox::{Fault, FaultKind, Options, Sandbox, Service};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

const EXTENSION: &str = "urn:ietf:params:scim:schemas:extension:regsaga:2.0:User";
const SMS_PATH: &str = "/2010-04-01/Accounts/AC0123/Messages.json";

async fn start(faults: &[&str], seed: u64) -> Sandbox {
    let faults = faults.iter().map(|spec| spec.parse().unwrap()).collect();
    let addr = "127.0.0.1:0".parse().unwrap();
    Sandbox::start(addr, Options { faults, seed })
        .await
        .unwrap()
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn body(response: Response) -> Value {
    response.json().await.unwrap()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap())
}

mod profile {
    use super::*;

    fn user(user_name: &str, external_id: &str) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "externalId": external_id,
            "name": { "formatted": "Ada Lovelace" },
            "displayName": "Ada",
            "emails": [{ "value": "ada@example.com", "primary": true }],
            "phoneNumbers": [{ "value": "+14155550100", "type": "mobile" }],
            "active": true,
        })
    }

    async fn create(sandbox: &Sandbox, body: &Value) -> Response {
        client()
            .post(format!("{}/scim/v2/Users", sandbox.url()))
            .header("content-type", "application/scim+json")
            .header("authorization", "Bearer sk_secret_token")
            .header("x-correlation-id", "corr-1")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn create_returns_the_full_resource() {
        let sandbox = start(&[], 0).await;
        let response = create(&sandbox, &user("ada", "ext-1")).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = header(&response, "location").unwrap().to_owned();
        let created = body(response).await;

        let id = created["id"].as_str().unwrap();
        assert!(id.starts_with("user_") && id.len() == 21, "{id}");
        assert!(id[5..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(created["userName"], "ada");
        assert_eq!(created["externalId"], "ext-1");
        assert_eq!(created["name"]["formatted"], "Ada Lovelace");
        assert_eq!(created["emails"][0]["value"], "ada@example.com");
        assert_eq!(created["phoneNumbers"][0]["type"], "mobile");
        assert_eq!(created[EXTENSION]["registrationStatus"], Value::Null);
        assert_eq!(created["meta"]["resourceType"], "User");
        assert_eq!(created["meta"]["location"], location.as_str());
        assert_eq!(location, format!("{}/scim/v2/Users/{id}", sandbox.url()));

        let fetched = client().get(&location).send().await.unwrap();
        assert_eq!(fetched.status(), StatusCode::OK);
        assert_eq!(body(fetched).await["id"], id);

        let state = sandbox.state();
        assert_eq!(state.profiles.len(), 1);
        assert_eq!(state.profiles[0].correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(state.profiles[0].external_id.as_deref(), Some("ext-1"));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn duplicate_user_name_conflicts_regardless_of_case() {
        let sandbox = start(&[], 0).await;
        create(&sandbox, &user("ada", "ext-1")).await;
        let response = create(&sandbox, &user("ADA", "ext-2")).await;

        assert_eq!(response.status(), StatusCode::CONFLICT);
        let error = body(response).await;
        assert_eq!(
            error["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert_eq!(error["status"], "409");
        assert_eq!(error["scimType"], "uniqueness");
        assert!(error["detail"].is_string());
        assert_eq!(sandbox.state().profiles.len(), 1);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn bad_bodies_get_scim_errors() {
        let sandbox = start(&[], 0).await;
        let response = create(&sandbox, &json!({ "userName": "" })).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await["scimType"], "invalidValue");

        let response = client()
            .post(format!("{}/scim/v2/Users", sandbox.url()))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await["scimType"], "invalidSyntax");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn filters_by_external_id_and_user_name() {
        let sandbox = start(&[], 0).await;
        create(&sandbox, &user("ada", "ext-1")).await;
        create(&sandbox, &user("grace", "ext-2")).await;
        let list = |filter: &str| {
            client()
                .get(format!("{}/scim/v2/Users", sandbox.url()))
                .query(&[("filter", filter)])
                .send()
        };

        let found = body(list(r#"externalId eq "ext-2""#).await.unwrap()).await;
        assert_eq!(
            found["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:ListResponse"
        );
        assert_eq!(found["totalResults"], 1);
        assert_eq!(found["startIndex"], 1);
        assert_eq!(found["itemsPerPage"], 1);
        assert_eq!(found["Resources"][0]["userName"], "grace");

        let found = body(list(r#"userName eq "ADA""#).await.unwrap()).await;
        assert_eq!(found["Resources"][0]["externalId"], "ext-1");
        let none = body(list(r#"externalId eq "EXT-1""#).await.unwrap()).await;
        assert_eq!(none["totalResults"], 0);

        let response = list(r#"displayName co "A""#).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await["scimType"], "invalidFilter");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn patch_replaces_active_and_registration_status() {
        let sandbox = start(&[], 0).await;
        let created = body(create(&sandbox, &user("ada", "ext-1")).await).await;
        let url = format!(
            "{}/scim/v2/Users/{}",
            sandbox.url(),
            created["id"].as_str().unwrap()
        );
        let patch = |operations: Value, url: String| {
            let body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": operations,
            });
            client().patch(url).json(&body).send()
        };

        let operations = json!([
            { "op": "Replace", "path": "active", "value": false },
            { "op": "replace", "path": format!("{EXTENSION}:registrationStatus"),
              "value": "completed" },
        ]);
        let response = patch(operations, url.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let patched = body(response).await;
        assert_eq!(patched["active"], false);
        assert_eq!(patched[EXTENSION]["registrationStatus"], "completed");
        let entry = &sandbox.state().profiles[0];
        assert!(!entry.active);
        assert_eq!(entry.registration_status.as_deref(), Some("completed"));

        let operations = json!([{ "op": "replace", "path": "displayName", "value": "x" }]);
        let response = patch(operations, url.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await["scimType"], "invalidPath");

        let operations = json!([{ "op": "replace", "path": "active", "value": true }]);
        let unknown = format!("{}/scim/v2/Users/user_0000000000000000", sandbox.url());
        let response = patch(operations, unknown).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(body(response).await["status"], "404");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn delete_removes_the_user_from_the_ledger() {
        let sandbox = start(&[], 0).await;
        let created = body(create(&sandbox, &user("ada", "ext-1")).await).await;
        let url = format!(
            "{}/scim/v2/Users/{}",
            sandbox.url(),
            created["id"].as_str().unwrap()
        );

        let response = client().delete(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(sandbox.state().profiles.is_empty());

        let again = client().delete(&url).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_FOUND);
        let fetched = client().get(&url).send().await.unwrap();
        assert_eq!(fetched.status(), StatusCode::NOT_FOUND);
        sandbox.shutdown().await;
    }
}

mod payment {
    use super::*;

    fn form(payment_method: &str, amount: &str) -> Vec<(&'static str, String)> {
        vec![
            ("amount", amount.to_owned()),
            ("currency", "EUR".to_owned()),
            ("confirm", "true".to_owned()),
            ("payment_method", payment_method.to_owned()),
            ("description", "Registration fee".to_owned()),
            ("metadata[saga_id]", "saga-1".to_owned()),
            ("metadata[correlation_id]", "corr-meta".to_owned()),
        ]
    }

    async fn pay(sandbox: &Sandbox, key: Option<&str>, form: &[(&str, String)]) -> Response {
        let mut request = client()
            .post(format!("{}/v1/payment_intents", sandbox.url()))
            .basic_auth("sk_test_secret", None::<&str>)
            .form(form);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    #[tokio::test]
    async fn success_returns_a_succeeded_intent() {
        let sandbox = start(&[], 0).await;
        let response = pay(&sandbox, Some("key-1"), &form("pm_card_visa", "1999")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(header(&response, "idempotent-replayed").is_none());
        let intent = body(response).await;

        let id = intent["id"].as_str().unwrap();
        assert!(id.starts_with("pi_") && id.len() == 27, "{id}");
        assert!(id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(intent["object"], "payment_intent");
        assert_eq!(intent["amount"], 1999);
        assert_eq!(intent["currency"], "eur");
        assert_eq!(intent["status"], "succeeded");
        assert_eq!(intent["payment_method"], "pm_card_visa");
        assert_eq!(intent["metadata"]["saga_id"], "saga-1");
        assert!(intent["created"].as_i64().unwrap() > 1_600_000_000);

        let charges = sandbox.state().charges;
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0].id, id);
        assert_eq!(charges[0].saga_id.as_deref(), Some("saga-1"));
        assert_eq!(charges[0].idempotency_key.as_deref(), Some("key-1"));
        assert_eq!(charges[0].correlation_id.as_deref(), Some("corr-meta"));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_decline_test_method_is_declined() {
        let sandbox = start(&[], 0).await;
        let form = form("pm_card_chargeDeclined", "500");
        let response = pay(&sandbox, Some("key-1"), &form).await;
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
        let error = body(response).await;
        assert_eq!(error["error"]["type"], "card_error");
        assert_eq!(error["error"]["code"], "card_declined");
        assert_eq!(error["error"]["decline_code"], "generic_decline");
        assert_eq!(error["error"]["message"], "Your card was declined.");

        let state = sandbox.state();
        assert!(state.charges.is_empty());
        assert_eq!(state.declines.len(), 1);
        assert_eq!(state.declines[0].cause, "card");
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn a_replay_returns_the_stored_answer() {
        let sandbox = start(&[], 0).await;
        let first = pay(&sandbox, Some("key-1"), &form("pm_card_visa", "700")).await;
        let first = body(first).await;
        let replay = pay(&sandbox, Some("key-1"), &form("pm_card_visa", "700")).await;

        assert_eq!(replay.status(), StatusCode::OK);
        assert_eq!(header(&replay, "idempotent-replayed"), Some("true"));
        assert_eq!(body(replay).await, first);
        assert_eq!(sandbox.state().charges.len(), 1);

        // Validation errors are stored too, as Stripe does.
        let invalid = pay(&sandbox, Some("key-2"), &form("pm_card_visa", "0")).await;
        assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(invalid).await["error"]["param"], "amount");
        let replay = pay(&sandbox, Some("key-2"), &form("pm_card_visa", "0")).await;
        assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
        assert_eq!(header(&replay, "idempotent-replayed"), Some("true"));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn same_key_with_other_parameters_is_refused() {
        let sandbox = start(&[], 0).await;
        pay(&sandbox, Some("key-1"), &form("pm_card_visa", "700")).await;
        let response = pay(&sandbox, Some("key-1"), &form("pm_card_visa", "701")).await;

        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await["error"]["type"], "idempotency_error");
        assert_eq!(sandbox.state().charges.len(), 1);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn same_key_while_executing_is_in_use() {
        let sandbox = start(&[], 0).await;
        let hold = sandbox.hold_payments();
        let url = sandbox.url();
        let first = tokio::spawn(async move {
            client()
                .post(format!("{url}/v1/payment_intents"))
                .header("idempotency-key", "key-1")
                .form(&form("pm_card_visa", "700"))
                .send()
                .await
                .unwrap()
                .status()
        });
        hold.wait_held(1).await;

        let second = pay(&sandbox, Some("key-1"), &form("pm_card_visa", "700")).await;
        assert_eq!(second.status(), StatusCode::CONFLICT);
        let error = body(second).await;
        assert_eq!(error["error"]["type"], "idempotency_error");
        assert_eq!(error["error"]["code"], "idempotency_key_in_use");

        hold.release();
        assert_eq!(first.await.unwrap(), StatusCode::OK);
        assert_eq!(sandbox.state().charges.len(), 1);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn requests_without_a_key_are_never_deduplicated() {
        let sandbox = start(&[], 0).await;
        for _ in 0..2 {
            let response = pay(&sandbox, None, &form("pm_card_visa", "700")).await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(sandbox.state().charges.len(), 2);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn the_decline_fault_is_stored_like_a_real_decline() {
        let sandbox = start(&["payment:decline"], 0).await;
        let response = pay(&sandbox, Some("key-1"), &form("pm_card_visa", "700")).await;
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);

        let replay = pay(&sandbox, Some("key-1"), &form("pm_card_visa", "700")).await;
        assert_eq!(replay.status(), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(header(&replay, "idempotent-replayed"), Some("true"));

        let state = sandbox.state();
        assert_eq!(state.declines.len(), 1);
        assert_eq!(state.declines[0].cause, "fault");
        assert_eq!(state.requests[0].fault.as_deref(), Some("decline"));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn an_injected_fault_stores_nothing_so_a_retry_executes() {
        let sandbox = start(&["payment:http-503@0.5"], 11).await;
        let mut statuses = Vec::new();
        for _ in 0..32 {
            let response = pay(&sandbox, Some("key-1"), &form("pm_card_visa", "700")).await;
            statuses.push(response.status());
            if response.status() == StatusCode::OK {
                break;
            }
        }

        assert_eq!(statuses.last(), Some(&StatusCode::OK));
        let failed = &statuses[..statuses.len() - 1];
        assert!(failed
            .iter()
            .all(|status| *status == StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(sandbox.state().charges.len(), 1);
        sandbox.shutdown().await;
    }
}

mod email {
    use super::*;

    fn mail() -> Value {
        json!({
            "personalizations": [{ "to": [{ "email": "ada@example.com", "name": "Ada" }] }],
            "from": { "email": "noreply@example.com", "name": "Regsaga" },
            "subject": "Welcome",
            "content": [{ "type": "text/plain", "value": "Hello" }],
            "custom_args": { "kind": "welcome", "saga_id": "saga-1" },
        })
    }

    async fn send(sandbox: &Sandbox, key: Option<&str>, mail: &Value) -> Response {
        let mut request = client()
            .post(format!("{}/v3/mail/send", sandbox.url()))
            .bearer_auth("SG.secret")
            .header("x-correlation-id", "corr-1")
            .json(mail);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    #[tokio::test]
    async fn accepted_mail_gets_a_message_id_and_repeats_are_deduplicated() {
        let sandbox = start(&[], 0).await;
        let response = send(&sandbox, Some("key-1"), &mail()).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let id = header(&response, "x-message-id").unwrap().to_owned();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(response.bytes().await.unwrap().is_empty());

        let repeat = send(&sandbox, Some("key-1"), &mail()).await;
        assert_eq!(repeat.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&repeat, "x-message-id"), Some(id.as_str()));

        let emails = sandbox.state().emails;
        assert_eq!(emails.len(), 1);
        assert_eq!(emails[0].message_id, id);
        assert_eq!(emails[0].to, "ada@example.com");
        assert_eq!(emails[0].subject, "Welcome");
        assert_eq!(emails[0].kind.as_deref(), Some("welcome"));
        assert_eq!(emails[0].saga_id.as_deref(), Some("saga-1"));
        assert_eq!(emails[0].correlation_id.as_deref(), Some("corr-1"));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn missing_fields_are_named() {
        let sandbox = start(&[], 0).await;
        let response = send(&sandbox, None, &json!({ "subject": "Hi" })).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let errors = body(response).await;
        let fields: Vec<&str> = errors["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|error| error["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["personalizations", "from.email", "content"]);
        assert_eq!(errors["errors"][0]["help"], Value::Null);
        assert!(sandbox.state().emails.is_empty());
        sandbox.shutdown().await;
    }
}

mod sms {
    use super::*;

    async fn send(sandbox: &Sandbox, key: Option<&str>, to: &str, text: &str) -> Response {
        let form = [("To", to), ("From", "+14155550199"), ("Body", text)];
        let mut request = client()
            .post(format!("{}{SMS_PATH}", sandbox.url()))
            .basic_auth("AC0123", Some("auth-token"))
            .form(&form);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    #[tokio::test]
    async fn accepted_messages_are_queued_and_repeats_are_deduplicated() {
        let sandbox = start(&[], 0).await;
        let response = send(&sandbox, Some("key-1"), "+14155550100", "Code 1234").await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let message = body(response).await;

        let sid = message["sid"].as_str().unwrap();
        assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
        assert_eq!(message["account_sid"], "AC0123");
        assert_eq!(message["to"], "+14155550100");
        assert_eq!(message["from"], "+14155550199");
        assert_eq!(message["body"], "Code 1234");
        assert_eq!(message["status"], "queued");
        assert!(message["date_created"].as_str().unwrap().ends_with("+0000"));
        assert_eq!(
            message["uri"],
            format!("/2010-04-01/Accounts/AC0123/Messages/{sid}.json")
        );

        let repeat = send(&sandbox, Some("key-1"), "+14155550100", "Code 1234").await;
        assert_eq!(repeat.status(), StatusCode::CREATED);
        assert_eq!(body(repeat).await["sid"], sid);

        let sms = sandbox.state().sms;
        assert_eq!(sms.len(), 1);
        assert_eq!(sms[0].sid, sid);
        assert_eq!(sms[0].to, "+14155550100");
        assert_eq!(sms[0].idempotency_key.as_deref(), Some("key-1"));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn invalid_numbers_and_missing_bodies_get_twilio_codes() {
        let sandbox = start(&[], 0).await;
        let response = send(&sandbox, None, "555-0100", "Hi").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error = body(response).await;
        assert_eq!(error["code"], 21211);
        assert_eq!(
            error["message"],
            "The 'To' number 555-0100 is not a valid phone number."
        );
        assert_eq!(
            error["more_info"],
            "https://www.twilio.com/docs/errors/21211"
        );
        assert_eq!(error["status"], 400);

        let response = send(&sandbox, None, "+14155550100", "").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await["code"], 21602);
        assert!(sandbox.state().sms.is_empty());
        sandbox.shutdown().await;
    }
}

mod activity {
    use super::*;

    fn log() -> Value {
        json!({
            "sagaId": "saga-1",
            "correlationId": "corr-body",
            "userId": null,
            "finalStatus": "completed",
            "activities": [
                { "step": "profile", "outcome": "ok", "detail": null,
                  "at": "2025-01-01T00:00:00Z" },
                { "step": "payment", "outcome": "ok", "detail": "pi_1",
                  "at": "2025-01-01T00:00:01Z" },
            ],
        })
    }

    async fn post(sandbox: &Sandbox, key: &str, log: &Value) -> Response {
        client()
            .post(format!("{}/internal/v1/activity-log", sandbox.url()))
            .header("idempotency-key", key)
            .json(log)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn records_once_per_key() {
        let sandbox = start(&[], 0).await;
        let response = post(&sandbox, "key-1", &log()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let first = body(response).await;
        assert!(first["id"].as_str().unwrap().starts_with("act_"));
        assert!(first["recordedAt"].is_string());

        let replay = post(&sandbox, "key-1", &log()).await;
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(body(replay).await, first);

        let activities = sandbox.state().activities;
        assert_eq!(activities.len(), 1);
        assert_eq!(activities[0].saga_id, "saga-1");
        assert_eq!(activities[0].final_status, "completed");
        assert_eq!(activities[0].activity_count, 2);
        assert_eq!(activities[0].correlation_id.as_deref(), Some("corr-body"));
        assert_eq!(activities[0].user_id, None);
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn missing_required_fields_are_refused() {
        let sandbox = start(&[], 0).await;
        let response = post(&sandbox, "key-1", &json!({ "sagaId": "saga-1" })).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await["error"]["field"], "finalStatus");

        let response = post(&sandbox, "key-2", &json!([1, 2])).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(sandbox.state().activities.is_empty());
        sandbox.shutdown().await;
    }
}

mod faults {
    use super::*;

    #[test]
    fn fault_specs_parse_and_display() {
        let fault: Fault = "payment:http-503@0.3".parse().unwrap();
        assert_eq!(fault.service, Service::Payment);
        assert_eq!(fault.kind, FaultKind::Http503);
        assert_eq!(fault.rate, 0.3);
        assert_eq!(fault.to_string(), "payment:http-503@0.3");
        assert_eq!("profile:http-500".parse::<Fault>().unwrap().rate, 1.0);
        assert_eq!(
            "sms:timeout@0.1".parse::<Fault>().unwrap().kind,
            FaultKind::Timeout
        );
        assert_eq!(Service::Activity.to_string(), "activity");
        assert_eq!(FaultKind::Http429.to_string(), "http-429");

        let error = "email:decline".parse::<Fault>().unwrap_err().to_string();
        assert!(error.contains("payment"), "{error}");
        let error = "billing:http-500".parse::<Fault>().unwrap_err().to_string();
        assert!(
            error.contains("billing") && error.contains("activity"),
            "{error}"
        );
        for bad in [
            "payment",
            "payment:http-418",
            "sms:timeout@1.01",
            "sms:timeout@-0.1",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn rate_one_always_fails_and_rate_zero_never_does() {
        let sandbox = start(&["email:http-500@1", "sms:http-500@0"], 0).await;
        let mail = client()
            .post(format!("{}/v3/mail/send", sandbox.url()))
            .json(&json!({}));
        let response = mail.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body(response).await["errors"][0]["message"].is_string());

        for _ in 0..5 {
            let form = [
                ("To", "+14155550100"),
                ("From", "+14155550199"),
                ("Body", "x"),
            ];
            let url = format!("{}{SMS_PATH}", sandbox.url());
            let response = client().post(url).form(&form).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }

        let requests = sandbox.state().requests;
        assert_eq!(requests[0].fault.as_deref(), Some("http-500"));
        assert_eq!(requests[0].status, Some(500));
        assert!(requests[1..].iter().all(|request| request.fault.is_none()));
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn http_429_carries_retry_after_in_each_provider_shape() {
        let specs =
            ["profile", "payment", "email", "sms", "activity"].map(|s| format!("{s}:http-429"));
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        let sandbox = start(&specs, 0).await;
        let base = sandbox.url();
        let requests = [
            client().get(format!("{base}/scim/v2/Users/user_1")),
            client().post(format!("{base}/v1/payment_intents")),
            client().post(format!("{base}/v3/mail/send")),
            client().post(format!("{base}{SMS_PATH}")),
            client().post(format!("{base}/internal/v1/activity-log")),
        ];

        let mut bodies = Vec::new();
        for request in requests {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(header(&response, "retry-after"), Some("1"));
            bodies.push(body(response).await);
        }
        assert_eq!(bodies[0]["status"], "429");
        assert_eq!(bodies[1]["error"]["code"], "rate_limit");
        assert!(bodies[2]["errors"].is_array());
        assert_eq!(bodies[3]["status"], 429);
        assert_eq!(bodies[4]["error"]["code"], "rate_limited");

        // The state endpoint is never faulted.
        let state = client()
            .get(format!("{base}/__sandbox/state"))
            .send()
            .await
            .unwrap();
        assert_eq!(state.status(), StatusCode::OK);
        sandbox.shutdown().await;
    }

    /// Which of 24 keyed e-mails a sandbox with this seed fails.
    async fn failures(seed: u64) -> Vec<bool> {
        let sandbox = start(&["email:http-503@0.5"], seed).await;
        let mut failed = Vec::new();
        for n in 0..24 {
            let response = client()
                .post(format!("{}/v3/mail/send", sandbox.url()))
                .header("idempotency-key", format!("key-{n}"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            failed.push(response.status() == StatusCode::SERVICE_UNAVAILABLE);
        }
        sandbox.shutdown().await;
        failed
    }

    #[tokio::test]
    async fn draws_depend_on_the_seed_only() {
        let first = failures(42).await;
        assert_eq!(first, failures(42).await);
        assert_ne!(first, failures(43).await);
        assert!(first.contains(&true) && first.contains(&false));
    }

    #[tokio::test]
    async fn the_timeout_fault_never_answers() {
        let sandbox = start(&["sms:timeout"], 0).await;
        let impatient = Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let error = impatient
            .post(format!("{}{SMS_PATH}", sandbox.url()))
            .form(&[
                ("To", "+14155550100"),
                ("From", "+14155550199"),
                ("Body", "x"),
            ])
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error}");

        let requests = sandbox.state().requests;
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].fault.as_deref(), Some("timeout"));
        assert_eq!(requests[0].status, None);
        assert!(sandbox.state().sms.is_empty());

        // Shutdown wakes the held request instead of waiting for it.
        let started = Instant::now();
        sandbox.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

mod ledger {
    use super::*;

    #[tokio::test]
    async fn the_state_endpoint_matches_and_keeps_no_secrets() {
        let sandbox = start(&[], 0).await;
        let response = client()
            .post(format!("{}/v1/payment_intents", sandbox.url()))
            .header("authorization", "Bearer sk_live_very_secret")
            .header("x-correlation-id", "corr-7")
            .header("idempotency-key", "key-7")
            .form(&[
                ("amount", "100"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let url = format!("{}/__sandbox/state", sandbox.url());
        let text = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("very_secret"));
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json, serde_json::to_value(sandbox.state()).unwrap());

        let request = &json["requests"][0];
        assert_eq!(request["service"], "payment");
        assert_eq!(request["method"], "POST");
        assert_eq!(request["path"], "/v1/payment_intents");
        assert_eq!(request["idempotencyKey"], "key-7");
        assert_eq!(request["correlationId"], "corr-7");
        assert_eq!(request["status"], 200);
        assert_eq!(request["fault"], Value::Null);
        assert_eq!(json["charges"][0]["paymentMethod"], "pm_card_visa");
        assert_eq!(json["charges"][0]["correlationId"], "corr-7");
        sandbox.shutdown().await;
    }
}
