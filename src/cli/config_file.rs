//! `orderd serve --config FILE`: the same settings as the flags and the
//! `ORDERD_*` variables, in a TOML file, one `flag-name = value` per line:
//!
//! ```toml
//! data-dir = "/var/lib/orderd"
//! cores = "2-7"
//! durability = "sync"
//! checkpoint-every-records = 8000000
//! no-metrics = false
//! ```
//!
//! Precedence, highest first: a flag on the command line, its `ORDERD_*`
//! variable, the file, the built-in default. The file's values become the
//! defaults of the `serve` command before the command line is parsed, so
//! every check of a flag applies to them too. An unknown key (a typo) is an
//! error naming it, never ignored. `orderd serve --print-config` prints the
//! settings a start would use, each with where it came from.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("the configuration file {} is not valid TOML: {detail}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with the line).
        detail: String,
    },
    /// A key names no setting of `orderd serve`.
    #[error("the configuration file {} sets `{key}`, which is not a setting of `orderd serve` (the keys are its flag names: see `orderd serve --help`)", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A value is a table or an array.
    #[error("the configuration file {} gives `{key}` a {kind}; settings are strings, numbers or booleans", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What it is.
        kind: &'static str,
    },
}

/// Settings that are not part of a configuration (the file itself, the
/// printing, help).
const NOT_SETTINGS: [&str; 4] = ["config", "print_config", "help", "version"];

/// The `(argument id, value)` pairs of the file at `path`, checked against
/// the arguments of `serve`.
///
/// # Errors
/// See [`ConfigFileError`].
pub fn read(path: &Path, serve: &Command) -> Result<Vec<(String, String)>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.to_owned(), source })?;
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigFileError::Syntax { path: path.to_owned(), detail: e.to_string() })?;
    let mut settings = Vec::with_capacity(table.len());
    for (key, value) in table {
        let id = key.replace('-', "_");
        let known = serve.get_arguments().any(|a| a.get_id().as_str() == id && !a.is_hide_set() && !NOT_SETTINGS.contains(&id.as_str()));
        if !known {
            return Err(ConfigFileError::UnknownKey { path: path.to_owned(), key });
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(_) => return Err(ConfigFileError::BadValue { path: path.to_owned(), key, kind: "list" }),
            toml::Value::Table(_) => return Err(ConfigFileError::BadValue { path: path.to_owned(), key, kind: "table" }),
        };
        settings.push((id, text));
    }
    Ok(settings)
}

/// `serve` with the file's settings as its arguments' defaults.
#[must_use]
pub fn apply(mut serve: Command, settings: &[(String, String)]) -> Command {
    for (id, value) in settings {
        let value = value.clone();
        serve = serve.mut_arg(id.as_str(), move |a| a.default_value(value));
    }
    serve
}

/// Where a setting came from, in `--print-config`'s words.
fn source_word(source: Option<ValueSource>, from_file: bool) -> &'static str {
    match source {
        Some(ValueSource::CommandLine) => "command line",
        Some(ValueSource::EnvVariable) => "environment",
        Some(ValueSource::DefaultValue) if from_file => "configuration file",
        _ => "default",
    }
}

/// The settings `serve` would start with, one TOML line each with where it
/// came from (`--print-config`).
#[must_use]
pub fn print(serve: &Command, matches: &ArgMatches, settings: &[(String, String)]) -> String {
    let mut out = String::new();
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || NOT_SETTINGS.contains(&id) {
            continue;
        }
        let Ok(Some(raw)) = matches.try_get_raw(id) else { continue };
        let value: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = value.join(",");
        let literal = if value.parse::<i64>().is_ok() || value == "true" || value == "false" { value } else { format!("{value:?}") };
        let from_file = settings.iter().any(|(key, _)| key == id);
        let source = source_word(matches.value_source(id), from_file);
        out.push_str(&format!("{} = {literal}  # {source}\n", id.replace('_', "-")));
    }
    out
}
