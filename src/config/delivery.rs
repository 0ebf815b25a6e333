//! `[delivery]`: when a webhook gets its 2xx, and what a 503 tells the sender.

use std::time::Duration;

use serde::Deserialize;

use super::problems::{Bound, Problems};

const CONFIRM_TIMEOUT_MS: Bound = Bound {
    key: "delivery.confirm_timeout_ms",
    // Below 0Gate's 10 s wait, so a late confirm becomes our 503 rather than its timeout.
    default: 5_000,
    max: 600_000,
};
const RETRY_AFTER_SECS: Bound = Bound {
    key: "delivery.retry_after_secs",
    default: 5,
    max: 3_600,
};

/// When a webhook gets its 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After RabbitMQ confirmed the event (and it is flushed to disk).
    Confirmed,
    /// After the event is flushed to disk; publishing follows.
    Durable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    ack: Option<AckMode>,
    confirm_timeout_ms: Option<u64>,
    retry_after_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub ack: AckMode,
    pub confirm_timeout: Duration,
    pub retry_after_secs: u64,
}

impl RawDelivery {
    /// `request_timeout_ms` is `server.request_timeout_ms`, which the confirm wait must fit in.
    pub(super) fn validate(
        self,
        request_timeout_ms: u64,
        problems: &mut Problems,
    ) -> DeliveryConfig {
        let confirm_timeout_ms = problems.positive(&CONFIRM_TIMEOUT_MS, self.confirm_timeout_ms);
        let retry_after_secs = problems.positive(&RETRY_AFTER_SECS, self.retry_after_secs);
        if confirm_timeout_ms >= request_timeout_ms {
            problems.report(
                "delivery.confirm_timeout_ms",
                format!(
                    "{confirm_timeout_ms} must be below server.request_timeout_ms ({request_timeout_ms})"
                ),
            );
        }
        DeliveryConfig {
            ack: self.ack.unwrap_or(AckMode::Confirmed),
            confirm_timeout: Duration::from_millis(confirm_timeout_ms),
            retry_after_secs,
        }
    }
}
