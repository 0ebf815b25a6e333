//! The pruner keeps up under sustained load: events are admitted and published at a steady rate
//! on a real sled store while pruning passes run, with small per-pass limits so passes stop part
//! way and the next resumes. Bodies and records must stay bounded by the retention, every index
//! entry must be read about once (no pass starts over), and the rates are printed.
//!
//! The relay runs a pass every minute with a 7-day body retention; here a pass runs every
//! [`PASS_EVERY`] and the prune clock runs [`CLOCK_AHEAD`] ahead of the wall clock, so a
//! retention of a minute and a half takes effect after half a second while staying above the
//! pruner's one-minute cursor margin, as every retention of a minute or more does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gate_relay::config::StoreConfig;
use gate_relay::event::EventId;
use gate_relay::metrics::Metrics;
use gate_relay::store::{Admission, EventKey, NewEvent, PruneLimits, Retention, Store, unix_ms};
use tokio_util::sync::CancellationToken;

/// Events admitted per second, in ticks of [`TICK`].
const RATE: u64 = 400;
const TICK: Duration = Duration::from_millis(50);
const LOAD: Duration = Duration::from_secs(8);
const PASS_EVERY: Duration = Duration::from_millis(200);
const CLOCK_AHEAD: Duration = Duration::from_secs(60);
/// Effective retentions (after [`CLOCK_AHEAD`]): bodies 0.5 s, records 1 s.
const RETAIN_BODIES: Duration = Duration::from_millis(60_500);
const RETAIN_EVENTS: Duration = Duration::from_millis(61_000);
/// Small, so the first passes (after a delayed start) stop at the limit and the next resume.
const LIMITS: PruneLimits = PruneLimits {
    batch: 50,
    max_per_pass: 300,
};
/// Pruning starts this late, so a backlog larger than one pass is due at once.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("small")
}

async fn admit_batch(store: &Arc<Store>, first: u64, count: u64) -> Vec<EventKey> {
    let mut admits = tokio::task::JoinSet::new();
    for n in first..first + count {
        let store = Arc::clone(store);
        admits.spawn(async move {
            let id = EventId::parse(&format!("evt_{n}")).expect("id");
            let key = EventKey::new("live", &id);
            let body = Bytes::from(format!(r#"{{"id":"evt_{n}","pad":"{}"}}"#, "x".repeat(200)));
            let admitted = store
                .admit(NewEvent {
                    key: &key,
                    environment: "live",
                    event_id: &id,
                    event_type: "a.b",
                    endpoint: "live",
                    received_at_ms: now_ms(),
                    request_id: "r",
                    signature: "s",
                    body: &body,
                })
                .await
                .expect("admit");
            assert_eq!(admitted, Admission::New);
            key
        });
    }
    admits.join_all().await
}

/// Marks everything pending as published, as the publisher does on confirms.
fn publish_pending(store: &Store) {
    let mut after = None;
    loop {
        let batch = store.pending_after(after, 1_000, |_| false).expect("read");
        after = batch.last_seq;
        let acked: Vec<_> = batch.events.into_iter().map(|p| (p.seq, p.key)).collect();
        store.mark_published(&acked).expect("mark");
        if batch.exhausted {
            break;
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    passes: usize,
    at_limit: usize,
    looked: usize,
    bodies: u64,
    events: u64,
    slowest: Duration,
    /// Time spent inside passes.
    busy: Duration,
    /// Most records held at once once pruning ran steadily.
    peak_records: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_up_with_sustained_admissions_and_each_pass_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        Store::open(&StoreConfig {
            path: dir.path().join("store"),
            max_outbox_events: 1_000_000,
            max_outbox_bytes: 1 << 32,
            retain_bodies: RETAIN_BODIES,
            retain_events: Some(RETAIN_EVENTS),
            cache_capacity_bytes: gate_relay::config::DEFAULT_CACHE_CAPACITY_BYTES,
        })
        .expect("open"),
    );
    let shutdown = CancellationToken::new();
    let flusher =
        tokio::spawn(Arc::clone(&store).run_flusher(shutdown.clone(), Metrics::new().store_flush));
    let retention = Retention {
        bodies: RETAIN_BODIES,
        events: Some(RETAIN_EVENTS),
    };
    let prune = |store: &Store, totals: &mut Totals| {
        let started = Instant::now();
        let pass = store
            .prune_pass(now_ms() + ms(CLOCK_AHEAD), retention, LIMITS)
            .expect("prune");
        totals.slowest = totals.slowest.max(started.elapsed());
        totals.busy += started.elapsed();
        totals.passes += 1;
        totals.at_limit += usize::from(pass.stopped_at_limit);
        totals.looked += pass.looked;
        totals.bodies += pass.pruned.bodies;
        totals.events += pass.pruned.events;
        assert!(
            pass.looked <= 2 * LIMITS.max_per_pass + LIMITS.batch,
            "a pass stays within its limits: {pass:?}"
        );
    };

    let per_tick = RATE * ms(TICK) / 1_000;
    let started = Instant::now();
    let mut admitted = 0;
    let mut next_pass = started + FIRST_PASS_AFTER;
    let mut totals = Totals::default();
    let mut tick = tokio::time::interval(TICK);
    while started.elapsed() < LOAD {
        tick.tick().await;
        admit_batch(&store, admitted, per_tick).await;
        admitted += per_tick;
        publish_pending(&store);
        if Instant::now() >= next_pass {
            prune(&store, &mut totals);
            next_pass += PASS_EVERY;
            // Steady state: the backlog from the delayed start is gone after a few passes.
            if started.elapsed() > FIRST_PASS_AFTER * 2 {
                totals.peak_records = totals.peak_records.max(store.events_stored());
            }
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    let before_drain = totals.events;
    // What is left becomes due within the retention; a few more passes take it.
    let drain_until = Instant::now() + RETAIN_EVENTS - CLOCK_AHEAD + PASS_EVERY * 3;
    while Instant::now() < drain_until || totals.events < admitted {
        assert!(
            Instant::now() < drain_until + Duration::from_secs(10),
            "pruning never caught up: {totals:?}, {admitted} admitted"
        );
        tokio::time::sleep(PASS_EVERY).await;
        prune(&store, &mut totals);
    }
    println!(
        "pruning: {admitted} admitted in {load_secs:.1} s ({:.0}/s); during the load {:.0} records/s \
         pruned in {} passes every {} ms ({} stopped at their limit of {}), slowest {} ms; \
         peak records held {}; index entries read {} for {} bodies + {} records; pass throughput \
         {:.0} entries/s, so {:.0} events/s pruned (bodies and records) if pruning ran all the time",
        admitted as f64 / load_secs,
        before_drain as f64 / load_secs,
        totals.passes,
        PASS_EVERY.as_millis(),
        totals.at_limit,
        LIMITS.max_per_pass,
        totals.slowest.as_millis(),
        totals.peak_records,
        totals.looked,
        totals.bodies,
        totals.events,
        totals.looked as f64 / totals.busy.as_secs_f64(),
        totals.looked as f64 / totals.busy.as_secs_f64() / 2.0,
    );
    assert!(
        totals.at_limit >= 1,
        "the delayed start leaves more than one pass can do"
    );
    // Each entry is read once by the body half and once by the record half; a pass that
    // started over from the oldest entry would read the same entries again and again.
    assert!(
        totals.looked as u64 <= 2 * admitted + (LIMITS.batch * totals.passes) as u64,
        "passes resume where the last stopped: {totals:?}"
    );
    assert_eq!(totals.events, admitted, "every record is pruned in the end");
    // Held at most: a second of records (the retention), two passes' worth, and slack for a
    // loaded machine's tick delays.
    let bound = RATE * 2 + RATE * 2 * ms(PASS_EVERY) / 1_000;
    assert!(
        totals.peak_records <= bound,
        "records stay bounded while admissions continue: peak {} > {bound}",
        totals.peak_records
    );
    assert_eq!(store.events_stored(), 0);
    shutdown.cancel();
    flusher.await.expect("flusher");
}
