//! `[log]`: the format and level of the relay's own logs.

use serde::Deserialize;

use super::problems::Problems;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl RawLog {
    pub(super) fn validate(self, problems: &mut Problems) -> LogConfig {
        let level = self.level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            problems.report(
                "log.level",
                format!("{level:?} is not a tracing filter such as \"info\""),
            );
        }
        LogConfig {
            format: self.format.unwrap_or(LogFormat::Json),
            level,
        }
    }
}
