//! One logging convention for the node and the operator: the filter comes
//! from `RUST_LOG` (the node's older `KEYRAFT_LOG` is still read when
//! `RUST_LOG` is unset), records go to stderr as text or as one JSON object
//! per line (`--log-format json`).

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?} is not one of: text, json")),
        }
    }
}

/// The filter: `RUST_LOG`, else `KEYRAFT_LOG`, else `default`.
pub fn filter(default: &str) -> EnvFilter {
    ["RUST_LOG", "KEYRAFT_LOG"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
}

/// Installs the global subscriber; `default` is the filter when no variable sets one.
pub fn init(format: LogFormat, default: &str) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(default)).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_formats_and_names_the_choices_on_error() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().unwrap_err().contains("text, json"));
    }
}
