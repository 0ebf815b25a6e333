//! The collector every section reports its problems into, and the [`ConfigError`] they become.
//!
//! A problem is `key.path: what is wrong`. The key path is spelled out where the problem is found
//! (`amqp.url`, `endpoint[0].secrets`), so a reader can grep for it. What is wrong never quotes a
//! secret: the callers say "value not shown" where a value could be one.

use std::fmt;

/// Every problem found in a config file, each with its key path.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// A positive integer key: its path, its default when unset and the largest value accepted.
pub(super) struct Bound {
    pub(super) key: &'static str,
    pub(super) default: u64,
    pub(super) max: u64,
}

/// The problems found so far, in the order they were found.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    pub(super) fn report(&mut self, key: &str, what: impl fmt::Display) {
        self.0.push(format!("{key}: {what}"));
    }

    /// The value of `result`, or `None` with its error reported under `key`.
    pub(super) fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|why| self.report(key, why)).ok()
    }

    /// `value` (or the bound's default when unset), reported unless it is in `1..=max`. An
    /// out-of-range value is still returned: checks that compare it with another key report
    /// against it too.
    pub(super) fn positive(&mut self, bound: &Bound, value: Option<u64>) -> u64 {
        let v = value.unwrap_or(bound.default);
        if v == 0 || v > bound.max {
            self.report(bound.key, format!("{v} is out of range 1..={}", bound.max));
        }
        v
    }

    /// `built` when nothing was reported, else every problem. A section builds its value whenever
    /// it reports nothing (it returns `None` only through a reported problem), so `built` is
    /// `Some` whenever the list is empty.
    pub(super) fn finish<T>(self, built: Option<T>) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(built.expect("a section returns None only after reporting a problem"))
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}
