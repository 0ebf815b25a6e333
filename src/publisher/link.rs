//! Waiting on a broker that may block us: a resource alarm (`connection.blocked`) holds our
//! publishes and confirms without any fault of the link or the event, so that time does not
//! count against the send and confirm timeouts, and the connection is kept.

use std::time::Duration;

use lapin::ConnectionStatus;
use tokio_util::sync::CancellationToken;

/// How often a send or confirm timeout, paused while the broker blocks the connection, looks
/// whether the block is over: small against the timeouts (seconds), cheap (a lock read).
const BLOCKED_CHECK: Duration = Duration::from_millis(100);

/// What a publish watches while it waits to be sent: the connection's blocked state and its
/// events (errors, blocked, unblocked), and shutdown.
pub(super) struct Link<'a> {
    pub(super) status: ConnectionStatus,
    pub(super) events: std::pin::Pin<Box<dyn futures_lite::Stream<Item = lapin::Event> + Send>>,
    pub(super) shutdown: &'a CancellationToken,
}

/// Awaits `future` for at most `limit` of time during which `link` was not blocked by the
/// broker; `None` when that ran out. A blocked broker holds publishes and confirms without any
/// fault of the link or the event, so that time does not count.
pub(super) async fn unblocked_timeout<F: std::future::Future>(
    limit: Duration,
    link: &ConnectionStatus,
    future: F,
) -> Option<F::Output> {
    tokio::pin!(future);
    let mut left = limit;
    loop {
        let slice = left.min(BLOCKED_CHECK);
        match tokio::time::timeout(slice, &mut future).await {
            Ok(output) => return Some(output),
            Err(_) if link.blocked() => {}
            Err(_) => {
                left = left.saturating_sub(slice);
                if left.is_zero() {
                    return None;
                }
            }
        }
    }
}
