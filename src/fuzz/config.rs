//! Target for configuration loading: the YAML file, environment overrides, validation, and what
//! `check-config` prints.

use serde_yaml::Value;

use super::fixtures::split_ff;
use crate::config::{self, ConfigError, FileConfig, SourceText, ENV_PREFIX};

/// The input is the YAML file, then optionally `0xFF` and environment overrides, one `NAME=value`
/// per line (`TROUSSEAU_PROXY_` is added to names without it). Keys that name files are blanked
/// before validation, and inputs naming `/dev/`, `/proc/` or `/sys/` are skipped, so no file is
/// ever read. Properties: every error names a real key (and a line of the file when it gives one);
/// a valid configuration has the invariants the request path relies on; neither an error, the
/// `Debug` form of the settings, nor the redacted YAML `check-config` prints ever contains a secret.
pub fn config(data: &[u8]) {
    if [&b"/dev/"[..], b"/proc/", b"/sys/"].iter().any(|p| data.windows(p.len()).any(|w| w == *p)) {
        return;
    }
    let (yaml, env) = split_ff(data);
    let Ok(text) = std::str::from_utf8(yaml) else { return };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env.unwrap_or_default())
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            let name = if name.starts_with(ENV_PREFIX) { name.to_string() } else { format!("{ENV_PREFIX}{name}") };
            (name, value.to_string())
        })
        .collect();
    let source = SourceText { name: "fuzz.yaml".into(), text: text.to_string(), ..SourceText::default() };
    let (key_paths, secret_keys) = config::key_paths();
    // Each lookup reads the whole text; the loader does one per error, this loop 40-odd. A key
    // whose last part is nowhere in the text has no line (`line_of` reads keys as written): skip it.
    for key in key_paths.iter().filter(|k| text.len() <= 16 * 1024 && text.contains(k.rsplit('.').next().unwrap_or(k))) {
        if let Some(line) = source.line_of(key) {
            assert!(line >= 1 && line <= text.lines().count(), "{key}: line {line} is not in the file");
        }
    }

    let (mut file, source) = match config::parse_file_config(source, &env) {
        Ok(parsed) => parsed,
        Err(e) => return check_error(&e, text, &[], &|_| false),
    };
    file.oidc.client_secret_file = None;
    file.session.secrets_file = None;
    file.session.redis_url_file = None;
    file.identity.signing_key_file = None;

    let secrets = checkable_secrets(&file, text, &env);
    // A "secret" the output would hold anyway is no leak: a key name, which errors name
    // (`session.secrets`), or text that is there whatever the secrets are (a default, the
    // wording of an error): the outputs do not change when every secret is perturbed.
    let independent = std::cell::OnceCell::new();
    let anyway = |secret: &str| {
        key_paths.iter().any(|k| k.contains(secret))
            || (perturb(secret) != secret && *independent.get_or_init(|| outputs(&file, &source) == outputs(&perturbed(&file), &source)))
    };
    let printed = config::redacted_yaml(&file);
    for secret in &secrets {
        assert!(!printed.contains(secret.as_str()) || anyway(secret), "check-config prints the secret {secret:?}");
    }
    if let Ok(tree) = serde_yaml::from_str::<Value>(&printed) {
        for key in secret_keys {
            let mut node = &tree;
            for part in key.split('.') {
                node = node.get(part).unwrap_or(&Value::Null);
            }
            assert!(node.is_null() || node.as_str() == Some("<redacted>"), "{key} is printed");
        }
    }

    match config::validate(&file, &source) {
        Err(e) => check_error(&e, text, &secrets, &anyway),
        Ok(settings) => {
            let debug = format!("{settings:?}");
            for secret in &secrets {
                assert!(!debug.contains(secret.as_str()) || anyway(secret), "Settings' Debug shows the secret {secret:?}");
            }
            assert!(!settings.public_origin.ends_with('/'));
            assert_eq!(settings.oidc.redirect_uri, format!("{}/.trousseau/callback", settings.public_origin));
            assert_eq!(settings.oidc.scopes.first().map(String::as_str), Some("openid"));
            assert!(settings.session.secrets.iter().all(|s| s.len() >= crate::session::seal::MIN_SECRET_LEN));
            let binding = crate::session::seal::AppBinding {
                issuer: &settings.oidc.issuer,
                client_id: &settings.oidc.client_id,
                public_url: &settings.public_origin,
            };
            crate::session::seal::Sealer::new(&settings.session.secrets, binding).expect("validated secrets make a sealer");
            let cookie = crate::session::cookies::CookieSettings::new(&settings.session.cookie_name, settings.secure_cookies);
            assert!(http::HeaderValue::from_str(&format!("{}=1.x", cookie.name)).is_ok());
            let policy = crate::policy::Policy::new(&settings.routes, &settings.organization);
            for path in ["/", "/healthz", "/assets/a.css", "/admin/x"] {
                let _ = policy.is_public(path);
            }
        }
    }
}

/// Errors name a key of the configuration, and a line of the file when they give one, and never
/// quote a secret.
fn check_error(e: &ConfigError, text: &str, secrets: &[String], anyway: &dyn Fn(&str) -> bool) {
    let (key_paths, _) = config::key_paths();
    match e {
        ConfigError::Read { .. } => panic!("a file was read"),
        ConfigError::Syntax { origin, message } => assert!(!origin.is_empty() && !message.is_empty()),
        ConfigError::InvalidOverride { key, origin, message } => {
            let known = key_paths.iter().any(|k| key == k || *key == format!("{k}_file"));
            assert!(known, "error names `{key}`, not a configuration key");
            assert!(origin.starts_with("environment variable ") || origin.starts_with("flag --"), "{key}: origin {origin:?}");
            assert!(!message.is_empty());
        }
        ConfigError::Invalid { key, line, message } => {
            let inside = |k: &str| key.strip_prefix(k).is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'));
            let known = key_paths.iter().any(|k| key == k || *key == format!("{k}_file") || inside(k));
            assert!(known, "error names `{key}`, not a configuration key");
            assert!(!message.is_empty());
            if let Some(line) = line {
                assert!(*line >= 1 && *line <= text.lines().count(), "{key}: line {line} is not in the file");
            }
        }
    }
    // Before the message an error shows only the key and where its value came from (a file name,
    // `environment variable NAME`, `flag --name`): the program's own words, which a fuzzer-made
    // "secret" can copy (`session.secrets (environment variable TROUSSEAU_PROXY_SESSION_SE`). A
    // value can only be quoted in the message.
    let shown = match e {
        ConfigError::Syntax { message, .. } | ConfigError::InvalidOverride { message, .. } | ConfigError::Invalid { message, .. } => message,
        ConfigError::Read { .. } => unreachable!("refused above"),
    };
    assert!(e.to_string().ends_with(shown.as_str()), "the message ends the error: {e}");
    for secret in secrets {
        assert!(!shown.contains(secret.as_str()) || anyway(secret), "a configuration error quotes the secret {secret:?}");
    }
}

/// What `check-config`, the settings' `Debug` and a validation error show for `file`.
fn outputs(file: &FileConfig, source: &SourceText) -> String {
    let shown = match config::validate(file, source) {
        Ok(settings) => format!("{settings:?}"),
        Err(e) => e.to_string(),
    };
    config::redacted_yaml(file) + &shown
}

/// `file` with every secret perturbed: each letter and digit moved to another of its class (a–f
/// and A–F stay hex digits, the other letters stay non-hex letters), everything else kept. A
/// perturbed secret is as valid as the original (base64 stays base64 of the same length, a
/// percent-encoded password stays percent-encoded), so the outputs can differ only where they
/// depend on the secret's content: when they do not differ, no output quotes a secret, whatever
/// program text a fuzzer-made secret happens to copy (`session secret is not base64 (standard`).
fn perturbed(file: &FileConfig) -> FileConfig {
    let mut other = file.clone();
    other.session.secrets = file.session.secrets.iter().map(|s| perturb(s)).collect();
    other.oidc.client_secret = file.oidc.client_secret.as_deref().map(perturb);
    if let Some(mut url) = other.session.redis_url.as_deref().and_then(|u| url::Url::parse(u).ok()) {
        if let Some(password) = url.password().map(perturb) {
            let _ = url.set_password(Some(&password));
            other.session.redis_url = Some(url.to_string());
        }
    }
    other
}

/// See [`perturbed`]. The last letter or digit stays: in base64 its low bits may have to be zero
/// (a strict decoder refuses other values there), so changing it could change the outcome.
fn perturb(secret: &str) -> String {
    let shift = |c: char, first: char, len: u32| char::from_u32((c as u32 - first as u32 + 1) % len + first as u32).unwrap_or(c);
    let last = secret.rfind(|c: char| c.is_ascii_alphanumeric());
    secret
        .char_indices()
        .map(|(i, c)| match c {
            _ if Some(i) == last => c,
            'a'..='f' => shift(c, 'a', 6),
            'A'..='F' => shift(c, 'A', 6),
            'g'..='z' => shift(c, 'g', 20),
            'G'..='Z' => shift(c, 'G', 20),
            '0'..='9' => shift(c, '0', 10),
            c => c,
        })
        .collect()
}

/// The secrets a leak check can look for: at least 8 characters, and not also written somewhere
/// that is not secret (another value may legitimately be shown, and contain it).
fn checkable_secrets(file: &FileConfig, text: &str, env: &[(String, String)]) -> Vec<String> {
    let mut secrets: Vec<String> = file.session.secrets.clone();
    secrets.extend(file.oidc.client_secret.clone());
    if let Some(password) = file.session.redis_url.as_deref().and_then(|u| url::Url::parse(u).ok()).and_then(|u| u.password().map(String::from)) {
        let decoded = percent_encoding::percent_decode_str(&password).decode_utf8_lossy().into_owned();
        secrets.push(password);
        secrets.push(decoded);
    }
    let mut scalars: Vec<String> = env.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect();
    if let Ok(tree) = serde_yaml::from_str::<Value>(text) {
        collect_scalars(&tree, &mut scalars);
    }
    secrets
        .into_iter()
        .filter(|s| s.chars().count() >= 8)
        .filter(|s| scalars.iter().filter(|x| x.contains(s.as_str())).count() <= 1)
        .filter(|s| !["<redacted>", "trousseau_session", "(unparsable Redis URL)"].iter().any(|fixed| fixed.contains(s.as_str())))
        .collect()
}

fn collect_scalars(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(b.to_string()),
        Value::Sequence(items) => items.iter().for_each(|v| collect_scalars(v, out)),
        Value::Mapping(map) => {
            for (k, v) in map {
                collect_scalars(k, out);
                collect_scalars(v, out);
            }
        }
        Value::Tagged(tagged) => collect_scalars(&tagged.value, out),
        Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::perturb;

    #[test]
    fn a_perturbed_secret_differs_but_stays_in_its_class() {
        let secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let other = perturb(secret);
        assert_ne!(other, secret);
        assert_eq!(other.len(), secret.len());
        assert!(crate::session::seal::parse_secret(&other).is_ok(), "base64 stays base64: {other}");
        assert_eq!(perturb("%2Fa9z G"), "%3Ab0g G", "hex digits stay hex, the rest stays put");
        assert_eq!(perturb("#: ()"), "#: ()", "nothing to perturb: such a secret is checked by containment alone");
    }
}
