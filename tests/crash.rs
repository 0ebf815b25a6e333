//! The real binary under load: kill -9 and SIGTERM lose nothing that got a 2xx. Each test
//! prints acknowledged / lost / duplicates.

mod support;

use std::time::Duration;

use support::{Options, RelayProcess, Topology};

/// How many 2xx answers to collect before pulling the plug: enough that requests are in flight
/// in every stage (reading, flushing, confirming) when the signal lands.
const ACKED_BEFORE_SIGNAL: usize = 300;
/// The same with bodies of several chunks: a debug build answers about 20 of those a second on
/// 2 busy cores, so 300 did not always fit in `support::WAIT`; the 16 senders still keep
/// requests in every stage.
const LARGE_ACKED_BEFORE_SIGNAL: usize = 100;

async fn crash_and_restart(ack: &'static str, kill: bool, pad: usize) {
    let topology = Topology::declare(&format!("crash.{ack}"), &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        ack,
        max_body_bytes: 64 * 1024 + pad,
        ..Options::default()
    };
    let config = support::write_config(&options, &topology.exchange, dir.path());

    let mut relay = RelayProcess::start(&config);
    let stop = tokio_util::sync::CancellationToken::new();
    let load = support::load::Load::start(relay.addr, stop.clone(), pad);
    let enough = if pad == 0 {
        ACKED_BEFORE_SIGNAL
    } else {
        LARGE_ACKED_BEFORE_SIGNAL
    };
    support::eventually("enough deliveries were acknowledged", || {
        load.count() >= enough
    })
    .await;
    if kill {
        relay.child.0.kill().expect("SIGKILL");
        relay.child.0.wait().expect("reaped");
    } else {
        relay.signal("TERM");
        let exit = relay.child.0.wait().expect("reaped");
        assert!(exit.success(), "graceful shutdown must exit 0, got {exit}");
    }
    stop.cancel();
    // The senders see the relay gone; what they got answered is final.
    let acked = load.finish().await;

    // Restart on the same store: whatever was pending is published again, byte-identical
    // (`arrivals` checks the bytes); duplicates are allowed (same message_id).
    let relay = RelayProcess::start(&config);
    let arrivals = topology.arrivals(&acked, Duration::from_millis(300)).await;
    let (lost, duplicates) = (arrivals.missing.len(), arrivals.duplicates);
    println!(
        "{} ({ack}, pad {pad}): acknowledged {} lost {lost} duplicates {duplicates}",
        if kill { "kill -9" } else { "SIGTERM" },
        acked.len()
    );
    assert!(
        arrivals.missing.is_empty(),
        "{lost} of {} acknowledged events were lost: {:?}",
        acked.len(),
        &arrivals.missing[..lost.min(5)]
    );
    // Everything that survived, acknowledged or not, is whole: the outbox drains to empty (an
    // entry whose body or record were lost would stay queued and be skipped forever).
    support::assert_outbox_drains(relay.admin_addr).await;
    drop(relay);
    topology.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event_in_durable_mode() {
    crash_and_restart("durable", true, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event_in_confirmed_mode() {
    crash_and_restart("confirmed", true, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_bodies_of_several_chunks_loses_and_corrupts_nothing() {
    // About 4.5 chunks each: an admit's writes span many log entries, and sled's pages grow
    // large enough to become blobs.
    crash_and_restart("durable", true, 4 * 32 * 1024 + 16 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_exits_0_and_loses_nothing() {
    crash_and_restart("durable", false, 0).await;
}
