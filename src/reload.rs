//! Live reload: on SIGHUP, and when a watched file changes, the configuration is read again,
//! validated exactly as `check-config` validates it, and put in force for the requests that come
//! after — the ones in flight finish with the configuration they began with ([`Current`]).
//!
//! - **Watched**: the configuration file and every `*_file` it names (secrets, signing keys, CA
//!   files), by content, every [`CHECK_EVERY`]: a Kubernetes ConfigMap or Secret volume update
//!   (the kubelet swaps a `..data` symlink; the paths are opened again, so it is followed), an
//!   editor's rename-over, a `cp` in place. The TLS certificate and key are the listener's own
//!   ([`crate::tls::serving::ReloadingCert`]), checked on the same tick: a renewal never waits on
//!   a configuration that does not validate.
//! - **Refused, the running configuration kept**: a file that does not validate (one ERROR line
//!   naming the key and line, as `check-config` would), or a change only a restart can make
//!   ([`crate::app::needs_restart`]: listeners, the store, what sessions are sealed to). Counted in
//!   `trousseau_proxy_config_reload_failures_total`; a reload put in force sets
//!   `trousseau_proxy_config_last_reload_success_timestamp_seconds`.
//! - **Kept across a reload** (see [`App::succeed`]): counters, open connections, sessions in
//!   memory, revocations, refreshes in flight, what Trousseau told us, an unchanged signing key.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::app::{App, Current};
use crate::config::{ConfigSource, FileConfig};

/// How often the watched files (and the TLS certificate) are compared with what was loaded.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a reload ran, for its log line.
#[derive(Clone, Copy, Debug)]
pub enum Cause {
    /// SIGHUP (`systemctl reload`, `kill -HUP`).
    Signal,
    /// A watched file changed.
    FileChanged,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Signal => "SIGHUP",
            Cause::FileChanged => "a watched file changed",
        }
    }
}

/// The running configuration and where it came from.
pub struct Reloader {
    current: Arc<Current>,
    /// `None`: built in code (`dev`, tests): nothing to read again.
    source: Option<ConfigSource>,
    loaded: Mutex<Loaded>,
}

/// What the last reading of the configuration saw.
struct Loaded {
    /// The file as last put in force, to name the keys a reload changes.
    file: Option<FileConfig>,
    /// The files to watch, from the last reading that got that far.
    files: Vec<PathBuf>,
    /// Their contents' digest at the last reading, put in force or not (a file that does not
    /// validate is reported once, not at every check).
    digest: [u8; 32],
}

impl Reloader {
    /// Reloads `current` from `source` (the `file` it was first read into).
    pub fn new(current: Arc<Current>, source: Option<ConfigSource>, file: Option<FileConfig>) -> Reloader {
        let files = match (&source, &file) {
            (Some(source), Some(file)) => source.watched_files(file),
            (Some(source), None) => source.path.iter().cloned().collect(),
            (None, _) => Vec::new(),
        };
        let digest = digest(&files);
        Reloader { current, source, loaded: Mutex::new(Loaded { file, files, digest }) }
    }

    /// The app in force.
    pub fn current(&self) -> &Arc<Current> {
        &self.current
    }

    /// Reads the configuration again and puts it in force, or says why not (the running one is
    /// kept). Counted and logged either way.
    pub fn reload(&self, cause: Cause) -> Result<(), String> {
        let Some(source) = &self.source else {
            tracing::info!(cause = cause.as_str(), "nothing to reload: this configuration was not read from a file or the environment");
            return Ok(());
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let started = std::time::Instant::now();
        let result = self.put_in_force(source, &mut loaded);
        let took_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
        match &result {
            Ok(changed) if changed.is_empty() => tracing::info!(cause = cause.as_str(), took_ms, "configuration reloaded: no key changed (files it names read again)"),
            Ok(changed) => tracing::info!(cause = cause.as_str(), changed = %changed.join(", "), took_ms, "configuration reloaded"),
            Err(e) => tracing::error!(cause = cause.as_str(), error = %e, "configuration reload refused; the running configuration is kept"),
        }
        // Counted after its line is written: whoever sees the counter move finds the line.
        self.current.get().metrics().config_reload(result.is_ok());
        result.map(drop)
    }

    /// Reads, validates, builds and swaps; the keys that changed.
    fn put_in_force(&self, source: &ConfigSource, loaded: &mut Loaded) -> Result<Vec<String>, String> {
        // The digest before reading: a change made while we read is seen at the next check.
        loaded.digest = digest(&loaded.files);
        let (mut settings, file) = source.load().map_err(|e| e.to_string())?;
        let files = source.watched_files(&file);
        if files != loaded.files {
            // Other files named now: their digest from here (one extra reload at most if one
            // changes meanwhile, never a change missed).
            loaded.files = files;
            loaded.digest = digest(&loaded.files);
        }
        crate::limits::fit_open_file_limit(&mut settings.limits, crate::util::worker_count(), crate::app::POOL_MAX_IDLE_PER_WORKER);
        let before = self.current.get();
        let next = Arc::new(before.succeed(settings).map_err(|e| e.to_string())?);
        if !Arc::ptr_eq(next.oidc(), before.oidc()) && !next.oidc().is_ready() {
            // A new relying party while Trousseau was not reached yet: it looks for itself.
            tokio::spawn(crate::oidc::Oidc::discover_until_ready(Arc::downgrade(next.oidc())));
        }
        self.current.put(next);
        let changed = loaded.file.as_ref().map(|before| changed_keys(before, &file)).unwrap_or_default();
        loaded.file = Some(file);
        Ok(changed)
    }

    /// Reloads when a watched file's content changed since the last reading.
    pub fn reload_if_changed(&self) {
        let changed = {
            let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
            digest(&loaded.files) != loaded.digest
        };
        if changed {
            let _ = self.reload(Cause::FileChanged);
        }
    }

    /// Checks the files every [`CHECK_EVERY`] and reloads on SIGHUP, forever (spawn it).
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut hangups = hangups();
        loop {
            let cause = tokio::select! {
                _ = tick.tick() => None,
                Some(()) = next_hangup(&mut hangups) => Some(Cause::Signal),
            };
            // File reads, PEM and key parsing, a new TLS client: blocking work, kept off the
            // runtime that also serves /metrics, the HTTPS redirect and the connection sweeps.
            let this = Arc::clone(&self);
            let done = tokio::task::spawn_blocking(move || {
                renew_certificate(&this.current.get(), cause.is_some());
                match cause {
                    Some(cause) => {
                        let _ = this.reload(cause);
                    }
                    None => this.reload_if_changed(),
                }
            })
            .await;
            if let Err(e) = done {
                tracing::error!(error = %e, "configuration reload failed unexpectedly; the running configuration is kept");
            }
        }
    }
}

/// Re-reads the TLS certificate and key (the listener serves a renewed pair without a reload of
/// the rest); `loud` says so even when nothing changed (SIGHUP).
fn renew_certificate(app: &App, loud: bool) {
    let Some(tls) = &app.tls else { return };
    match tls.cert.reload() {
        Ok(true) => tracing::info!(cert = %tls.cert.files().0.display(), "serving certificate reloaded"),
        Ok(false) if loud => tracing::info!("the TLS certificate files are unchanged"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "serving certificate not reloaded; keeping the previous one"),
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

/// One digest of the files' contents (a missing file counts as such: its appearing is a change).
fn digest(files: &[PathBuf]) -> [u8; 32] {
    let mut all = Vec::new();
    for path in files {
        all.extend_from_slice(path.as_os_str().as_encoded_bytes());
        match std::fs::read(path) {
            Ok(bytes) => {
                all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                all.extend_from_slice(&bytes);
            }
            Err(_) => all.extend_from_slice(b"\0missing\0"),
        }
    }
    crate::util::hash::sha256(&all)
}

/// The keys whose values differ between two readings: top-level ones, and the second level of
/// the sections (`session.secrets`, `routes`); only names, never values.
pub fn changed_keys(before: &FileConfig, after: &FileConfig) -> Vec<String> {
    use serde_yaml::Value;
    let as_map = |file: &FileConfig| match serde_yaml::to_value(file) {
        Ok(Value::Mapping(map)) => map,
        _ => serde_yaml::Mapping::new(),
    };
    let (before, after) = (as_map(before), as_map(after));
    let mut changed = Vec::new();
    for (key, new) in &after {
        let name = key.as_str().unwrap_or("?");
        match (before.get(key), new) {
            (Some(Value::Mapping(old)), Value::Mapping(new)) => {
                for (inner, value) in new {
                    if old.get(inner) != Some(value) {
                        changed.push(format!("{name}.{}", inner.as_str().unwrap_or("?")));
                    }
                }
            }
            (old, new) if old != Some(new) => changed.push(name.to_string()),
            _ => {}
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_sections_and_keys_never_values() {
        let before = FileConfig::default();
        let mut after = before.clone();
        after.session.secrets = vec!["c2VjcmV0LXRoYXQtbXVzdC1ub3QtYmUtbG9nZ2Vk".into()];
        after.upstream = Some("http://127.0.0.1:9".into());
        let changed = changed_keys(&before, &after);
        assert_eq!(changed, ["upstream", "session.secrets"], "{changed:?}");
        assert!(changed_keys(&after, &after).is_empty());
    }

    #[test]
    fn a_missing_file_and_a_changed_one_change_the_digest() {
        let dir = std::env::temp_dir().join(format!("trousseau-reload-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        let files = vec![path.clone()];
        let missing = digest(&files);
        std::fs::write(&path, "one").unwrap();
        let one = digest(&files);
        std::fs::write(&path, "two").unwrap();
        let two = digest(&files);
        assert!(missing != one && one != two && two == digest(&files));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
