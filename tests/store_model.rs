//! The store against a reference model: random sequences of admit (new id or duplicate), mark
//! published, replay, prune and reopen on a real sled directory, checked after every step against
//! a few in-memory maps (which ids exist, pending or published, the outbox in order, bodies byte
//! for byte, the counters).
//!
//! Reopen is a clean drop (flusher stopped, `Store` dropped) and `Store::open` on the same
//! directory. A crash that drops unsynced state cannot be simulated in-process with sled (it
//! holds its log in memory and on its own threads until the `Db` goes); `tests/crash.rs` kills a
//! real process for that.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gate_relay::config::StoreConfig;
use gate_relay::event::EventId;
use gate_relay::store::{
    Admission, BODY_CHUNK, EventKey, EventState, NewEvent, Replay, Retention, Store,
};
use proptest::prelude::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A small pool, so that duplicates, replays and re-admissions after pruning are frequent.
const IDS: usize = 5;
const ENVIRONMENT: &str = "live";
/// Milliseconds between two admits on the test's clock; retention ages are multiples of it.
const TICK_MS: u64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Admit {
        id: usize,
        body: Vec<u8>,
    },
    /// Marks the outbox entry at this position (modulo its length) published.
    MarkPublished {
        at: usize,
    },
    Replay {
        id: usize,
    },
    /// Prunes bodies older than `bodies_ticks`, and records older than `events_ticks` if set.
    Prune {
        bodies_ticks: u64,
        events_ticks: Option<u64>,
    },
    Reopen,
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..48),
        // An empty body has no chunk at all: pruning and replay treat it apart.
        1 => Just(Vec::new()),
        // Across the chunk boundary: one, two or three chunks.
        1 => proptest::collection::vec(any::<u8>(), BODY_CHUNK - 2..BODY_CHUNK + 3),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..IDS, body()).prop_map(|(id, body)| Op::Admit { id, body }),
        4 => any::<usize>().prop_map(|at| Op::MarkPublished { at }),
        2 => (0..IDS).prop_map(|id| Op::Replay { id }),
        2 => (0..6u64, proptest::option::of(0..6u64))
            .prop_map(|(bodies_ticks, events_ticks)| Op::Prune { bodies_ticks, events_ticks }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct ModelEvent {
    state: EventState,
    body: Vec<u8>,
    /// As the store recorded it (wall-clock ms): retention counts from publishing.
    published_at_ms: Option<u64>,
    body_pruned: bool,
}

#[derive(Debug, Default)]
struct Model {
    events: BTreeMap<usize, ModelEvent>,
    /// Ids in the outbox, in the order they will be published.
    outbox: Vec<usize>,
}

fn key(id: usize) -> EventKey {
    EventKey::new(ENVIRONMENT, &event_id(id))
}

fn event_id(id: usize) -> EventId {
    EventId::parse(&format!("evt_{id}")).expect("a valid id")
}

/// An open store and the flusher its admits wait on.
struct Running {
    store: Arc<Store>,
    shutdown: CancellationToken,
    flusher: JoinHandle<()>,
}

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.to_path_buf(),
        // Far above what 40 steps can queue: the bound has tests of its own.
        max_outbox_events: 1 << 20,
        max_outbox_bytes: 1 << 30,
        retain_bodies: Duration::from_secs(60),
        retain_events: None,
        cache_capacity_bytes: gate_relay::config::DEFAULT_CACHE_CAPACITY_BYTES,
    }
}

fn start(dir: &Path) -> Running {
    // sled releases its directory lock a moment after the drop of its last `Db` (deferred
    // cleanup on its own threads); a reopen in the same process waits for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(&config(dir)) {
            Ok(store) => break Arc::new(store),
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open store: {e}"),
        }
    };
    let shutdown = CancellationToken::new();
    let flusher = tokio::spawn(Arc::clone(&store).run_flusher(
        shutdown.clone(),
        gate_relay::metrics::Metrics::new().store_flush,
    ));
    Running {
        store,
        shutdown,
        flusher,
    }
}

async fn stop(running: Running) {
    running.shutdown.cancel();
    running.flusher.await.expect("the flusher ends");
    drop(running.store);
}

/// Applies one operation (all but `Reopen`, which `run` does) to the store and the model.
async fn apply(store: &Store, model: &mut Model, op: &Op, clock: &mut u64, wall_start: &u64) {
    match op {
        Op::Admit { id, body } => {
            *clock += TICK_MS;
            let event_id = event_id(*id);
            let key = key(*id);
            let bytes = Bytes::from(body.clone());
            let admission = store
                .admit(NewEvent {
                    key: &key,
                    environment: ENVIRONMENT,
                    event_id: &event_id,
                    event_type: "test.event",
                    endpoint: "ep",
                    received_at_ms: *clock,
                    request_id: "r",
                    signature: "t=1,v1=00",
                    body: &bytes,
                })
                .await
                .expect("admit");
            let expected = match model.events.get(id) {
                Some(event) => Admission::Seen(event.state),
                None => {
                    model.events.insert(
                        *id,
                        ModelEvent {
                            state: EventState::Pending,
                            body: body.clone(),
                            published_at_ms: None,
                            body_pruned: false,
                        },
                    );
                    model.outbox.push(*id);
                    Admission::New
                }
            };
            assert_eq!(admission, expected, "admit evt_{id}");
        }
        Op::MarkPublished { at } => {
            if model.outbox.is_empty() {
                return;
            }
            let at = at % model.outbox.len();
            let pending = store
                .pending_after(None, usize::MAX, |_| false)
                .expect("read");
            let entry = &pending.events[at];
            store
                .mark_published(&[(entry.seq, entry.key.clone())])
                .expect("mark published");
            let id = model.outbox.remove(at);
            let published_at_ms = store
                .record(&key(id))
                .expect("read")
                .expect("recorded")
                .published_at_ms;
            let event = model.events.get_mut(&id).expect("queued implies recorded");
            event.state = EventState::Published;
            event.published_at_ms = published_at_ms;
        }
        Op::Replay { id } => {
            let replay = store.replay(&key(*id)).await.expect("replay");
            let expected = match model.events.get_mut(id) {
                None => Replay::NotFound,
                Some(event) if event.state == EventState::Pending => Replay::AlreadyPending,
                // An empty body has no chunk to prune, so it can always be replayed.
                Some(event) if event.body_pruned && !event.body.is_empty() => Replay::BodyPruned,
                Some(event) => {
                    event.state = EventState::Pending;
                    model.outbox.push(*id);
                    Replay::Queued
                }
            };
            assert_eq!(replay, expected, "replay evt_{id}");
        }
        Op::Prune {
            bodies_ticks,
            events_ticks,
        } => {
            let retention = Retention {
                bodies: Duration::from_millis(bodies_ticks * TICK_MS),
                events: events_ticks.map(|t| Duration::from_millis(t * TICK_MS)),
            };
            // Publishing times are the wall clock's; the model's clock runs ahead of it.
            let now = *wall_start + *clock;
            store.prune(now, retention).expect("prune");
            let record_cutoff = events_ticks.map(|t| now.saturating_sub(t * TICK_MS));
            let body_cutoff = now.saturating_sub(bodies_ticks * TICK_MS);
            // Records go with their bodies when their own retention is shorter.
            let body_cutoff = record_cutoff.map_or(body_cutoff, |r| body_cutoff.max(r));
            let settled_by = |e: &ModelEvent, cutoff: u64| {
                e.state == EventState::Published && e.published_at_ms.is_some_and(|at| at <= cutoff)
            };
            for event in model.events.values_mut() {
                if settled_by(event, body_cutoff) {
                    event.body_pruned = true;
                }
            }
            if let Some(cutoff) = record_cutoff {
                model.events.retain(|_, e| !settled_by(e, cutoff));
            }
        }
        // Nothing changes in the model: everything a clean drop leaves must be found again.
        Op::Reopen => {}
    }
}

fn check(store: &Store, model: &Model, after: &Op) {
    for id in 0..IDS {
        let record = store.record(&key(id)).expect("read record");
        let Some(expected) = model.events.get(&id) else {
            assert!(
                record.is_none(),
                "after {after:?}: evt_{id} should not exist"
            );
            continue;
        };
        let record = record.unwrap_or_else(|| panic!("after {after:?}: evt_{id} is missing"));
        assert_eq!(
            record.state, expected.state,
            "after {after:?}: state of evt_{id}"
        );
        assert_eq!(record.size, expected.body.len() as u64);
        let body = store.body(record.seq, record.size).expect("read body");
        if expected.body_pruned && !expected.body.is_empty() {
            assert_eq!(body, None, "after {after:?}: body of evt_{id} was pruned");
        } else {
            assert_eq!(
                body.as_deref(),
                Some(expected.body.as_slice()),
                "after {after:?}: body of evt_{id}"
            );
        }
    }
    let pending = store
        .pending_after(None, usize::MAX, |_| false)
        .expect("read outbox");
    let queued: Vec<String> = pending
        .events
        .iter()
        .map(|p| p.record.event_id.clone())
        .collect();
    let expected: Vec<String> = model.outbox.iter().map(|id| format!("evt_{id}")).collect();
    assert_eq!(queued, expected, "after {after:?}: outbox order");
    for (entry, id) in pending.events.iter().zip(&model.outbox) {
        assert_eq!(
            entry.body.as_ref(),
            model.events[id].body.as_slice(),
            "after {after:?}: queued body of evt_{id}"
        );
    }
    let depth = store.outbox_depth();
    assert_eq!(
        depth.events,
        model.outbox.len() as u64,
        "after {after:?}: outbox count"
    );
    let bytes: u64 = model
        .outbox
        .iter()
        .map(|id| model.events[id].body.len() as u64)
        .sum();
    assert_eq!(depth.bytes, bytes, "after {after:?}: outbox bytes");
    assert_eq!(
        store.events_stored(),
        model.events.len() as u64,
        "after {after:?}: records stored"
    );
}

fn run(ops: &[Op]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("store");
        let mut running = start(&dir);
        let mut model = Model::default();
        let mut clock = 1_000;
        let wall_start = gate_relay::store::unix_ms(std::time::SystemTime::now());
        for op in ops {
            if matches!(op, Op::Reopen) {
                stop(running).await;
                running = start(&dir);
            }
            apply(&running.store, &mut model, op, &mut clock, &wall_start).await;
            check(&running.store, &model, op);
        }
        stop(running).await;
    });
}

proptest! {
    // 64 sequences of up to 40 steps: a few seconds on a real (temporary) sled directory.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_simple_model_over_random_operations(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        run(&ops);
    }
}
