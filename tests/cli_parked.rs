//! Parked events from the command line, end to end: the real binary's `events list --state
//! parked`, `events drop` and `events replay` against a relay in this process whose broker
//! refuses its events, with the `gate_relay_events_parked` gauge (what the alert watches)
//! following each step. (tests/cli_tools.rs covers show, list and replay of published events.)

mod support;

use support::cli::{assert_exit, cli, text};

use std::time::Duration;

use support::{Options, TestApp, event_body, eventually, unique};

/// `gate_relay_events_parked` as a scrape of `/metrics` reports it (the gauge is set when
/// scraped, so reading the registry directly would show a stale value).
async fn parked_gauge(app: &TestApp) -> f64 {
    let (status, body) = app.admin(http::Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);
    let exposition = body.as_str().expect("text exposition").to_owned();
    exposition
        .lines()
        .find_map(|l| l.strip_prefix("gate_relay_events_parked "))
        .unwrap_or_else(|| panic!("no gate_relay_events_parked in:\n{exposition}"))
        .trim()
        .parse()
        .expect("a number")
}

async fn parked_ids(admin: &str) -> Vec<String> {
    let out = cli(
        &[
            "events", "list", "--state", "parked", "--json", "--admin", admin,
        ],
        &[],
    )
    .await;
    assert_exit(&out, 0);
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut ids: Vec<String> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            assert_eq!(e["state"], "parked", "{e}");
            assert!(
                e["parked_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("returned")),
                "{e}"
            );
            e["event_id"].as_str().expect("id").to_owned()
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn parked_events_are_listed_dropped_and_replayed_from_the_command_line() {
    let options = Options {
        ack: "durable",
        park_after_attempts: 2,
        ..Options::default()
    };
    let mut app = TestApp::spawn("cli.parked", options).await;
    let admin = app.admin_url("");
    // Nothing is bound: every event comes back as a basic.return until the operator binds.
    app.topology.route_only(None).await;
    let mut ids: Vec<String> = (0..2).map(|_| unique("evt")).collect();
    ids.sort();
    let (to_drop, to_replay) = (&ids[0], &ids[1]);
    for id in &ids {
        assert_eq!(app.post_event(&event_body(id, "c.z")).await.status, 200);
    }
    let store = std::sync::Arc::clone(&app.running.as_ref().expect("running").store);
    eventually("both events are parked", || store.parked_count() == 2).await;
    assert_eq!(parked_gauge(&app).await, 2.0);

    let table = cli(
        &["events", "list", "--state", "parked", "--admin", &admin],
        &[],
    )
    .await;
    assert_exit(&table, 0);
    let stdout = text(&table.stdout);
    for id in &ids {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(id) && l.contains("parked")),
            "{id} not listed as parked in:\n{stdout}"
        );
    }
    assert_eq!(parked_ids(&admin).await, ids);

    // The operator decides not to deliver one.
    let dropped = cli(&["events", "drop", to_drop, "--admin", &admin], &[]).await;
    assert_exit(&dropped, 0);
    assert!(text(&dropped.stdout).contains(to_drop.as_str()));
    assert_eq!(parked_gauge(&app).await, 1.0);
    assert_eq!(parked_ids(&admin).await, std::slice::from_ref(to_replay));
    let again = cli(&["events", "drop", to_drop, "--admin", &admin], &[]).await;
    assert_exit(&again, 1);
    assert!(
        text(&again.stderr).contains("not_parked"),
        "{}",
        text(&again.stderr)
    );
    let show = cli(&["events", "show", to_drop, "--admin", &admin], &[]).await;
    assert_exit(&show, 0);
    let shown = text(&show.stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("state ") && l.ends_with(" dropped")),
        "{shown}"
    );

    // And fixes the topology, then replays the other.
    app.topology.bind("#").await;
    let replayed = cli(&["events", "replay", to_replay, "--admin", &admin], &[]).await;
    assert_exit(&replayed, 0);
    assert_eq!(text(&replayed.stdout), format!("queued {to_replay}\n"));
    app.outbox_drained().await;
    assert_eq!(parked_gauge(&app).await, 0.0);
    let none = cli(
        &["events", "list", "--state", "parked", "--admin", &admin],
        &[],
    )
    .await;
    assert_exit(&none, 0);
    assert_eq!(text(&none.stdout), "no events\n");
    assert_eq!(
        app.topology.message_ids(Duration::from_millis(500)).await,
        std::slice::from_ref(to_replay),
        "the replayed event arrives once; the dropped one never"
    );
    assert_eq!(
        app.metric("gate_relay_events_parked_total", &[]),
        2.0,
        "the counter only grows"
    );
    app.stop().await;
    app.topology.delete().await;
}
