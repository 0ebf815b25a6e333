//! The human-readable output of the operator's commands, pure: aligned tables, UTC timestamps.
//!
//! Owns: turning admin API answers and send-test reports into text, and escaping every value
//! that came over the wire so it cannot drive the terminal. Does not own: fetching them (the
//! `admin_client` module, `send_test`) nor choosing between text and `--json` (`cli`).

use std::fmt::Write as _;

use http::StatusCode;

use super::send_test::SendReport;
use super::{Acted, EventPage, EventView, OutboxView};

/// Escapes control characters (ANSI escapes included) so a hostile value cannot drive the
/// terminal; everything else is shown as is.
pub fn printable(raw: &str) -> String {
    if !raw.chars().any(char::is_control) {
        return raw.to_owned();
    }
    raw.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Like [`printable`], but keeps line breaks and tabs: for a body shown on its own lines.
fn printable_text(raw: &str) -> String {
    raw.split('\n')
        .map(|line| {
            line.split('\t')
                .map(printable)
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Left-aligned columns two spaces apart, no trailing spaces; cells are escaped here. An empty
/// `header` leaves the header row out (for key-value listings).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let rows: Vec<Vec<String>> = (!header.is_empty())
        .then_some(header)
        .into_iter()
        .chain(
            rows.iter()
                .map(|r| r.iter().map(|c| printable(c)).collect()),
        )
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            write!(line, "{cell:<width$}  ").expect("writing to a String cannot fail");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Unix milliseconds as RFC 3339 UTC, e.g. `2026-06-26T12:00:00.123Z`.
pub fn utc_millis(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`,
/// restricted to dates from 1970 on, which is all a unix timestamp in `u64` can be).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// `events show`: one field a line, then the body when it was asked for.
pub fn format_event(event: &EventView) -> String {
    let mut fields = vec![
        ("event_id", event.event_id.clone()),
        ("environment", event.environment.clone()),
        ("type", event.event_type.clone()),
        ("state", event.state.clone()),
        ("seq", event.seq.to_string()),
        ("endpoint", event.endpoint.clone()),
        ("received", utc_millis(event.received_at_ms)),
        ("published", or_dash(event.published_at_ms.map(utc_millis))),
        ("deliveries", event.deliveries.to_string()),
        (
            "request_ids",
            if event.request_ids.is_empty() {
                "-".to_owned()
            } else {
                event.request_ids.join(", ")
            },
        ),
        ("body_sha256", event.body_sha256.clone()),
        ("size", format!("{} bytes", event.size)),
    ];
    if let Some(reason) = &event.parked_reason {
        fields.insert(4, ("parked_reason", reason.clone()));
    }
    let rows: Vec<Vec<String>> = fields
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v])
        .collect();
    let mut out = table(&[], &rows);
    match &event.body {
        None => {}
        Some(None) => out.push_str("body         (pruned after publishing)\n"),
        Some(Some(text)) => {
            out.push_str("body\n");
            out.push_str(&printable_text(text));
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// `events list`: newest first, then how to get the next page.
pub fn format_page(page: &EventPage) -> String {
    if page.events.is_empty() {
        return "no events\n".to_owned();
    }
    let rows: Vec<Vec<String>> = page
        .events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                utc_millis(e.received_at_ms),
                e.environment.clone(),
                e.state.clone(),
                e.event_type.clone(),
                e.event_id.clone(),
                e.deliveries.to_string(),
                e.size.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SEQ",
            "RECEIVED (UTC)",
            "ENV",
            "STATE",
            "TYPE",
            "EVENT ID",
            "DELIVERIES",
            "BYTES",
        ],
        &rows,
    );
    if let Some(before) = page.next_before {
        writeln!(out, "more: --before {before}").expect("writing to a String cannot fail");
    }
    out
}

/// `events replay`.
pub fn format_replayed(replayed: &Acted) -> String {
    format!(
        "{} {}\n",
        printable(&replayed.status),
        printable(&replayed.event_id)
    )
}

/// `outbox`.
pub fn format_outbox(outbox: &OutboxView) -> String {
    let rows = vec![
        vec!["events".to_owned(), outbox.events.to_string()],
        vec!["bytes".to_owned(), outbox.bytes.to_string()],
        vec!["parked".to_owned(), outbox.parked.to_string()],
        vec![
            "oldest_age".to_owned(),
            format!("{} s", outbox.oldest_age_seconds),
        ],
        vec![
            "broker".to_owned(),
            if outbox.broker_connected {
                "connected"
            } else {
                "disconnected"
            }
            .to_owned(),
        ],
        vec![
            "broker_node".to_owned(),
            or_dash(outbox.broker_node.map(|n| n.to_string())),
        ],
        vec![
            "last_publish_error".to_owned(),
            or_dash(outbox.last_publish_error.clone()),
        ],
    ];
    table(&[], &rows)
}

/// `send-test`.
pub fn format_send_report(report: &SendReport) -> String {
    let status = StatusCode::from_u16(report.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or_else(
            || report.status.to_string(),
            |reason| format!("{} {reason}", report.status),
        );
    let rows = vec![
        vec!["event_id".to_owned(), or_dash(report.event_id.clone())],
        vec!["status".to_owned(), status],
        vec!["outcome".to_owned(), report.outcome.clone()],
        vec![
            "latency".to_owned(),
            format!("{} ms", report.latency.as_millis()),
        ],
        vec!["request_id".to_owned(), or_dash(report.request_id.clone())],
    ];
    table(&[], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event() -> EventView {
        EventView {
            seq: 7,
            environment: "test".into(),
            event_id: "evt_1".into(),
            event_type: "gate_session.completed".into(),
            endpoint: "test".into(),
            state: "published".into(),
            received_at_ms: 1_782_475_200_123,
            published_at_ms: Some(1_782_475_200_456),
            deliveries: 2,
            request_ids: vec!["req_a".into(), "req_b".into()],
            body_sha256: "ab".repeat(32),
            size: 42,
            parked_reason: None,
            dropped_at_ms: None,
            body: None,
        }
    }

    #[test]
    fn a_parked_event_shows_why_after_its_state() {
        let parked = EventView {
            state: "parked".into(),
            parked_reason: Some("returned: NO_ROUTE".into()),
            ..event()
        };
        let text = format_event(&parked);
        let state = text.find("state").expect("state row");
        let reason = text
            .find("parked_reason  returned: NO_ROUTE")
            .expect("reason row");
        assert!(state < reason, "{text}");
        assert!(!format_event(&event()).contains("parked_reason"));
    }

    #[test]
    fn utc_timestamps() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_782_475_200_123, "2026-06-26T12:00:00.123Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(utc_millis(ms), want, "{ms}");
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        let cases = [
            ("plain.type", "plain.type"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("a\nb", "a\\nb"),
            ("ünïcode", "ünïcode"),
        ];
        for (raw, want) in cases {
            assert_eq!(printable(raw), want, "{raw:?}");
        }
        assert_eq!(printable_text("a\n\tb\u{7}"), "a\n\tb\\u{7}");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        type Case<'a> = (&'a [&'a str], Vec<Vec<String>>, &'a str);
        let cases: [Case<'_>; 4] = [
            (
                &["A", "LONG HEADER"],
                vec![vec!["wide cell".into(), "x".into()]],
                "A          LONG HEADER\nwide cell  x\n",
            ),
            (&["ONLY"], vec![], "ONLY\n"),
            (
                &["K", "V"],
                vec![
                    vec!["é".into(), "1".into()],
                    vec!["\u{1b}".into(), "2".into()],
                ],
                "K       V\né       1\n\\u{1b}  2\n",
            ),
            (
                &[],
                vec![
                    vec!["key".into(), "1".into()],
                    vec!["longer_key".into(), "2".into()],
                ],
                "key         1\nlonger_key  2\n",
            ),
        ];
        for (header, rows, want) in cases {
            assert_eq!(table(header, &rows), want);
        }
    }

    #[test]
    fn event_display() {
        let mut pruned = event();
        pruned.body = Some(None);
        let mut with_body = event();
        with_body.body = Some(Some("{\"id\":\"evt_1\"}".into()));
        let mut pending = event();
        pending.state = "pending".into();
        pending.published_at_ms = None;
        pending.request_ids.clear();
        let cases = [
            (
                event(),
                vec![
                    "event_id     evt_1\n",
                    "published    2026-06-26T12:00:00.456Z\n",
                    "request_ids  req_a, req_b\n",
                    "size         42 bytes\n",
                ],
                "size         42 bytes\n",
            ),
            (
                pruned,
                vec!["size         42 bytes\n"],
                "size         42 bytes\nbody         (pruned after publishing)\n",
            ),
            (
                with_body,
                vec!["size         42 bytes\n"],
                "size         42 bytes\nbody\n{\"id\":\"evt_1\"}\n",
            ),
            (
                pending,
                vec![
                    "state        pending\n",
                    "published    -\n",
                    "request_ids  -\n",
                ],
                "size         42 bytes\n",
            ),
        ];
        for (view, wants, ending) in cases {
            let text = format_event(&view);
            for want in wants {
                assert!(text.contains(want), "{want:?} not in:\n{text}");
            }
            assert!(text.ends_with(ending), "not ending {ending:?}:\n{text}");
            assert!(!text.starts_with('\n'), "{text}");
        }
    }

    #[test]
    fn page_display() {
        let cases = [
            (
                EventPage {
                    events: vec![],
                    next_before: None,
                },
                "no events\n",
            ),
            (
                EventPage {
                    events: vec![event()],
                    next_before: Some(7),
                },
                "SEQ  RECEIVED (UTC)            ENV   STATE      TYPE                    EVENT ID  DELIVERIES  BYTES\n\
                     7    2026-06-26T12:00:00.123Z  test  published  gate_session.completed  evt_1     2           42\n\
                     more: --before 7\n",
            ),
        ];
        for (page, want) in cases {
            assert_eq!(format_page(&page), want);
        }
    }

    #[test]
    fn outbox_replay_and_send_display() {
        let outbox = OutboxView {
            by_environment: std::collections::BTreeMap::new(),
            events: 3,
            bytes: 120,
            parked: 1,
            oldest_age_seconds: 9,
            broker_connected: false,
            broker_node: None,
            last_publish_error: Some("connection refused".into()),
        };
        let report = SendReport {
            event_id: Some("evt_test_1".into()),
            status: 401,
            outcome: "invalid_signature".into(),
            request_id: None,
            latency: Duration::from_millis(12),
        };
        let cases = [
            (
                format_outbox(&outbox),
                "events              3\nbytes               120\nparked              1\noldest_age          9 s\nbroker              disconnected\nbroker_node         -\nlast_publish_error  connection refused\n",
            ),
            (
                format_replayed(&Acted {
                    status: "queued".into(),
                    event_id: "evt_1".into(),
                }),
                "queued evt_1\n",
            ),
            (
                format_send_report(&report),
                "event_id    evt_test_1\nstatus      401 Unauthorized\noutcome     invalid_signature\nlatency     12 ms\nrequest_id  -\n",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert!(!report.succeeded());
    }
}
