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
use crate::tls::serving::ReloadingCert;

/// Idle connections each worker keeps to the app (counted in the open-file budget).
pub(crate) const POOL_MAX_IDLE_PER_WORKER: usize = 256;

/// Why the server could not start.
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
}

/// Everything a request needs, built once at start.
pub struct App {
    pub(crate) settings: Settings,
    pub(crate) oidc: Arc<Oidc>,
    pub(crate) sessions: Sessions,
    pub(crate) assertions: Assertions,
    pub(crate) upstream: Upstream,
    pub(crate) policy: Policy,
    pub(crate) refresher: Refresher,
    /// Shared by the replicas (`session.redis_url`): store, revocations, refresh coordination.
    pub(crate) redis: Option<Arc<Redis>>,
    pub(crate) bearer: Option<BearerAuth>,
    pub(crate) metrics: Metrics,
    /// Connection and request limits, shared by the workers and the metrics listener.
    pub(crate) limits: Arc<Limits>,
    /// Websockets and streams open for a session, ended with it.
    pub(crate) live: Arc<OpenConnections>,
    /// HTTPS on `listen` (`tls:`): the certificate, re-read when its files change, and the
    /// acceptor every worker serves with.
    pub(crate) tls: Option<(Arc<ReloadingCert>, tokio_rustls::TlsAcceptor)>,
    /// `Strict-Transport-Security` for every answer over HTTPS (`tls.hsts_max_age`, not zero).
    pub(crate) hsts: Option<http::HeaderValue>,
}

impl App {
    /// Builds the app from validated settings.
    pub fn new(settings: Settings) -> Result<Arc<App>, StartError> {
        let oidc = Arc::new(Oidc::new(settings.oidc.clone()).map_err(|e| StartError::Setup(format!("oidc.ca_file: {e}")))?);
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
        let assertions = Assertions::new(
            Arc::new(signer(&settings)?),
            AssertionSettings {
                issuer: settings.public_origin.clone(),
                audience: settings.identity.audience.clone(),
                ttl: settings.identity.assertion_ttl,
            },
        );
        let upstream = Upstream::new(UpstreamSettings {
            url: settings.upstream.clone(),
            preserve_host: settings.proxy.preserve_host,
            ca_file: settings.proxy.ca_file.as_ref().map(Into::into),
            connect_timeout: settings.proxy.connect_timeout.0,
            response_timeout: settings.proxy.response_timeout.0,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: POOL_MAX_IDLE_PER_WORKER,
            request_body_timeout: settings.limits.request_body_timeout,
            request_body_min_rate: settings.limits.request_body_min_rate,
        })
        .map_err(|e| StartError::Setup(format!("upstream: {e}")))?;
        let policy = Policy::new(&settings.routes, &settings.organization);
        let redis = redis(&settings)?;
        let mut refresher = Refresher::new(oidc.clone(), settings.session.refresh_skew, settings.session.refresh_grace);
        if let Some(redis) = &redis {
            // The lock outlives the slowest refresh (token call, plus a JWKS refetch).
            let lock_ttl = settings.oidc.timeout * 2 + Duration::from_secs(5);
            refresher = refresher.with_coordinator(Arc::new(RefreshCoordinator::new(redis.clone(), sealer.clone(), lock_ttl)));
            tracing::info!(redis = %redis.display(), store = ?settings.session.store, revocations = ?settings.session.revocations, "sharing state with the other replicas through Redis");
        }
        let (store, revocations) = store_and_revocations(&settings, redis.as_ref(), &sealer, app_tag.clone())?;
        let cookie = CookieSettings::new(&settings.session.cookie_name, settings.secure_cookies);
        let live = Arc::new(OpenConnections::new(settings.session.end_open_connections, redis.clone(), format!("{KEY_PREFIX}ended:{app_tag}")));
        let sessions = Sessions::new(
            sealer,
            cookie,
            &settings.session.cookie_name,
            store,
            revocations,
            settings.session.max_lifetime,
            redis.clone(),
        )
        .passing_access_tokens(settings.identity.pass_access_token);
        let bearer = settings.bearer_userinfo.then(|| BearerAuth::new(oidc.clone(), settings.bearer_limits));
        if bearer.is_some() {
            tracing::info!(
                "api.bearer: userinfo: bearer tokens must be issued to this client (checked by token introspection); \
                 if Trousseau does not advertise introspection, a warning follows once its configuration is loaded and \
                 userinfo alone decides, which also accepts tokens issued to other applications of the same Trousseau"
            );
        }
        let tls = tls(&settings)?;
        let hsts = settings
            .tls
            .as_ref()
            .filter(|t| !t.hsts_max_age.is_zero())
            .and_then(|t| http::HeaderValue::from_str(&format!("max-age={}", t.hsts_max_age.as_secs())).ok());
        Ok(Arc::new(App {
            tls,
            hsts,
            limits: Arc::new(Limits::new(settings.limits.clone())),
            live,
            sessions,
            redis,
            bearer,
            settings,
            oidc,
            assertions,
            upstream,
            policy,
            refresher,
            metrics: Metrics::new(),
        }))
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
            redis: self.redis.as_deref(),
            limits: &self.limits,
            open_connections: &self.live,
            cookie_bytes: self.sessions.cookie_bytes(),
        })
    }
}

/// Redis, when `session.redis_url` is set: several replicas share server-side sessions,
/// revocations, and one refresh per token through it.
fn redis(settings: &Settings) -> Result<Option<Arc<Redis>>, StartError> {
    let Some(url) = &settings.session.redis_url else { return Ok(None) };
    let ca = match &settings.session.redis_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| StartError::Setup(format!("session.redis_ca_file: {}: {e}", path.display())))?),
        None => None,
    };
    Ok(Some(Arc::new(Redis::connect(url, ca).map_err(|e| StartError::Setup(format!("session.redis_url: {e}")))?)))
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

/// The HTTPS listener's certificate and acceptor (`tls:`), when configured.
fn tls(settings: &Settings) -> Result<Option<(Arc<ReloadingCert>, tokio_rustls::TlsAcceptor)>, StartError> {
    let Some(tls) = &settings.tls else { return Ok(None) };
    let cert = Arc::new(ReloadingCert::load(&tls.cert_file, &tls.key_file).map_err(|e| StartError::Setup(format!("tls.cert_file: {e}")))?);
    let client_roots = match &tls.client_ca_file {
        Some(path) => Some(crate::tls::client_roots(path).map_err(|e| StartError::Setup(format!("tls.client_ca_file: {e}")))?),
        None => None,
    };
    let config = cert.server_config(client_roots).map_err(|e| StartError::Setup(format!("tls: {e}")))?;
    Ok(Some((cert, tokio_rustls::TlsAcceptor::from(Arc::new(config)))))
}
