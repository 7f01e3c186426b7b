//! The keys of the configuration: every path and its kind (read from the structure itself), which
//! hold secrets, and their environment variable names.

use super::{FileConfig, ENV_PREFIX};

/// Where a secret that must be redacted in `check-config` lives.
/// (`session.redis_cluster`: its nodes may be URLs with the password.)
pub(super) const SECRET_KEYS: &[&str] = &["oidc.client_secret", "session.secrets", "session.redis_url", "session.redis_cluster"];

/// What kind of value a key takes, which decides how an environment variable's text becomes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Text, taken as written (a secret of `123` stays text).
    Text,
    /// `true` or `false`.
    Switch,
    /// A number: `20` is that number.
    Number,
    /// A list of text: YAML flow syntax (`[a, b]`) or a comma-separated list.
    List,
    /// YAML only: a list of mappings or a mapping of the user's own names.
    Yaml,
}

/// One settable key: its dotted path and its kind.
#[derive(Debug)]
pub(super) struct Key {
    /// `session.store`.
    pub path: String,
    /// How the environment writes it.
    pub kind: Kind,
}

/// Every settable key, read from the configuration's own structure: its defaults, serialized,
/// are a tree whose leaves are the keys and whose values tell their kind. A field added to a
/// section is a key here with nothing else to write.
pub(super) fn keys() -> &'static [Key] {
    static KEYS: std::sync::LazyLock<Vec<Key>> = std::sync::LazyLock::new(|| {
        let defaults = serde_yaml::to_value(FileConfig::default()).expect("the defaults serialize");
        let mut keys = Vec::new();
        leaves(&defaults, "", &mut keys);
        keys
    });
    &KEYS
}

fn leaves(node: &serde_yaml::Value, prefix: &str, keys: &mut Vec<Key>) {
    use serde_yaml::Value;
    let Some(section) = node.as_mapping() else { return };
    for (name, value) in section {
        let Some(name) = name.as_str() else { continue };
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        let kind = match (path.as_str(), value) {
            // A list of rules (mappings), which no comma-separated text can write.
            ("routes.rules", _) => Kind::Yaml,
            // One file or a list of them; absent by default, so its default says nothing.
            ("identity.signing_key_file", _) => Kind::List,
            // Absent by default: a list of nodes, and a mapping (YAML in the environment).
            ("session.redis_cluster", _) => Kind::List,
            ("session.redis_sentinel", _) => Kind::Yaml,
            (_, Value::Mapping(fields)) if !fields.is_empty() => {
                leaves(value, &path, keys);
                continue;
            }
            // An empty mapping by default: names of the user's own (`identity.headers`).
            (_, Value::Mapping(_)) => Kind::Yaml,
            (_, Value::Bool(_)) => Kind::Switch,
            (_, Value::Number(_)) => Kind::Number,
            (_, Value::Sequence(_)) => Kind::List,
            _ => Kind::Text,
        };
        keys.push(Key { path, kind });
    }
}

/// The key an environment variable sets (`TROUSSEAU_PROXY_SESSION_STORE` → `session.store`): `_`
/// is ambiguous between levels and inside names, so the name is matched against the known keys.
pub(super) fn key_of_env(name: &str) -> Option<&'static Key> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    keys().iter().find(|key| key.path.replace('.', "_").eq_ignore_ascii_case(rest))
}

/// Environment variables with our prefix that are not configuration keys.
pub(super) const NON_KEY_VARS: &[&str] = &["TROUSSEAU_PROXY_CONFIG", "TROUSSEAU_PROXY_LOG"];

/// The environment variable name of a key path.
pub fn env_name(path: &str) -> String {
    format!("{ENV_PREFIX}{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Every key path, and the ones holding secrets: for the fuzz targets ([`crate::fuzz`]), which
/// check that errors name a real key and that `check-config` never shows a secret.
#[doc(hidden)]
pub fn key_paths() -> (Vec<&'static str>, &'static [&'static str]) {
    (keys().iter().map(|key| key.path.as_str()).collect(), SECRET_KEYS)
}
