//! Configuration: the YAML file, environment overrides and `*_file` secrets, validated once at start
//! into a ready-to-use [`Settings`] (parsed URLs, loaded secrets, compiled rules).
//!
//! Precedence is flag > environment > file > default. Every key can be set from the environment as
//! `TROUSSEAU_PROXY_` + the upper-cased path with `_` between levels
//! (`TROUSSEAU_PROXY_OIDC_CLIENT_SECRET`). Unknown keys are an error, and every error names the key
//! and, when it comes from the file, the line.

mod file;
mod keys;
mod source;
mod settings;
mod validate;
#[cfg(test)]
mod tests;

pub use file::*;
pub use keys::{env_name, key_paths};
pub use settings::*;
pub use source::*;
pub use validate::validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "TROUSSEAU_PROXY_";

/// What went wrong while reading or validating the configuration. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not parse or does not fit the schema (unknown key, wrong type).
    #[error("{origin}: {message}")]
    Syntax {
        /// `config.yaml line 12` or `environment variable TROUSSEAU_PROXY_…`.
        origin: String,
        /// serde's message, which names the key.
        message: String,
    },
    /// A key has a value that is not acceptable.
    #[error("{key}{line}: {message}", line = line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// Dotted path of the key, e.g. `oidc.issuer`.
        key: String,
        /// Line in the file where the key is, when it is in the file.
        line: Option<usize>,
        /// What is wrong and what to do.
        message: String,
    },
    /// A key set from the environment or a flag has a value that is not acceptable.
    #[error("{key} ({origin}): {message}")]
    InvalidOverride {
        /// Dotted path of the key, e.g. `listen`.
        key: String,
        /// Where the value came from: `environment variable TROUSSEAU_PROXY_LISTEN`, `flag --listen`.
        origin: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A duration written as `90s`, `5m`, `12h`, `30d` (or a bare number of seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `90s`, `5m`, `12h`, `30d`, `250ms` or a bare number of seconds.
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration: write it like 90s, 5m, 12h or 30d"))?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "ms" => return Ok(HumanDuration(Duration::from_millis(n))),
            "m" => n.saturating_mul(60),
            "h" => n.saturating_mul(3600),
            "d" => n.saturating_mul(86_400),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}`; use ms, s, m, h or d (90s, 5m, 12h, 30d)"
                ))
            }
        };
        Ok(HumanDuration(Duration::from_secs(secs)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        match s {
            s if s != 0 && s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s != 0 && s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s != 0 && s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One value or a list of them (`signing_key_file: a.pem` or `signing_key_file: [a.pem, b.pem]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a slice-like list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
}

/// Where a running proxy's configuration comes from, kept to read it again on a reload: the
/// file, the environment as it was at start (a process's environment does not change), the
/// flags. Not `Debug`: the environment may hold secrets.
#[derive(Clone, Default)]
pub struct ConfigSource {
    /// `--config`.
    pub path: Option<PathBuf>,
    /// The `TROUSSEAU_PROXY_*` variables.
    pub env: Vec<(String, String)>,
    /// The command-line values.
    pub flags: Flags,
}

impl ConfigSource {
    /// This process's: `path`, the `TROUSSEAU_PROXY_*` environment variables, `flags`.
    pub fn of_process(path: Option<PathBuf>, flags: Flags) -> ConfigSource {
        let env = std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        ConfigSource { path, env, flags }
    }

    /// Reads, merges and validates it, exactly as `check-config` does ([`load`]).
    pub fn load(&self) -> Result<(Settings, FileConfig), ConfigError> {
        load(self.path.as_deref(), &self.env, &self.flags)
    }

    /// The files a change of which changes the configuration: the configuration file and every
    /// `*_file` it names (secrets, signing keys, CA files) — not the TLS certificate and key,
    /// which the listener re-reads itself ([`crate::tls::serving::ReloadingCert`]).
    pub fn watched_files(&self, file: &FileConfig) -> Vec<PathBuf> {
        let named = [
            file.oidc.client_secret_file.as_ref(),
            file.oidc.ca_file.as_ref(),
            file.proxy.ca_file.as_ref(),
            file.session.secrets_file.as_ref(),
            file.session.redis_url_file.as_ref(),
            file.session.redis_sentinel.as_ref().and_then(|s| s.password_file.as_ref()),
            file.session.redis_sentinel.as_ref().and_then(|s| s.sentinel_password_file.as_ref()),
            file.session.redis_ca_file.as_ref(),
            file.tls.client_ca_file.as_ref(),
        ];
        let keys = file.identity.signing_key_file.as_ref().map(OneOrMany::to_vec).unwrap_or_default();
        self.path
            .iter()
            .cloned()
            .chain(named.into_iter().flatten().map(PathBuf::from))
            .chain(keys.into_iter().map(PathBuf::from))
            .collect()
    }
}

/// Reads, merges and validates: the one entry point for `run` and `check-config`.
pub fn load(
    path: Option<&Path>,
    env: &[(String, String)],
    flags: &Flags,
) -> Result<(Settings, FileConfig), ConfigError> {
    let (mut file, mut source) = load_file_config(path, env)?;
    if let Some(listen) = &flags.listen {
        file.listen = Some(listen.clone());
        source.overrides.push(("listen".into(), "flag --listen".into()));
    }
    if let Some(upstream) = &flags.upstream {
        file.upstream = Some(upstream.clone());
        source.overrides.push(("upstream".into(), "flag --upstream".into()));
    }
    let settings = validate(&file, &source)?;
    Ok((settings, file))
}
