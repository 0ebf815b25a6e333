//! `[store]`: where sled keeps records, outbox and bodies, its bounds and its retention.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::parse_duration;
use super::problems::{Bound, Problems};

const MAX_OUTBOX_EVENTS: Bound = Bound {
    key: "store.max_outbox_events",
    // About an hour of traffic at 30 events/s; past it 0Gate retries and we shed load.
    default: 100_000,
    max: u64::MAX,
};
const MAX_OUTBOX_BYTES: Bound = Bound {
    key: "store.max_outbox_bytes",
    default: 1024 * 1024 * 1024,
    max: u64::MAX,
};
/// sled's page cache: recent records and the outbox head stay in memory, and it leaves room for
/// bodies in flight within the shipped 512 MiB pod limit (README, "Memory").
pub const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;
const CACHE_CAPACITY_BYTES: Bound = Bound {
    key: "store.cache_capacity_bytes",
    default: DEFAULT_CACHE_CAPACITY_BYTES,
    max: u64::MAX,
};
/// Long enough for a consumer fix over a long weekend; bounded so disk use is bounded too.
const DEFAULT_RETAIN_BODIES: &str = "7d";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    path: PathBuf,
    max_outbox_events: Option<u64>,
    max_outbox_bytes: Option<u64>,
    retain_bodies: Option<String>,
    retain_events: Option<String>,
    cache_capacity_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub max_outbox_events: u64,
    pub max_outbox_bytes: u64,
    /// Published bodies are kept this long so they can be replayed.
    pub retain_bodies: Duration,
    /// Dedupe records are kept this long; `None` (the default) keeps them forever.
    pub retain_events: Option<Duration>,
    /// sled's page cache. Its own default is 1 GiB, twice the shipped pod limit.
    pub cache_capacity_bytes: u64,
}

impl RawStore {
    pub(super) fn validate(self, problems: &mut Problems) -> Option<StoreConfig> {
        let retain_bodies = problems.check(
            "store.retain_bodies",
            parse_duration(
                self.retain_bodies
                    .as_deref()
                    .unwrap_or(DEFAULT_RETAIN_BODIES),
            ),
        );
        let retain_events = problems.check(
            "store.retain_events",
            parse_duration(self.retain_events.as_deref().unwrap_or("forever")),
        );
        let max_outbox_events = problems.positive(&MAX_OUTBOX_EVENTS, self.max_outbox_events);
        let max_outbox_bytes = problems.positive(&MAX_OUTBOX_BYTES, self.max_outbox_bytes);
        let cache_capacity_bytes =
            problems.positive(&CACHE_CAPACITY_BYTES, self.cache_capacity_bytes);
        if self.path.as_os_str().is_empty() {
            problems.report("store.path", "must not be empty");
        }
        Some(StoreConfig {
            path: self.path,
            max_outbox_events,
            max_outbox_bytes,
            // "forever" keeps published bodies as long as a Duration reaches.
            retain_bodies: retain_bodies?.unwrap_or(Duration::MAX),
            retain_events: retain_events?,
            cache_capacity_bytes,
        })
    }
}
