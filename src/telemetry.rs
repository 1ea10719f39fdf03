//! Telemetry setup: tracing-subscriber with an `EnvFilter` (`RUST_LOG` wins over the
//! `--log-level` default), text or JSON output, and the `log` bridge (actix logs through `log`).

use tracing_subscriber::{fmt, prelude::*, reload, EnvFilter, Registry};

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Errors of telemetry setup.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter directive does not parse.
    #[error("invalid log level/filter {directive:?}")]
    Filter {
        /// The directive.
        directive: String,
        /// Cause.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The filter could not be swapped.
    #[error("cannot change the log level: {message}")]
    Reload {
        /// Why.
        message: String,
    },
}

impl TelemetryError {
    /// Bounded label.
    pub fn category(&self) -> &'static str {
        match self {
            TelemetryError::Filter { .. } => "filter",
            TelemetryError::Reload { .. } => "reload",
        }
    }
}

/// Changes the log filter at run time (`PUT /log-level`).
#[derive(Clone, Default)]
pub struct LogLevel(Option<reload::Handle<EnvFilter, Registry>>);

impl std::fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LogLevel").field(&self.0.is_some()).finish()
    }
}

impl LogLevel {
    /// Replaces the filter with `directive` (EnvFilter syntax).
    pub fn set(&self, directive: &str) -> Result<(), TelemetryError> {
        let filter = EnvFilter::try_new(directive).map_err(|source| TelemetryError::Filter {
            directive: directive.to_string(),
            source,
        })?;
        match &self.0 {
            Some(h) => h.reload(filter).map_err(|e| TelemetryError::Reload {
                message: e.to_string(),
            }),
            None => Err(TelemetryError::Reload {
                message: "another subscriber owns the global logger".into(),
            }),
        }
    }
}

/// Installs the global subscriber. A second call (tests, or a subscriber installed by the
/// caller) leaves the existing one in place and succeeds; its [`LogLevel`] then cannot reload.
pub fn init(format: LogFormat, level: &str) -> Result<LogLevel, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).map_err(|source| TelemetryError::Filter {
            directive: v.clone(),
            source,
        })?,
        _ => EnvFilter::try_new(level).map_err(|source| TelemetryError::Filter {
            directive: level.to_string(),
            source,
        })?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init` also installs the `log` → tracing bridge (tracing-log feature).
    let installed = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(true)
                    // Colours only on a terminal, never in files or log collectors.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true))
            .try_init(),
    };
    Ok(LogLevel(installed.ok().map(|()| handle)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_level_is_a_clear_error_not_a_panic() {
        if std::env::var("RUST_LOG").is_ok() {
            return;
        }
        let err = init(LogFormat::Text, "kubedirector=loud").err();
        assert_eq!(err.map(|e| e.category()), Some("filter"));
    }
}
