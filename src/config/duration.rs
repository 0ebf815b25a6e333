//! The durations of `store.retain_*`: `"7d"`, `"12h"`, `"30m"`, `"90s"` or `"forever"`.
//!
//! Hand-written rather than `humantime`: humantime also accepts `"1w"`, `"7days"` and
//! `"1h 30m"`, which the relay rejects, and its error texts differ from the ones operators see.

use std::time::Duration;

/// `"7d"`, `"12h"`, `"30m"`, `"90s"`, or `"forever"` (`None`).
pub(super) fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    if text == "forever" {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration like \"7d\", \"12h\", \"30m\" or \"forever\"")
    })?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} has no unit; use s, m, h or d, or \"forever\""
            ));
        }
    };
    // A value past u64 seconds is a typo, not a retention; without the check it panicked.
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("{text:?} is too large for a duration"))?;
    if secs == 0 {
        return Err(format!("{text:?} must be above zero"));
    }
    Ok(Some(Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("7d"),
            Ok(Some(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(parse_duration("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_duration("forever"), Ok(None));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("1w").is_err());
    }

    #[test]
    fn a_duration_too_large_for_seconds_is_an_error_not_a_panic() {
        // u64::MAX / 86_400 + 1 days overflows a u64 of seconds; so do the other units.
        let days = u64::MAX / 86_400 + 1;
        for text in [
            format!("{days}d"),
            format!("{}h", u64::MAX / 3_600 + 1),
            format!("{}m", u64::MAX / 60 + 1),
        ] {
            let err = parse_duration(&text).expect_err("overflow is refused");
            assert!(err.contains("too large"), "{text}: {err}");
        }
        assert_eq!(
            parse_duration(&format!("{}d", u64::MAX / 86_400)),
            Ok(Some(Duration::from_secs(u64::MAX / 86_400 * 86_400)))
        );
    }
}
