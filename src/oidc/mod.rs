//! Trousseau, the OpenID provider: discovery, the authorization-code flow with PKCE, token
//! requests and ID-token validation, built on the `openidconnect` crate.
//!
//! What the crate does not do we do here: keep our own JWKS and re-fetch it (rate-limited) when an
//! ID token names an unknown `kid`; accept refreshed ID tokens without a `nonce` while requiring
//! the same `sub`; read `end_session_endpoint`, back-channel support and `introspection_endpoint`
//! from discovery; ask userinfo and introspection about opaque access tokens; talk to the IdP
//! through a hyper client that never follows redirects.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::util::clock::now_secs;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim, CoreGrantType,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreSubjectIdentifierType,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthType, AuthorizationCode, Client, ClientId,
    ClientSecret, ClaimsVerificationError, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IdTokenFields, IdTokenVerifier,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, SignatureVerificationError,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::claims::{Identity, Organization};
use crate::util::error_chain;

mod access_tokens;
mod logout;
mod tokens;

pub use access_tokens::Introspection;
pub use logout::{LogoutRequest, LogoutTokenError, RefusalLog};
use logout::LOGOUT_REFUSAL_LOG_INTERVAL;
use tokens::NoNonceRequired;

/// Validated `oidc:`.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// Issuer exactly as Trousseau writes it (trailing slash kept).
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Scopes, `openid` first.
    pub scopes: Vec<String>,
    /// `public_url + "/.trousseau/callback"`.
    pub redirect_uri: String,
    /// Where to land after Trousseau's sign-out.
    pub post_logout_redirect_uri: String,
    /// Extra CA for the IdP.
    pub ca_file: Option<std::path::PathBuf>,
    /// Timeout of one IdP call.
    pub timeout: Duration,
    /// Least time between two forced JWKS fetches (unknown `kid`).
    pub jwks_refetch_interval: Duration,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// Trousseau's claims that the standard claim set does not have.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrousseauClaims {
    /// Tier 2: ecosystem-wide user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trousseau_user_id: Option<String>,
    /// Tier 3: organization memberships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<Organization>>,
    /// Trousseau's session id, matched by back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl AdditionalClaims for TrousseauClaims {}

/// Discovery fields the core metadata type lacks (logout, token introspection).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExtraMetadata {
    /// RP-initiated logout endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<String>,
    /// Whether the IdP sends back-channel logout tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_logout_supported: Option<bool>,
    /// Token introspection endpoint (RFC 7662, advertised as in RFC 8414).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

/// Trousseau's discovery document.
pub type TrousseauMetadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type TrousseauIdTokenFields = IdTokenFields<
    TrousseauClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// A token endpoint answer carrying a Trousseau ID token.
pub type TrousseauTokenResponse = StandardTokenResponse<TrousseauIdTokenFields, CoreTokenType>;

/// The openidconnect client with Trousseau's claims; defined once because the typestate is long.
type TrousseauClient = Client<
    TrousseauClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TrousseauTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Signature algorithms we accept on ID tokens: asymmetric only (never `none`, never HMAC).
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 6] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];

/// How far in the future an `iat` may be (clock skew).
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Largest IdP response we read.
const MAX_IDP_RESPONSE: usize = 1024 * 1024;

/// What can go wrong talking to Trousseau.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Discovery has not succeeded yet.
    #[error("the identity provider's configuration is not loaded yet")]
    NotReady,
    /// Trousseau could not be reached or answered with a server error.
    #[error("the identity provider is unreachable: {0}")]
    Unreachable(String),
    /// Trousseau refused the request (`invalid_grant`, `invalid_client`, …).
    #[error("the identity provider refused the request: {error}")]
    Rejected {
        /// OAuth error code.
        error: String,
        /// Its human description, if any.
        description: Option<String>,
    },
    /// The ID token failed validation.
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    /// Anything else that does not follow the protocol.
    #[error("unexpected answer from the identity provider: {0}")]
    Protocol(String),
}

impl OidcError {
    /// True when the refresh token is dead for good (`invalid_grant`): the session must end.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, OidcError::Rejected { error, .. } if error == "invalid_grant")
    }

    /// True when an ID token was refused for its times (issued in the future, or already
    /// expired): most often this machine's clock and Trousseau's disagree.
    pub fn is_clock_skew(&self) -> bool {
        matches!(self, OidcError::InvalidIdToken(text) if text.contains("issued in the future") || text.contains("Expired"))
    }
}

/// Error of one HTTP call to the IdP.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdpHttpError(String);

type IdpFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, IdpHttpError>> + Send + 'static>>;

type IdpHttp = HyperClient<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

async fn idp_call(http: IdpHttp, timeout: Duration, request: HttpRequest) -> Result<HttpResponse, IdpHttpError> {
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let response = tokio::time::timeout(timeout, http.request(request))
        .await
        .map_err(|_| IdpHttpError("timed out".into()))?
        .map_err(|e| IdpHttpError(format!("connection failed: {}", error_chain(&e))))?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(timeout, Limited::new(body, MAX_IDP_RESPONSE).collect())
        .await
        .map_err(|_| IdpHttpError("timed out reading the answer".into()))?
        .map_err(|e| IdpHttpError(format!("reading the answer failed: {e}")))?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body.to_vec()))
}

/// The state of one sign-in attempt, sealed into its own short-lived cookie.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// `state` sent to Trousseau.
    #[serde(rename = "s")]
    pub state: String,
    /// `nonce` sent to Trousseau.
    #[serde(rename = "n")]
    pub nonce: String,
    /// PKCE code verifier.
    #[serde(rename = "v")]
    pub pkce_verifier: String,
    /// Where to return after sign-in (a same-origin relative path).
    #[serde(rename = "r")]
    pub return_to: String,
    /// When the attempt started (unix seconds).
    #[serde(rename = "t")]
    pub started_at: u64,
}

/// A validated token response: what a session is made of.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// The user's claims from the validated ID token.
    pub identity: Identity,
    /// Trousseau's session id.
    pub sid: Option<String>,
    /// Access-token expiry (unix seconds).
    pub expires_at: u64,
    /// The opaque access token.
    pub access_token: String,
    /// The refresh token, when Trousseau issued one.
    pub refresh_token: Option<String>,
    /// The raw ID token.
    pub id_token: String,
}

/// The answer to a refresh: new tokens, and the new identity when Trousseau sent an ID token.
#[derive(Clone, Debug)]
pub struct Refreshed {
    /// New access-token expiry (unix seconds).
    pub expires_at: u64,
    /// The new access token.
    pub access_token: String,
    /// The new (rotated) refresh token, if Trousseau sent one.
    pub refresh_token: Option<String>,
    /// Identity, `sid` and raw ID token from the validated new ID token.
    pub id: Option<(Identity, Option<String>, String)>,
}

/// What discovery loaded: the metadata, a client built from it, and the current JWKS.
struct Provider {
    metadata: TrousseauMetadata,
    client: TrousseauClient,
    jwks: RwLock<CoreJsonWebKeySet>,
    /// The last JWKS fetch attempt. Held across a forced re-fetch, so concurrent callers wait for
    /// that one fetch and share its outcome instead of each starting their own.
    last_fetch: tokio::sync::Mutex<JwksFetch>,
}

/// One JWKS fetch attempt: when it started and, if it failed, why. Forced re-fetches (an unknown
/// `kid`) are limited on this attempt, failed ones included, so a token naming a made-up `kid`
/// cannot make us call Trousseau more than once per `oidc.jwks_refetch_interval` — least of all
/// while Trousseau is down, when every attempt fails and nothing else would slow them.
struct JwksFetch {
    started: Instant,
    failure: Option<String>,
}

/// The Trousseau relying party. Cheap to share (`Arc`).
pub struct Oidc {
    settings: OidcSettings,
    http: IdpHttp,
    provider: RwLock<Option<Arc<Provider>>>,
    ready: AtomicBool,
    /// Duration of every HTTP call to Trousseau, for `/metrics`.
    call_latency: Arc<crate::util::histogram::Histogram>,
    /// Refused back-channel logouts, logged without flooding.
    logout_refusals: RefusalLog,
}


impl Oidc {
    /// A relying party for these settings. Nothing is fetched until [`Oidc::discover`].
    pub fn new(settings: OidcSettings) -> Result<Oidc, crate::tls::TlsError> {
        let tls = crate::tls::client_config(settings.ca_file.as_deref())?;
        let connector = crate::tls::https_connector(tls, settings.timeout);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let call_latency = Arc::new(crate::util::histogram::Histogram::new(crate::util::histogram::IDP_BUCKETS));
        Ok(Oidc {
            settings,
            http,
            provider: RwLock::new(None),
            ready: AtomicBool::new(false),
            call_latency,
            logout_refusals: RefusalLog::new(LOGOUT_REFUSAL_LOG_INTERVAL),
        })
    }

    /// A relying party for `settings` that takes over what this one has learned — Trousseau's
    /// configuration and its keys as last fetched — and its call-latency histogram: a
    /// configuration reload (a new client secret, scopes, timeout or CA file). The issuer is the
    /// same (a reload that changes it is refused). Not ready, if this one is not: the caller runs
    /// [`Oidc::discover_until_ready`] for it.
    pub fn succeed(&self, settings: OidcSettings) -> Result<Oidc, String> {
        let mut next = Oidc::new(settings).map_err(|e| format!("oidc.ca_file: {e}"))?;
        next.call_latency = Arc::clone(&self.call_latency);
        if let Ok(provider) = self.provider() {
            let fetched_at = provider.last_fetch.try_lock().map_or_else(|_| Instant::now(), |fetch| fetch.started);
            next.install(provider.metadata.clone(), fetched_at).map_err(|e| e.to_string())?;
            let keys = provider.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
            if let Ok(installed) = next.provider() {
                *installed.jwks.write().unwrap_or_else(|p| p.into_inner()) = keys;
            }
        }
        Ok(next)
    }

    /// The settings this relying party uses.
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Where refused back-channel logouts are logged (rate-limited).
    pub fn logout_refusals(&self) -> &RefusalLog {
        &self.logout_refusals
    }

    /// How long calls to Trousseau take (discovery, JWKS, token endpoint), failed ones included.
    pub fn call_latency(&self) -> &crate::util::histogram::Histogram {
        &self.call_latency
    }

    /// True once discovery and the JWKS are loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The HTTP client handed to openidconnect: one exchange per call, no redirects followed,
    /// bounded time and size. It owns clones of the pooled client so its futures are `'static`.
    fn http_client(&self) -> impl Fn(HttpRequest) -> IdpFuture + Send + Sync + 'static {
        let http = self.http.clone();
        let timeout = self.settings.timeout;
        let latency = self.call_latency.clone();
        move |mut request: HttpRequest| {
            // Part of the request being served, if any: a child span of its trace.
            request.headers_mut().insert(crate::trace::TRACEPARENT, crate::trace::outgoing());
            let (http, latency) = (http.clone(), latency.clone());
            Box::pin(async move {
                let started = Instant::now();
                let result = idp_call(http, timeout, request).await;
                latency.observe(started.elapsed());
                result
            })
        }
    }

    /// Trousseau's clock, from the `Date` of its discovery document's answer: for
    /// `check-config --probe`, which compares it with ours (ID tokens carry times).
    pub async fn server_time(&self) -> Result<std::time::SystemTime, OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let request = http::Request::get(url.as_str())
            .body(Vec::new())
            .map_err(|_| OidcError::Protocol("the discovery URL is not usable".into()))?;
        let response = (self.http_client())(request).await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OidcError::Protocol("the answer has no Date header".into()))?;
        let parsed = chrono::DateTime::parse_from_rfc2822(date).map_err(|_| OidcError::Protocol(format!("unreadable Date header `{date}`")))?;
        Ok(std::time::SystemTime::from(parsed))
    }

    /// Loads the discovery document and JWKS. The issuer must match exactly (trailing slash
    /// included), as Trousseau writes it.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcError::Protocol(format!("issuer: {e}")))?;
        let http = self.http_client();
        let metadata = TrousseauMetadata::discover_async(issuer, &http).await.map_err(|e| {
            let text = error_chain(&e);
            match e {
                openidconnect::DiscoveryError::Request(_) => OidcError::Unreachable(text),
                openidconnect::DiscoveryError::Response(status, ..) if status.is_server_error() => {
                    OidcError::Unreachable(text)
                }
                _ => OidcError::Protocol(text),
            }
        })?;
        self.install(metadata, Instant::now())
    }

    /// Builds the client from a discovery document and makes it current. `jwks_fetched_at` is
    /// when its key set was fetched (forced re-fetches are rate-limited from there).
    fn install(&self, metadata: TrousseauMetadata, jwks_fetched_at: Instant) -> Result<(), OidcError> {
        let redirect = RedirectUrl::new(self.settings.redirect_uri.clone())
            .map_err(|e| OidcError::Protocol(format!("redirect_uri: {e}")))?;
        // client_secret_post, as Trousseau wants; basic only when discovery says post is not supported.
        let post_supported = metadata
            .token_endpoint_auth_methods_supported()
            .is_none_or(|methods| methods.contains(&CoreClientAuthMethod::ClientSecretPost));
        let auth_type = if post_supported { AuthType::RequestBody } else { AuthType::BasicAuth };
        let client = TrousseauClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.clone())),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type);
        let jwks = metadata.jwks().clone();
        let provider = Provider {
            metadata,
            client,
            jwks: RwLock::new(jwks),
            last_fetch: tokio::sync::Mutex::new(JwksFetch { started: jwks_fetched_at, failure: None }),
        };
        *self.provider.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(provider));
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Retries discovery with exponential backoff (1 s doubling to 30 s) until it succeeds, or
    /// until nothing uses this relying party any more (a reload replaced it while Trousseau was
    /// unreachable, and the requests that began under it ended): the loop holds it only while it
    /// tries. Readiness stays false meanwhile.
    pub async fn discover_until_ready(oidc: std::sync::Weak<Oidc>) {
        let mut delay = Duration::from_secs(1);
        loop {
            let Some(this) = oidc.upgrade() else { return };
            match this.discover().await {
                Ok(()) => {
                    tracing::info!(issuer = %this.settings.issuer, "identity provider configuration loaded");
                    return;
                }
                Err(e) => {
                    tracing::warn!(issuer = %this.settings.issuer, error = %e, retry_in = ?delay, "identity provider not available yet");
                }
            }
            drop(this);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        self.provider.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or(OidcError::NotReady)
    }

    /// The end-session endpoint from discovery, if Trousseau published one.
    pub fn end_session_endpoint(&self) -> Option<String> {
        self.provider().ok()?.metadata.additional_metadata().end_session_endpoint.clone()
    }

    /// The token introspection endpoint from discovery, if Trousseau advertises one (`None` too
    /// while discovery has not succeeded).
    pub fn introspection_endpoint(&self) -> Option<String> {
        self.provider().ok()?.metadata.additional_metadata().introspection_endpoint.clone()
    }

    /// The issuer as discovered.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Re-fetches the JWKS after an unknown `kid`: at most one attempt per
    /// `oidc.jwks_refetch_interval`, counted from when the last attempt *started* (success or
    /// not), and one at a time. Within the interval the last attempt's outcome is the answer: `Ok`
    /// (the key set is as fresh as it may be; the `kid` is simply unknown) or its failure.
    async fn refetch_jwks(&self, provider: &Provider) -> Result<(), OidcError> {
        let mut last = provider.last_fetch.lock().await;
        if last.started.elapsed() < self.settings.jwks_refetch_interval {
            return match &last.failure {
                None => Ok(()),
                Some(reason) => Err(OidcError::Unreachable(format!(
                    "fetching the key set failed less than {:?} ago ({reason}); not retried yet",
                    self.settings.jwks_refetch_interval
                ))),
            };
        }
        last.started = Instant::now();
        let http = self.http_client();
        match CoreJsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &http).await {
            Ok(jwks) => {
                tracing::info!("identity provider key set re-fetched after an unknown key id");
                *provider.jwks.write().unwrap_or_else(|p| p.into_inner()) = jwks;
                last.failure = None;
                Ok(())
            }
            Err(e) => {
                let reason = error_chain(&e);
                last.failure = Some(reason.clone());
                Err(OidcError::Unreachable(format!("fetching the key set: {reason}")))
            }
        }
    }

    /// The current JWKS (for verifying logout tokens).
    pub fn jwks(&self) -> Result<CoreJsonWebKeySet, OidcError> {
        Ok(self.provider()?.jwks.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn chrono_skew() -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(CLOCK_SKEW.as_secs() as i64)
}


/// Entry points for the fuzz targets ([`crate::fuzz`]): the decoders above, without the network.
impl Oidc {
    /// A relying party loaded from a discovery document (with its key set) instead of fetching
    /// one, whose key set is never re-fetched: an unknown `kid` is refused at once. Nothing it
    /// does touches the network.
    #[doc(hidden)]
    pub fn offline(settings: OidcSettings, metadata: TrousseauMetadata) -> Result<Oidc, OidcError> {
        let oidc = Oidc::new(settings).map_err(|e| OidcError::Protocol(format!("offline relying party: {e}")))?;
        // "Fetched" a century from now: the re-fetch rate limit then always says no.
        let never = Instant::now().checked_add(Duration::from_secs(100 * 365 * 86_400)).unwrap_or_else(Instant::now);
        oidc.install(metadata, never)?;
        Ok(oidc)
    }

    /// Validates a token endpoint answer (`body`, the JSON Trousseau sends) the way
    /// [`Oidc::exchange_code`] does with `nonce`, or the way [`Oidc::refresh`] does (no nonce
    /// needed, same `sub`) with `expected_sub`.
    #[doc(hidden)]
    pub async fn validate_token_response(
        &self,
        body: &[u8],
        nonce: Option<&str>,
        expected_sub: Option<&str>,
    ) -> Result<Tokens, OidcError> {
        let response: TrousseauTokenResponse =
            serde_json::from_slice(body).map_err(|e| OidcError::Protocol(format!("token response: {e}")))?;
        let provider = self.provider()?;
        match nonce {
            Some(nonce) => self.validated_tokens(&provider, &response, &Nonce::new(nonce.to_string()), expected_sub).await,
            None => self.validated_tokens(&provider, &response, &NoNonceRequired, expected_sub).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn discovery_retries_stop_once_nothing_uses_the_relying_party() {
        // A port nothing listens on: reserved by binding it, then released.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let settings = OidcSettings {
            issuer: format!("http://{closed}/application/o/app/"),
            client_id: "app".into(),
            client_secret: "secret".into(),
            scopes: vec!["openid".into()],
            redirect_uri: "http://127.0.0.1/.trousseau/callback".into(),
            post_logout_redirect_uri: "http://127.0.0.1/".into(),
            ca_file: None,
            timeout: Duration::from_secs(1),
            jwks_refetch_interval: Duration::from_secs(60),
        };
        let oidc = Arc::new(Oidc::new(settings).unwrap());
        let retrying = tokio::spawn(Oidc::discover_until_ready(Arc::downgrade(&oidc)));
        // Trousseau is unreachable: it keeps trying while the relying party is in use …
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(!retrying.is_finished() && !oidc.is_ready());
        // … and gives up after its next wait once a reload replaced it and its requests ended.
        drop(oidc);
        tokio::time::timeout(Duration::from_secs(10), retrying).await.expect("the retry loop ended").unwrap();
    }
}
