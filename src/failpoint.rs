//! Failpoints for the fault tests: named places on the delivery path where a test can make the
//! process die as kill -9 would, to check that a crash at exactly that step loses nothing.
//!
//! Owns: reading `GATE_RELAY_FAILPOINT=<name>[@<n>]` once, at the first hit, and aborting on the
//! n-th (default first) hit of that name. Not a config key on purpose: production config cannot
//! switch one on, and the relay never reads this variable for anything else.
//! Guarantee: unset, a hit costs one `OnceLock` read and a compare; nothing is logged.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// After the store applied an admit in memory, before the flush covering it.
pub const AFTER_ADMIT: &str = "after_admit";
/// After the flush covering an admit, before the answer is sent.
pub const AFTER_FLUSH: &str = "after_flush";
/// After a basic_publish was written, before its confirm is awaited.
pub const AFTER_PUBLISH: &str = "after_publish";
/// After confirms arrived, before the store marks them published.
pub const AFTER_CONFIRM: &str = "after_confirm";

struct Armed {
    name: String,
    /// Hits left before the abort.
    remaining: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var("GATE_RELAY_FAILPOINT").ok()?;
            let (name, n) = match value.split_once('@') {
                Some((name, n)) => (name, n.parse().ok()?),
                None => (value.as_str(), 1),
            };
            Some(Armed {
                name: name.to_owned(),
                remaining: AtomicU64::new(n),
            })
        })
        .as_ref()
}

/// Aborts the process (no unwinding, no flush, no destructors: like kill -9) if `name` is the
/// armed failpoint and this is its n-th hit.
pub fn hit(name: &str) {
    let Some(armed) = armed() else { return };
    if armed.name == name && armed.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
        std::process::abort();
    }
}
