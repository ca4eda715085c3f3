//! Accounting: N distinct events posted concurrently give exactly N messages, and
//! N equals the number of 202s.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use hookfleet_common::message::EventMeta;
use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::webhook::{self, source};

const N: usize = 500;

#[tokio::test]
async fn n_concurrent_events_make_exactly_n_messages() {
    let env = TestEnv::new().await;
    let secret = webhook::standard_secret();
    let mut settings = env.settings.clone();
    settings
        .ingest
        .sources
        .insert("std".into(), source(SchemeKind::Standard, &[&secret]));
    let ingest = IngestHandle::start(settings).await;
    let client = reqwest::Client::new();

    let statuses: Vec<(String, u16)> = futures::stream::iter(0..N)
        .map(|i| {
            let (client, secret, url) = (client.clone(), secret.clone(), ingest.hook_url("std"));
            async move {
                let id = format!("evt-{i}");
                let body = webhook::ticket(&id, "count me");
                let response = webhook::standard_request(&client, &url, &secret, &id, &body)
                    .send()
                    .await
                    .unwrap();
                (id, response.status().as_u16())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    let accepted: HashSet<&str> = statuses
        .iter()
        .filter(|(_, s)| *s == 202)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(accepted.len(), N, "every distinct event is accepted");
    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, N as u32, Duration::from_secs(10))
        .await;
    let messages = env.drain(&jobs).await;
    assert_eq!(messages.len(), N, "exactly N messages");
    let landed: HashSet<String> = messages
        .iter()
        .map(|m| {
            EventMeta::from_properties(&m.delivery.properties)
                .unwrap()
                .event_id
                .unwrap()
        })
        .collect();
    assert_eq!(landed.len(), N, "no event twice");
    assert_eq!(ingest.requests("std", "accepted"), N as u64);
    ingest.stop().await.unwrap();
}
