//! [`App`]: everything a request needs, built once at start from validated settings — the relying
//! party, the sessions, the signer, the upstream, the policy, the refresher, the limits. The
//! request path that uses it is [`crate::pipeline`]; the listener that feeds it, [`crate::server`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::bearer::BearerAuth;
use crate::config::{RevocationKind, Settings, StoreKind};
use crate::identity::{AssertionSettings, Assertions, Signer};
use crate::limits::Limits;
use crate::live::OpenConnections;
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::policy::Policy;
use crate::proxy::{Upstream, UpstreamSettings};
use crate::session::cookies::CookieSettings;
use crate::session::redis::{Redis, RedisRevocations, RedisStore, RefreshCoordinator, KEY_PREFIX};
use crate::session::refresh::Refresher;
use crate::session::revocation::{RevocationSet, Revocations};
use crate::session::seal::{AppBinding, Sealer};
use crate::session::sessions::Sessions;
use crate::session::store::{MemoryStore, SessionStore};
use crate::tls::serving::{Door, ReloadingCert};

/// Idle connections each worker keeps to the app (counted in the open-file budget).
pub(crate) const POOL_MAX_IDLE_PER_WORKER: usize = 256;

/// Why the server could not start, or a reloaded configuration could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting that only fails once used (key file, CA file).
    #[error("{0}")]
    Setup(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A reloaded configuration changes settings only a restart can change (listeners, the
    /// store, what every session is sealed to).
    #[error("{} changed, which needs a restart", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
}

/// Everything a request needs, built at start and again, from the parts that outlive a
/// configuration, at each reload ([`App::succeed`]).
pub struct App {
    pub(crate) settings: Settings,
    pub(crate) oidc: Arc<Oidc>,
    /// The bytes of `oidc.ca_file` `oidc` was made with.
    oidc_ca: Option<Vec<u8>>,
    pub(crate) sessions: Sessions,
    pub(crate) assertions: Assertions,
    pub(crate) upstream: Upstream,
    /// What `upstream` was made of, to keep it across a reload that changes neither.
    upstream_made_of: UpstreamMadeOf,
    pub(crate) policy: Policy,
    pub(crate) refresher: Refresher,
    /// Shared by the replicas (`session.redis_url`): store, revocations, refresh coordination.
    pub(crate) redis: Option<Arc<Redis>>,
    /// The bytes of `session.redis_ca_file` Redis connects with.
    redis_ca: Option<Vec<u8>>,
    pub(crate) bearer: Option<BearerAuth>,
    pub(crate) metrics: Arc<Metrics>,
    /// Connection and request limits, shared by the workers and the metrics listener.
    pub(crate) limits: Arc<Limits>,
    /// Websockets and streams open for a session, ended with it.
    pub(crate) live: Arc<OpenConnections>,
    /// HTTPS on `listen` (`tls:`).
    pub(crate) tls: Option<ServingTls>,
    /// `Strict-Transport-Security` for every answer over HTTPS (`tls.hsts_max_age`, not zero).
    pub(crate) hsts: Option<http::HeaderValue>,
    /// The OTLP exporter of sampled requests' spans (`telemetry.otlp_endpoint`); kept across a
    /// reload that does not change the endpoint.
    pub(crate) exporter: Option<Arc<crate::trace::otlp::Exporter>>,
    /// What the exporters exported and dropped, across reloads.
    trace_export: Arc<crate::trace::otlp::ExportStats>,
}

/// The HTTPS side of `listen`: the certificate (re-read when its files change), the acceptor this
/// configuration serves with, and the listener's door it is put in by [`App::take_over`].
pub(crate) struct ServingTls {
    pub(crate) cert: Arc<ReloadingCert>,
    acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) door: Arc<Door>,
    /// The bytes of `tls.client_ca_file`: the clients this configuration accepts.
    client_ca: Option<Vec<u8>>,
    /// Other clients than the configuration before accepted (its connections are drained).
    other_clients: bool,
}

impl App {
    /// Builds the app from validated settings.
    pub fn new(settings: Settings) -> Result<Arc<App>, StartError> {
        App::build(settings, None).map(Arc::new)
    }

    /// The app for a reloaded configuration, built from the new `settings` and the parts of this
    /// one that outlive a configuration: the counters, the limits' counts, the open connections,
    /// the sessions stored in memory, the revocations, Redis, the refreshes in flight, what was
    /// learned from Trousseau, the signing key when the keys did not change (an ephemeral one
    /// included), the certificate. Nothing is in force until [`App::take_over`]. Refused when a
    /// setting changed that only a restart can change ([`needs_restart`]).
    pub fn succeed(&self, settings: Settings) -> Result<App, StartError> {
        let mut fixed = needs_restart(&self.settings, &settings);
        // Redis keeps its connections (and their TLS) across a reload: a new CA needs a restart.
        if self.redis.is_some() && file_bytes(settings.session.redis_ca_file.as_deref(), "session.redis_ca_file")? != self.redis_ca {
            fixed.push("session.redis_ca_file");
        }
        if !fixed.is_empty() {
            return Err(StartError::NeedsRestart(fixed));
        }
        App::build(settings, Some(self))
    }

    /// Puts the parts this app shares with its predecessor in step with its configuration: the
    /// limits and the TLS acceptor, for the connections accepted from now on. Called once it
    /// is the app new requests get.
    pub(crate) fn take_over(&self) {
        self.limits.replace_settings(self.settings.limits.clone());
        if let Some(tls) = &self.tls {
            tls.door.replace(tls.acceptor.clone(), tls.other_clients);
        }
    }

    fn build(settings: Settings, old: Option<&App>) -> Result<App, StartError> {
        let (oidc, oidc_ca) = relying_party(&settings, old)?;
        // Everything sealed is bound to this application: another proxy given the same secret
        // cannot open (nor be handed) our cookies, handles, login states or Redis records.
        let app_binding = AppBinding {
            issuer: &settings.oidc.issuer,
            client_id: &settings.oidc.client_id,
            public_url: &settings.public_origin,
        };
        let sealer = Arc::new(
            Sealer::new(&settings.session.secrets, app_binding).map_err(|e| StartError::Setup(format!("session.secrets: {e}")))?,
        );
        let app_tag = app_binding.tag();
        let (upstream, upstream_made_of) = upstream(&settings, old)?;
        let (redis, redis_ca) = match old {
            Some(old) => (old.redis.clone(), old.redis_ca.clone()),
            None => {
                let ca = file_bytes(settings.session.redis_ca_file.as_deref(), "session.redis_ca_file")?;
                (redis(&settings, ca.clone())?, ca)
            }
        };
        let live = match old {
            Some(old) => Arc::clone(&old.live),
            None => Arc::new(OpenConnections::new(settings.session.end_open_connections, redis.clone(), format!("{KEY_PREFIX}ended:{app_tag}"))),
        };
        let hsts = settings
            .tls
            .as_ref()
            .filter(|t| !t.hsts_max_age.is_zero())
            .and_then(|t| http::HeaderValue::from_str(&format!("max-age={}", t.hsts_max_age.as_secs())).ok());
        let trace_export = old.map_or_else(Default::default, |old| Arc::clone(&old.trace_export));
        let exporter = match &settings.telemetry.otlp_endpoint {
            None => None,
            Some(endpoint) => match old.and_then(|old| old.exporter.clone()).filter(|e| e.exports_to(endpoint)) {
                Some(kept) => Some(kept),
                None => Some(
                    crate::trace::otlp::Exporter::start(endpoint, Arc::clone(&trace_export))
                        .map_err(|m| StartError::Setup(format!("telemetry.otlp_endpoint: {m}")))?,
                ),
            },
        };
        Ok(App {
            exporter,
            trace_export,
            tls: tls(&settings, old.and_then(|old| old.tls.as_ref()))?,
            hsts,
            limits: match old {
                Some(old) => Arc::clone(&old.limits),
                None => Arc::new(Limits::new(settings.limits.clone())),
            },
            live,
            sessions: sessions(&settings, old, &sealer, redis.as_ref(), app_tag)?,
            refresher: refresher(&settings, old, &oidc, redis.as_ref(), &sealer),
            bearer: bearer(&settings, old, &oidc),
            assertions: assertions(&settings, old)?,
            policy: Policy::new(&settings.routes, &settings.organization),
            redis,
            redis_ca,
            settings,
            oidc,
            oidc_ca,
            upstream,
            upstream_made_of,
            metrics: old.map_or_else(|| Arc::new(Metrics::new()), |old| Arc::clone(&old.metrics)),
        })
    }

    /// The relying party (readiness, discovery).
    pub fn oidc(&self) -> &Arc<Oidc> {
        &self.oidc
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The request path's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The connection and request limits in force, with their counters.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// The websockets and streams open for a session.
    pub fn open_connections(&self) -> &Arc<OpenConnections> {
        &self.live
    }

    /// Redis, when the replicas share state through it.
    pub fn redis(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref()
    }

    /// `/metrics` as served on `metrics_listen` (Prometheus text format 0.0.4).
    pub fn metrics_text(&self) -> String {
        self.metrics.render(&crate::metrics::Sources {
            refresh: self.refresher.stats(),
            idp_latency: self.oidc.call_latency(),
            revocations_held: self.sessions.revocations().len(),
            revocations_bytes: self.sessions.revocations().bytes(),
            revocations_evicted: self.sessions.revocations().evicted(),
            redis: self.redis.as_deref(),
            limits: &self.limits,
            open_connections: &self.live,
            cookie_bytes: self.sessions.cookie_bytes(),
            trace_export: &self.trace_export,
        })
    }
}

/// The app new requests get. A configuration reload ([`crate::reload`]) replaces it whole; a
/// request keeps the app it began with to its end, so nothing in flight sees half of each.
pub struct Current(arc_swap::ArcSwap<App>);

impl Current {
    /// `app`, in force.
    pub fn new(app: Arc<App>) -> Current {
        Current(arc_swap::ArcSwap::new(app))
    }

    /// The app in force now.
    pub fn get(&self) -> Arc<App> {
        self.0.load_full()
    }

    /// Puts `app` in force: its limits and TLS acceptor for the connections from now on
    /// ([`App::take_over`]), then itself for the requests.
    pub fn put(&self, app: Arc<App>) {
        app.take_over();
        self.0.store(app);
    }
}

/// Redis, when one is configured (`session.redis_url`, `redis_sentinel` or `redis_cluster`):
/// several replicas share server-side sessions, revocations, and one refresh per token through it.
fn redis(settings: &Settings, ca: Option<Vec<u8>>) -> Result<Option<Arc<Redis>>, StartError> {
    let Some(target) = &settings.session.redis else { return Ok(None) };
    Ok(Some(Arc::new(Redis::connect(target, ca).map_err(|e| StartError::Setup(format!("session Redis: {e}")))?)))
}

/// Where sessions live (`None`: in their cookie) and where revocations are kept, as
/// `session.store` and `session.revocations` say.
fn store_and_revocations(
    settings: &Settings,
    redis: Option<&Arc<Redis>>,
    sealer: &Arc<Sealer>,
    app_tag: String,
) -> Result<(Option<Arc<dyn SessionStore>>, RevocationSet), StartError> {
    let session = &settings.session;
    let revocations = match (session.revocations, redis) {
        (RevocationKind::Redis, Some(redis)) => RevocationSet::Redis(RedisRevocations::new(
            redis.clone(),
            session.max_lifetime,
            session.revocation_staleness,
            app_tag.clone(),
        )),
        _ => RevocationSet::Memory(Revocations::new(session.max_lifetime)),
    };
    let store: Option<Arc<dyn SessionStore>> = match (session.store, redis) {
        (StoreKind::Cookie, _) => None,
        (StoreKind::Memory, _) => Some(Arc::new(MemoryStore::new(session.memory_store_max_bytes, session.max_sessions_per_user as usize))),
        (StoreKind::Redis, Some(redis)) => Some(Arc::new(RedisStore::new(
            redis.clone(),
            sealer.clone(),
            app_tag,
            session.max_sessions_per_user,
            session.max_lifetime,
        ))),
        (StoreKind::Redis, None) => return Err(StartError::Setup("session.store: redis needs session.redis_url".into())),
    };
    Ok((store, revocations))
}

/// The assertion signer: the configured keys, or an ephemeral one (with a warning).
fn signer(settings: &Settings) -> Result<Signer, StartError> {
    if settings.identity.signing_keys_pem.is_empty() {
        tracing::warn!(
            "identity.signing_key_file is not set: signing assertions with an ephemeral key; \
             apps must fetch /.trousseau/jwks.json and replicas will not share keys"
        );
        return Ok(Signer::generate());
    }
    Signer::from_pem(&settings.identity.signing_keys_pem).map_err(|e| StartError::Setup(format!("identity.signing_key_file: {e}")))
}

/// The relying party and the bytes of its CA file. After a reload that changed nothing about
/// Trousseau, the one before — its connections and its state; otherwise a new one that takes over
/// what the old one learned ([`Oidc::succeed`]).
fn relying_party(settings: &Settings, old: Option<&App>) -> Result<(Arc<Oidc>, Option<Vec<u8>>), StartError> {
    let ca = file_bytes(settings.oidc.ca_file.as_deref(), "oidc.ca_file")?;
    let oidc = match old {
        Some(old) if *old.oidc.settings() == settings.oidc && old.oidc_ca == ca => Arc::clone(&old.oidc),
        Some(old) => Arc::new(old.oidc.succeed(settings.oidc.clone()).map_err(StartError::Setup)?),
        None => Arc::new(Oidc::new(settings.oidc.clone()).map_err(|e| StartError::Setup(format!("oidc.ca_file: {e}")))?),
    };
    Ok((oidc, ca))
}

/// The signed assertion for the app. The signer is the one before when the keys did not change —
/// an ephemeral key included, or every app's copy of our JWKS would break.
fn assertions(settings: &Settings, old: Option<&App>) -> Result<Assertions, StartError> {
    let signer = match old {
        Some(old) if old.settings.identity.signing_keys_pem == settings.identity.signing_keys_pem => Arc::clone(old.assertions.signer()),
        _ => Arc::new(signer(settings)?),
    };
    Ok(Assertions::new(
        signer,
        AssertionSettings {
            issuer: settings.public_origin.clone(),
            audience: settings.identity.audience.clone(),
            ttl: settings.identity.assertion_ttl,
        },
    ))
}

/// The refresher: sharing its predecessor's refreshes after a reload, coordinated with the other
/// replicas through Redis when there is one.
fn refresher(settings: &Settings, old: Option<&App>, oidc: &Arc<Oidc>, redis: Option<&Arc<Redis>>, sealer: &Arc<Sealer>) -> Refresher {
    let (skew, grace) = (settings.session.refresh_skew, settings.session.refresh_grace);
    let refresher = match old {
        Some(old) => old.refresher.succeed(oidc.clone(), skew, grace),
        None => Refresher::new(oidc.clone(), skew, grace),
    };
    let Some(redis) = redis else { return refresher };
    if old.is_none() {
        tracing::info!(redis = %redis.display(), store = ?settings.session.store, revocations = ?settings.session.revocations, "sharing state with the other replicas through Redis");
    }
    // The lock outlives the slowest refresh (token call, plus a JWKS refetch).
    let lock_ttl = settings.oidc.timeout * 2 + Duration::from_secs(5);
    refresher.with_coordinator(Arc::new(RefreshCoordinator::new(redis.clone(), sealer.clone(), lock_ttl)))
}

/// The sessions: sealed by `sealer`, in the store and with the revocations of `session:` — those
/// before, after a reload ([`kept_store`]).
fn sessions(settings: &Settings, old: Option<&App>, sealer: &Arc<Sealer>, redis: Option<&Arc<Redis>>, app_tag: String) -> Result<Sessions, StartError> {
    let (store, revocations) = match old {
        Some(old) => (kept_store(settings, old, redis, sealer, app_tag), old.sessions.revocations().clone()),
        None => store_and_revocations(settings, redis, sealer, app_tag)?,
    };
    let cookie = CookieSettings::new(&settings.session.cookie_name, settings.secure_cookies);
    let name = &settings.session.cookie_name;
    let sessions = Sessions::new(sealer.clone(), cookie, name, store, revocations, settings.session.max_lifetime, redis.cloned())
        .passing_access_tokens(settings.identity.pass_access_token);
    Ok(match old {
        Some(old) => sessions.carrying(&old.sessions),
        None => sessions,
    })
}

/// API clients' bearer tokens (`api.bearer: userinfo`), with the checks already made kept across
/// a reload.
fn bearer(settings: &Settings, old: Option<&App>, oidc: &Arc<Oidc>) -> Option<BearerAuth> {
    match (settings.bearer_userinfo, old.map(|old| old.bearer.as_ref())) {
        (false, _) => None,
        (true, Some(Some(before))) => Some(before.succeed(oidc.clone(), settings.bearer_limits)),
        (true, Some(None)) => Some(BearerAuth::new(oidc.clone(), settings.bearer_limits)),
        (true, None) => {
            tracing::info!(
                "api.bearer: userinfo: bearer tokens must be issued to this client (checked by token introspection); \
                 if Trousseau does not advertise introspection, a warning follows once its configuration is loaded and \
                 userinfo alone decides, which also accepts tokens issued to other applications of the same Trousseau"
            );
            Some(BearerAuth::new(oidc.clone(), settings.bearer_limits))
        }
    }
}

/// The bytes of an optional file a part is made from (a CA file), to notice when a reload changes it.
fn file_bytes(path: Option<&std::path::Path>, key: &str) -> Result<Option<Vec<u8>>, StartError> {
    path.map(|path| std::fs::read(path).map_err(|e| StartError::Setup(format!("{key}: {}: {e}", path.display())))).transpose()
}

/// What the upstream was made of: its settings and the bytes of its CA file, if any.
pub(crate) type UpstreamMadeOf = (UpstreamSettings, Option<Vec<u8>>);

/// The upstream (`upstream`, `proxy:`). After a reload that changed neither its settings nor its
/// CA file, the one before — its pools, and their open connections to the app, with it: a reload
/// costs the app no new connections. Otherwise new pools (the old ones close with the last
/// request that uses them).
fn upstream(settings: &Settings, old: Option<&App>) -> Result<(Upstream, UpstreamMadeOf), StartError> {
    let wanted = UpstreamSettings {
        url: settings.upstream.clone(),
        preserve_host: settings.proxy.preserve_host,
        ca_file: settings.proxy.ca_file.as_ref().map(Into::into),
        connect_timeout: settings.proxy.connect_timeout.0,
        response_timeout: settings.proxy.response_timeout.0,
        pool_idle_timeout: Duration::from_secs(90),
        pool_max_idle_per_host: POOL_MAX_IDLE_PER_WORKER,
        request_body_timeout: settings.limits.request_body_timeout,
        request_body_min_rate: settings.limits.request_body_min_rate,
    };
    let ca = file_bytes(wanted.ca_file.as_deref(), "proxy.ca_file")?;
    let made_of = (wanted, ca);
    if let Some(old) = old.filter(|old| old.upstream_made_of == made_of) {
        return Ok((old.upstream.clone(), made_of));
    }
    let upstream = Upstream::new(made_of.0.clone()).map_err(|e| StartError::Setup(format!("upstream: {e}")))?;
    Ok((upstream, made_of))
}

/// The store across a reload: the memory store is kept (its sessions with it); the Redis store is
/// made again with the new sealer (its records open with any of the secrets).
fn kept_store(settings: &Settings, old: &App, redis: Option<&Arc<Redis>>, sealer: &Arc<Sealer>, app_tag: String) -> Option<Arc<dyn SessionStore>> {
    match (settings.session.store, redis) {
        (StoreKind::Redis, Some(redis)) => Some(Arc::new(RedisStore::new(
            redis.clone(),
            sealer.clone(),
            app_tag,
            settings.session.max_sessions_per_user,
            settings.session.max_lifetime,
        ))),
        _ => old.sessions.store().cloned(),
    }
}

/// The settings a reload cannot change, by key, that differ between `old` and `new`: the
/// listeners (bound once), HTTPS on or off, what every cookie and record is sealed to
/// (`public_url`, `oidc.issuer`, `oidc.client_id`), the store and revocations (their contents
/// live in them; `session.max_lifetime` is how long a revocation is remembered), the open
/// connections' registry, and the drain (the workers' own).
pub fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let (o, n) = (&old.session, &new.session);
    let memory = n.store == StoreKind::Memory;
    [
        ("listen", old.listen != new.listen),
        ("metrics_listen", old.metrics_listen != new.metrics_listen),
        ("http_redirect_listen", old.http_redirect_listen != new.http_redirect_listen),
        ("grpc_authz_listen", old.grpc_authz_listen != new.grpc_authz_listen),
        ("tls", old.tls.is_some() != new.tls.is_some()),
        ("public_url", old.public_url != new.public_url),
        ("oidc.issuer", old.oidc.issuer != new.oidc.issuer),
        ("oidc.client_id", old.oidc.client_id != new.oidc.client_id),
        ("session.store", o.store != n.store),
        ("session.revocations", o.revocations != n.revocations),
        ("session.redis_url, redis_sentinel or redis_cluster", o.redis != n.redis),
        ("session.redis_ca_file", o.redis_ca_file != n.redis_ca_file),
        ("session.max_lifetime", o.max_lifetime != n.max_lifetime),
        ("session.revocation_staleness", o.revocation_staleness != n.revocation_staleness),
        ("session.end_open_connections", o.end_open_connections != n.end_open_connections),
        ("session.memory_store_max_mib", memory && o.memory_store_max_bytes != n.memory_store_max_bytes),
        ("session.max_sessions_per_user", memory && o.max_sessions_per_user != n.max_sessions_per_user),
        ("proxy.drain_timeout", old.proxy.drain_timeout.0 != new.proxy.drain_timeout.0),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// The HTTPS listener's certificate and acceptor (`tls:`), when configured. After a reload the
/// certificate is the one before (re-read now) when its files are the same, and the door is the
/// listener's.
fn tls(settings: &Settings, old: Option<&ServingTls>) -> Result<Option<ServingTls>, StartError> {
    let Some(tls) = &settings.tls else { return Ok(None) };
    let same_files = |old: &&ServingTls| old.cert.files() == (tls.cert_file.as_path(), tls.key_file.as_path());
    let cert = match old.filter(same_files) {
        Some(old) => {
            // Caught mid-renewal perhaps: the listener keeps its certificate and reads it again on
            // its own; the rest of the configuration is not refused for it.
            if let Err(e) = old.cert.reload() {
                tracing::warn!(error = %e, "serving certificate not reloaded; keeping the previous one");
            }
            Arc::clone(&old.cert)
        }
        None => Arc::new(ReloadingCert::load(&tls.cert_file, &tls.key_file).map_err(|e| StartError::Setup(format!("tls.cert_file: {e}")))?),
    };
    let client_ca = file_bytes(tls.client_ca_file.as_deref(), "tls.client_ca_file")?;
    let client_roots = match &tls.client_ca_file {
        Some(path) => Some(crate::tls::client_roots(path).map_err(|e| StartError::Setup(format!("tls.client_ca_file: {e}")))?),
        None => None,
    };
    let other_clients = old.is_some_and(|old| old.client_ca != client_ca);
    let config = cert.server_config(client_roots).map_err(|e| StartError::Setup(format!("tls: {e}")))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let door = match old {
        Some(old) => Arc::clone(&old.door),
        None => Arc::new(Door::new(acceptor.clone())),
    };
    Ok(Some(ServingTls { cert, acceptor, door, client_ca, other_clients }))
}
