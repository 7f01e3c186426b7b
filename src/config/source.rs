//! Reading the configuration: the file, the environment overrides merged into it, and
//! [`SourceText`], which remembers where each key came from so an error can name its line.

use std::path::Path;

use super::keys::{key_of_env, keys, Key, Kind, NON_KEY_VARS, SECRET_KEYS};
use super::{ConfigError, FileConfig, ENV_PREFIX};

/// Reads the file (if any), applies environment overrides, and returns the raw config plus the
/// file text (used to point errors at lines).
pub fn load_file_config(
    path: Option<&Path>,
    env: &[(String, String)],
) -> Result<(FileConfig, SourceText), ConfigError> {
    let (text, name) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?,
            p.display().to_string(),
        ),
        None => (String::new(), "(no config file)".to_string()),
    };
    parse_file_config(SourceText { name, text, overrides: Vec::new() }, env)
}

/// [`load_file_config`] once the file is read: parses `source` and applies the environment
/// overrides of `env`.
pub fn parse_file_config(
    mut source: SourceText,
    env: &[(String, String)],
) -> Result<(FileConfig, SourceText), ConfigError> {
    let overrides: Vec<(&Key, &str, &str)> =
        env.iter().filter_map(|(k, v)| Some((key_of_env(k)?, k.as_str(), v.as_str()))).collect();
    let unknown_env: Vec<&String> = env
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(ENV_PREFIX) && !NON_KEY_VARS.contains(&k.as_str()) && key_of_env(k).is_none())
        .collect();
    if let Some(k) = unknown_env.first() {
        return Err(ConfigError::Syntax {
            origin: format!("environment variable {k}"),
            message: "does not name a configuration key (see README, Configuration)".into(),
        });
    }

    let parse_text = if source.text.trim().is_empty() { "{}" } else { source.text.as_str() };
    // First pass straight from the text: serde_yaml's errors then carry the line.
    let file: FileConfig = serde_yaml::from_str(parse_text).map_err(|e| yaml_error(&source, e))?;
    if overrides.is_empty() {
        return Ok((file, source));
    }
    let mut tree: serde_yaml::Value = serde_yaml::from_str(parse_text).map_err(|e| yaml_error(&source, e))?;
    if tree.is_null() {
        tree = serde_yaml::Value::Mapping(Default::default());
    }
    // One variable at a time, so a value that does not fit is reported against its variable
    // (serde's message then has no key path of its own); the file alone already fitted.
    let mut merged = file;
    for (key, var, value) in &overrides {
        let path = key.path.as_str();
        let origin = format!("environment variable {var}");
        let value = env_value(key, value).map_err(|message| ConfigError::Syntax {
            origin: origin.clone(),
            message: if is_secret_path(path) { format!("{path}: is not valid YAML (value redacted)") } else { message },
        })?;
        set_path(&mut tree, path, value);
        merged = serde_yaml::from_value(tree.clone()).map_err(|e| {
            let message = e.to_string();
            let message = if is_secret_path(path) { without_value(&message) } else { message };
            ConfigError::Syntax { origin: origin.clone(), message: format!("{path}: {message}") }
        })?;
        source.overrides.push((path.to_string(), origin));
    }
    Ok((merged, source))
}

/// Whether a key path (`session.secrets`, `session.secrets[0]`) is or lies inside a secret key.
fn is_secret_path(path: &str) -> bool {
    SECRET_KEYS.iter().any(|key| within(path, key))
}

/// Whether `path` is `key` or lies inside it: `key[0]`, `key.field`.
fn within(path: &str, key: &str) -> bool {
    path.strip_prefix(key).is_some_and(|rest| rest.is_empty() || rest.starts_with('[') || rest.starts_with('.'))
}

/// serde's message without the value it quotes: `invalid type: string "…", expected a sequence`
/// becomes `invalid type: string (value redacted), expected a sequence`. Any other message is
/// replaced whole, since it could quote the value in a way not known here.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else { continue };
        // The value is quoted before serde's own `, expected …`, so the last one is serde's.
        let Some((unexpected, expected)) = rest.rsplit_once(", expected ") else { continue };
        let kind = unexpected.split(['"', '`', '\'']).next().unwrap_or("").trim();
        let kind = if !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b' ') { kind } else { "value" };
        return format!("{prefix}{kind} (value redacted), expected {expected}");
    }
    "this value does not fit the key (value redacted)".into()
}

/// A YAML error as the configuration's own: serde_yaml names the key path of a value that does
/// not fit (`session.store: unknown variant `x`, expected one of …`) and its line, so such an
/// error reads like a validation error (`session.store (line 12): …`); an error that names no
/// key (bad indentation, an unknown key under a section) keeps the file's line and column.
fn yaml_error(source: &SourceText, e: serde_yaml::Error) -> ConfigError {
    // The line counted as `line_of` and editors count it, from the byte offset: the YAML parser
    // also breaks lines at CR, U+0085, U+2028 and U+2029. Past the end points nowhere.
    let line = e
        .location()
        .and_then(|loc| source.text.get(..loc.index()))
        .map(|before| before.matches('\n').count() + 1)
        .filter(|&line| line <= source.text.lines().count());
    let origin = match e.location() {
        Some(loc) => format!("{} line {} column {}", source.name, loc.line(), loc.column()),
        None => source.name.clone(),
    };
    // serde_yaml appends "at line N column M" itself (last, after any quoted value); keep the
    // message focused on the key.
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    match message.split_once(": ") {
        // `session.secrets: invalid type: string "<the secret>", …`: name the key, never the value.
        Some((path, rest)) if is_key_path(path) => {
            let rest = if is_secret_path(path) { without_value(rest) } else { rest.to_string() };
            ConfigError::Invalid { key: path.to_string(), line, message: rest }
        }
        _ => ConfigError::Syntax { origin, message },
    }
}

/// Whether `path` is a key of the configuration or lies inside one (`routes.rules[0].path`).
pub(super) fn is_key_path(path: &str) -> bool {
    keys().iter().any(|key| within(path, &key.path))
}

fn env_value(key: &Key, value: &str) -> Result<serde_yaml::Value, String> {
    let yaml = |value: &str| serde_yaml::from_str(value).map_err(|e| format!("is not valid YAML: {e}"));
    match key.kind {
        Kind::List if !value.trim_start().starts_with('[') => {
            let spaces_too = key.path == "oidc.scopes";
            let items = value
                .split(|c| c == ',' || c == ' ' && spaces_too)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| serde_yaml::Value::String(s.to_string()))
                .collect();
            Ok(serde_yaml::Value::Sequence(items))
        }
        Kind::List | Kind::Yaml => yaml(value),
        // Let YAML decide bool or number, and keep it only where the key takes one.
        Kind::Switch | Kind::Number => match serde_yaml::from_str(value) {
            Ok(v @ (serde_yaml::Value::Bool(_) | serde_yaml::Value::Number(_))) => Ok(v),
            _ => Ok(serde_yaml::Value::String(value.to_string())),
        },
        // Text stays text, however much it looks like a number (a secret of "123").
        Kind::Text => Ok(serde_yaml::Value::String(value.to_string())),
    }
}

fn set_path(tree: &mut serde_yaml::Value, path: &str, value: serde_yaml::Value) {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_mapping() {
            *node = serde_yaml::Value::Mapping(Default::default());
        }
        let map = node.as_mapping_mut().expect("just made a mapping");
        let key = serde_yaml::Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(key, value);
            return;
        }
        node = map.entry(key).or_insert(serde_yaml::Value::Mapping(Default::default()));
    }
}

/// The text of the configuration file, kept to point validation errors at lines, and which keys
/// the environment or a flag set instead (an error about those names the variable, not a line).
#[derive(Clone, Debug, Default)]
pub struct SourceText {
    /// File name for messages.
    pub name: String,
    /// Whole text.
    pub text: String,
    /// Key paths set by an environment variable or a flag, with where: `("listen", "environment
    /// variable TROUSSEAU_PROXY_LISTEN")`. A later entry for the same key wins (flags come last).
    pub overrides: Vec<(String, String)>,
}

impl SourceText {
    /// The error for `key`, pointing at where its value came from: the environment variable or
    /// flag that set it, else its line in the file.
    pub fn invalid(&self, key: &str, message: String) -> ConfigError {
        let set_by = self.overrides.iter().rev().find(|(path, _)| {
            key == path || key.strip_prefix(path.as_str()).is_some_and(|rest| rest.starts_with('.'))
        });
        match set_by {
            Some((_, origin)) => ConfigError::InvalidOverride { key: key.to_string(), origin: origin.clone(), message },
            None => ConfigError::Invalid { key: key.to_string(), line: self.line_of(key), message },
        }
    }

    /// The 1-based line where a dotted key path is written, if it is in the file. Hand-rolled:
    /// serde_yaml (which the design card names) gives a line only with its own errors, and keeps
    /// no position for a value once deserialized, so an error found by validation — after serde —
    /// finds its line here.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut want = path.split('.').peekable();
        let mut indent_stack: Vec<usize> = Vec::new();
        let mut target = want.next()?;
        for (i, line) in self.text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(&parent) = indent_stack.last() {
                if indent <= parent {
                    // Left the block we were searching in: the key is not in the file.
                    return None;
                }
            } else if indent != 0 {
                continue;
            }
            let key = trimmed.split(':').next().unwrap_or("").trim().trim_matches('"');
            if trimmed.contains(':') && key == target {
                match want.next() {
                    None => return Some(i + 1),
                    Some(next) => {
                        indent_stack.push(indent);
                        target = next;
                    }
                }
            }
        }
        None
    }
}
