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

/// Validated `oidc:`.
#[derive(Clone)]
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
        move |request| {
            let (http, latency) = (http.clone(), latency.clone());
            Box::pin(async move {
                let started = Instant::now();
                let result = idp_call(http, timeout, request).await;
                latency.observe(started.elapsed());
                result
            })
        }
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

    /// Retries discovery with exponential backoff (1 s doubling to 30 s) until it succeeds.
    /// Readiness stays false meanwhile.
    pub async fn discover_until_ready(&self) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.discover().await {
                Ok(()) => {
                    tracing::info!(issuer = %self.settings.issuer, "identity provider configuration loaded");
                    return;
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.settings.issuer, error = %e, retry_in = ?delay, "identity provider not available yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
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

    /// Starts a sign-in: the URL to send the browser to, and the state to keep in its cookie.
    pub fn begin_login(&self, return_to: String) -> Result<(url::Url, LoginState), OidcError> {
        let provider = self.provider()?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = provider.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let login = LoginState {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to,
            started_at: now_secs(),
        };
        Ok((url, login))
    }

    /// Exchanges the authorization code (with the PKCE verifier) and validates the ID token
    /// against the nonce of this sign-in attempt.
    pub async fn exchange_code(&self, code: &str, login: &LoginState) -> Result<Tokens, OidcError> {
        let provider = self.provider()?;
        let http = self.http_client();
        let response = provider
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Protocol(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier.clone()))
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let nonce = Nonce::new(login.nonce.clone());
        self.validated_tokens(&provider, &response, &nonce, None).await
    }

    /// Spends a refresh token. The new ID token (usually without `nonce`) must name the same
    /// `sub`; when Trousseau sends no new ID token the caller keeps the old identity.
    pub async fn refresh(&self, refresh_token: &str, sub: &str) -> Result<Refreshed, OidcError> {
        let provider = self.provider()?;
        let http = self.http_client();
        let response = provider
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
            .map_err(|e| OidcError::Protocol(e.to_string()))?
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(300));
        let mut refreshed = Refreshed {
            expires_at: now_secs().saturating_add(lifetime.as_secs()),
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            id: None,
        };
        if response.id_token().is_some() {
            let tokens = self.validated_tokens(&provider, &response, &NoNonceRequired, Some(sub)).await?;
            refreshed.id = Some((tokens.identity, tokens.sid, tokens.id_token));
        }
        Ok(refreshed)
    }

    /// Validates the ID token of a token response (re-fetching the JWKS once when its `kid` is
    /// unknown) and types its claims.
    async fn validated_tokens<N>(
        &self,
        provider: &Provider,
        response: &TrousseauTokenResponse,
        nonce: &N,
        expected_sub: Option<&str>,
    ) -> Result<Tokens, OidcError>
    where
        for<'n> &'n N: openidconnect::NonceVerifier,
    {
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Protocol("the token response has no id_token".into()))?;
        let claims = match self.verify_claims(provider, id_token, nonce) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                self.refetch_jwks(provider).await?;
                self.verify_claims(provider, id_token, nonce)
            }
            other => other,
        }
        .map_err(|e| OidcError::InvalidIdToken(e.to_string()))?;

        let sub = claims.subject().as_str().to_string();
        if !plainly_names(&id_token.to_string(), &sub) {
            return Err(OidcError::InvalidIdToken("the ID token does not read as plain JSON (a header or claims that are not UTF-8 JSON, an empty `#` language tag, or no plain `sub`)".into()));
        }
        if sub.is_empty() {
            return Err(OidcError::InvalidIdToken("the ID token names no user (empty sub)".into()));
        }
        if let Some(expected) = expected_sub {
            if expected != sub {
                return Err(OidcError::InvalidIdToken("the refreshed ID token names another user".into()));
            }
        }
        let extra = claims.additional_claims();
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        // `email_verified` speaks about the address: without one (absent or empty) it is left out.
        let email = nonempty(claims.email().map(|e| e.as_str().to_string()));
        let identity = Identity {
            sub,
            email_verified: email.as_ref().and(claims.email_verified()),
            email,
            name: nonempty(claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string())),
            given_name: nonempty(claims.given_name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string())),
            family_name: nonempty(claims.family_name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string())),
            picture: nonempty(claims.picture().and_then(|p| p.get(None)).map(|p| p.as_str().to_string())),
            trousseau_user_id: nonempty(extra.trousseau_user_id.clone()),
            locale: nonempty(claims.locale().map(|l| l.as_str().to_string())),
            organizations: extra.organizations.clone(),
        };
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(300));
        Ok(Tokens {
            identity,
            sid: extra.sid.clone(),
            expires_at: now_secs().saturating_add(lifetime.as_secs()),
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            id_token: id_token.to_string(),
        })
    }

    fn verify_claims<'t, N>(
        &self,
        provider: &Provider,
        id_token: &'t openidconnect::IdToken<TrousseauClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>,
        nonce: &N,
    ) -> Result<&'t openidconnect::IdTokenClaims<TrousseauClaims, CoreGenderClaim>, ClaimsVerificationError>
    where
        for<'n> &'n N: openidconnect::NonceVerifier,
    {
        let jwks = provider.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let verifier: IdTokenVerifier<CoreJsonWebKey> = IdTokenVerifier::new_confidential_client(
            ClientId::new(self.settings.client_id.clone()),
            ClientSecret::new(self.settings.client_secret.clone()),
            provider.metadata.issuer().clone(),
            jwks,
        )
        .set_allowed_algs(ALLOWED_ALGS)
        .set_issue_time_verifier_fn(|iat| {
            let now = chrono_now();
            if iat > now + chrono_skew() {
                Err("the ID token was issued in the future".into())
            } else {
                Ok(())
            }
        });
        id_token.claims(&verifier, nonce)
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

/// Whether the (verified) ID token reads the same to any JSON reader: its header and payload are
/// JSON objects (UTF-8, RFC 7515 §4), the payload has `sub` as `sub`, and no claim name has an
/// empty language tag. The openidconnect crate accepts a header with bytes that are not UTF-8 and
/// reads `"sub#"` as `sub` and `"email#"` as `email` (OpenID Connect's `name#fr` form, with an
/// empty tag): the user the proxy names must be the one any reader of the same token would name.
fn plainly_names(jwt: &str, sub: &str) -> bool {
    use base64::Engine as _;
    let object = |part: Option<&str>| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part?).ok()?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok()
    };
    let mut parts = jwt.split('.');
    let (Some(_header), Some(claims)) = (object(parts.next()), object(parts.next())) else { return false };
    claims.get("sub").and_then(serde_json::Value::as_str) == Some(sub) && !claims.keys().any(|k| k.ends_with('#'))
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn chrono_skew() -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(CLOCK_SKEW.as_secs() as i64)
}

/// Refreshed ID tokens usually carry no nonce; if one is there we do not know it either.
struct NoNonceRequired;

impl openidconnect::NonceVerifier for &NoNonceRequired {
    fn verify(self, _nonce: Option<&Nonce>) -> Result<(), String> {
        Ok(())
    }
}

/// Maps a token-endpoint failure to our error: OAuth error answers keep their code; transport
/// failures and 5xx are "unreachable" (retry later), never "invalid_grant".
fn token_error<E: std::error::Error + 'static>(
    e: RequestTokenError<E, StandardErrorResponse<CoreErrorResponseType>>,
) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(r) => OidcError::Rejected {
            error: r.error().as_ref().to_string(),
            description: r.error_description().cloned(),
        },
        RequestTokenError::Request(e) => OidcError::Unreachable(error_chain(&e)),
        RequestTokenError::Parse(e, _) => OidcError::Protocol(format!("token response: {e}")),
        RequestTokenError::Other(text) if text.contains("Server returned") || text.contains("status code 5") => {
            OidcError::Unreachable(text)
        }
        RequestTokenError::Other(text) => OidcError::Protocol(text),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The event member every back-channel logout token carries.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old a logout token's `iat` may be.
const LOGOUT_TOKEN_MAX_AGE: u64 = 600;

/// How often a refused back-channel logout is written to the log, at most.
const LOGOUT_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The log of refused back-channel logouts: one WARN line at once, then at most one per
/// [`LOGOUT_REFUSAL_LOG_INTERVAL`], saying how many more were refused meanwhile. A refusal is the
/// sender's fault (a 400 for it), and anyone can POST tokens, so they must not flood the log.
pub struct RefusalLog {
    budget: crate::logging::LogBudget,
}

impl RefusalLog {
    /// A log writing at most one line per `interval`.
    pub fn new(interval: Duration) -> RefusalLog {
        RefusalLog { budget: crate::logging::LogBudget::every(interval) }
    }

    /// Records one refused logout from `client` (its address), writing the line if it is time.
    pub fn refused(&self, client: std::net::IpAddr, reason: &dyn std::fmt::Display) {
        if let Some(meanwhile) = self.budget.take() {
            tracing::warn!(
                client = %client,
                reason = %reason,
                refused_meanwhile = meanwhile,
                "back-channel logout refused (answered 400): the sender's logout token is not acceptable"
            );
        }
    }
}

/// What a verified back-channel logout token asks to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutRequest {
    /// Trousseau session to end, when given.
    pub sid: Option<String>,
    /// User whose sessions end, when given (and no `sid`).
    pub sub: Option<String>,
    /// The token's id (replay protection).
    pub jti: String,
}

/// Why a logout token was refused (each is a 400 for the IdP).
#[derive(Debug, thiserror::Error)]
pub enum LogoutTokenError {
    /// Not a compact JWS, or not JSON inside.
    #[error("malformed logout token: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with Trousseau's keys.
    #[error("logout token signature: {0}")]
    Signature(String),
    /// A claim is missing or wrong.
    #[error("logout token claims: {0}")]
    Claims(&'static str),
    /// The header asks for something we do not do (`crit`, RFC 7515 §4.1.11).
    #[error("logout token header: {0}")]
    Header(&'static str),
    /// The provider is not loaded.
    #[error(transparent)]
    Oidc(#[from] OidcError),
}

impl Oidc {
    /// Verifies a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6):
    /// signature with Trousseau's JWKS (re-fetched once on an unknown `kid`), `iss`, `aud`, `iat`
    /// window, optional `exp`, the `events` member, `sid` and/or `sub`, and no `nonce`. `typ` may be
    /// `logout+jwt` or `JWT` (Authentik). Replay of `jti` is the caller's check.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutRequest, LogoutTokenError> {
        use base64::Engine as _;
        use openidconnect::JsonWebKey as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(LogoutTokenError::Malformed("not a compact JWS"));
        };
        let header: serde_json::Value = b64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(LogoutTokenError::Malformed("header"))?;
        let claims: serde_json::Value = b64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(LogoutTokenError::Malformed("payload"))?;
        let signature = b64.decode(s).map_err(|_| LogoutTokenError::Malformed("signature"))?;
        // RFC 7515 §4.1.11: every extension `crit` lists must be understood, and we understand
        // none; refused before any key is looked up (or fetched).
        if header.get("crit").is_some() {
            return Err(LogoutTokenError::Header("crit names extensions this relying party does not support"));
        }
        if let Some(typ) = header.get("typ").and_then(|t| t.as_str()) {
            if !typ.eq_ignore_ascii_case("logout+jwt") && !typ.eq_ignore_ascii_case("JWT") {
                return Err(LogoutTokenError::Claims("typ is neither logout+jwt nor JWT"));
            }
        }
        let alg: CoreJwsSigningAlgorithm = serde_json::from_value(header["alg"].clone())
            .map_err(|_| LogoutTokenError::Signature("unknown alg".into()))?;
        if !ALLOWED_ALGS.contains(&alg) {
            return Err(LogoutTokenError::Signature("algorithm not allowed".into()));
        }
        let kid = header.get("kid").and_then(|k| k.as_str()).map(String::from);
        let message = format!("{h}.{p}");
        let provider = self.provider()?;
        let verify = |jwks: &CoreJsonWebKeySet| -> Result<bool, String> {
            let candidates: Vec<&CoreJsonWebKey> = jwks
                .keys()
                .iter()
                .filter(|k| kid.is_none() || k.key_id().map(|id| id.as_str()) == kid.as_deref())
                .collect();
            if candidates.is_empty() {
                return Ok(false);
            }
            if candidates.iter().any(|k| k.verify_signature(&alg, message.as_bytes(), &signature).is_ok()) {
                Ok(true)
            } else {
                Err("does not verify".into())
            }
        };
        let jwks = provider.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let found = match verify(&jwks).map_err(LogoutTokenError::Signature)? {
            true => true,
            false => {
                self.refetch_jwks(&provider).await.map_err(|e| LogoutTokenError::Signature(e.to_string()))?;
                let jwks = provider.jwks.read().unwrap_or_else(|p| p.into_inner()).clone();
                verify(&jwks).map_err(LogoutTokenError::Signature)?
            }
        };
        if !found {
            return Err(LogoutTokenError::Signature("no key matches its kid".into()));
        }

        if claims["iss"].as_str() != Some(provider.metadata.issuer().as_str()) {
            return Err(LogoutTokenError::Claims("iss is not our issuer"));
        }
        let client_id = self.settings.client_id.as_str();
        let aud_ok = match &claims["aud"] {
            serde_json::Value::String(a) => a == client_id,
            serde_json::Value::Array(list) => list.iter().any(|a| a.as_str() == Some(client_id)),
            _ => false,
        };
        if !aud_ok {
            return Err(LogoutTokenError::Claims("aud is not our client_id"));
        }
        let now = now_secs();
        let iat = claims["iat"].as_u64().ok_or(LogoutTokenError::Claims("iat missing"))?;
        if iat > now + CLOCK_SKEW.as_secs() || iat.saturating_add(LOGOUT_TOKEN_MAX_AGE) < now {
            return Err(LogoutTokenError::Claims("iat outside the accepted window"));
        }
        if let Some(exp) = claims.get("exp").filter(|e| !e.is_null()) {
            if exp.as_u64().is_none_or(|exp| exp.saturating_add(CLOCK_SKEW.as_secs()) < now) {
                return Err(LogoutTokenError::Claims("expired"));
            }
        }
        if !claims["events"].get(BACKCHANNEL_EVENT).is_some_and(|e| e.is_object()) {
            return Err(LogoutTokenError::Claims("events member missing"));
        }
        if claims.get("nonce").is_some() {
            return Err(LogoutTokenError::Claims("nonce must not be present"));
        }
        let sid = claims["sid"].as_str().filter(|s| !s.is_empty()).map(String::from);
        let sub = claims["sub"].as_str().filter(|s| !s.is_empty()).map(String::from);
        if sid.is_none() && sub.is_none() {
            return Err(LogoutTokenError::Claims("neither sid nor sub"));
        }
        let jti = claims["jti"].as_str().filter(|s| !s.is_empty()).ok_or(LogoutTokenError::Claims("jti missing"))?;
        Ok(LogoutRequest { sid, sub, jti: jti.to_string() })
    }
}

impl Oidc {
    /// Asks Trousseau's userinfo endpoint who holds this (opaque) access token. A refused token
    /// is `Rejected { error: "invalid_token" }`; an unreachable IdP is `Unreachable`.
    pub async fn userinfo(&self, access_token: &str) -> Result<Identity, OidcError> {
        let provider = self.provider()?;
        let url = provider
            .metadata
            .userinfo_endpoint()
            .ok_or_else(|| OidcError::Protocol("Trousseau published no userinfo endpoint".into()))?
            .url()
            .clone();
        let request = http::Request::get(url.as_str())
            .header(http::header::AUTHORIZATION, format!("Bearer {access_token}"))
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|_| OidcError::Rejected { error: "invalid_token".into(), description: None })?;
        let response = (self.http_client())(request).await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = response.status();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(OidcError::Rejected { error: "invalid_token".into(), description: None });
        }
        if status.is_server_error() {
            return Err(OidcError::Unreachable(format!("userinfo answered {status}")));
        }
        if !status.is_success() {
            return Err(OidcError::Protocol(format!("userinfo answered {status}")));
        }
        let mut identity: Identity = serde_json::from_slice(response.body())
            .map_err(|e| OidcError::Protocol(format!("userinfo answer: {e}")))?;
        if identity.sub.is_empty() {
            return Err(OidcError::Protocol("userinfo answer has no sub".into()));
        }
        for field in [
            &mut identity.email,
            &mut identity.name,
            &mut identity.given_name,
            &mut identity.family_name,
            &mut identity.picture,
            &mut identity.trousseau_user_id,
            &mut identity.locale,
        ] {
            if field.as_deref() == Some("") {
                *field = None;
            }
        }
        if identity.email.is_none() {
            identity.email_verified = None;
        }
        Ok(identity)
    }
}

/// What token introspection (RFC 7662) says about an access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// The token is live (issued, unexpired, not revoked).
    pub active: bool,
    /// It was issued to us: its `client_id` is ours, or its `aud` names our client id.
    pub for_us: bool,
    /// The user it speaks for, when the answer says.
    pub sub: Option<String>,
    /// Trousseau's session the token belongs to (Authentik answers with the ID token's claims,
    /// `sid` among them), matched by back-channel logout.
    pub sid: Option<String>,
    /// When the user authenticated (`auth_time`), else when the token was issued (`iat`), in unix
    /// seconds: a back-channel logout by `sub` ends what began before it.
    pub since: Option<u64>,
}

/// The members of an introspection answer we read; the rest is ignored. A member of the wrong
/// type makes the whole answer a protocol error.
#[derive(Deserialize)]
struct IntrospectionAnswer {
    active: bool,
    #[serde(default)]
    client_id: Option<String>,
    /// A string or an array of strings (RFC 7662 §2.2).
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    sub: Option<String>,
    /// Read leniently (any type, ignored when not what we expect): they only ever narrow access.
    #[serde(default)]
    sid: Option<serde_json::Value>,
    #[serde(default)]
    auth_time: Option<serde_json::Value>,
    #[serde(default)]
    iat: Option<serde_json::Value>,
}

impl Oidc {
    /// Asks Trousseau's introspection endpoint (RFC 7662) about an access token, authenticating
    /// with `client_secret_post`. A refused client is `Rejected { error: "invalid_client" }`; an
    /// unreachable IdP or a 5xx is `Unreachable`. Neither the token nor the secret ever appears in
    /// an error.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, OidcError> {
        let provider = self.provider()?;
        let endpoint = provider
            .metadata
            .additional_metadata()
            .introspection_endpoint
            .as_deref()
            .ok_or_else(|| OidcError::Protocol("Trousseau advertises no introspection endpoint".into()))?;
        let url = url::Url::parse(endpoint).map_err(|e| OidcError::Protocol(format!("introspection_endpoint: {e}")))?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("client_secret", &self.settings.client_secret)
            .finish();
        let request = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(body.into_bytes())
            .map_err(|_| OidcError::Protocol("the introspection request could not be built".into()))?;
        let response = (self.http_client())(request).await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = response.status();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(OidcError::Rejected {
                error: "invalid_client".into(),
                description: Some(format!("the introspection endpoint answered {status}")),
            });
        }
        if status.is_server_error() {
            return Err(OidcError::Unreachable(format!("introspection answered {status}")));
        }
        if !status.is_success() {
            return Err(OidcError::Protocol(format!("introspection answered {status}")));
        }
        // The parser's position only: its message may quote the answer.
        let answer: IntrospectionAnswer = serde_json::from_slice(response.body()).map_err(|e| {
            OidcError::Protocol(format!(
                "introspection answer is malformed ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let ours = self.settings.client_id.as_str();
        let aud_ok = match &answer.aud {
            Some(serde_json::Value::String(a)) => a == ours,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(ours)),
            _ => false,
        };
        let sid = answer.sid.as_ref().and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(String::from);
        let since = [&answer.auth_time, &answer.iat].into_iter().find_map(|v| v.as_ref().and_then(serde_json::Value::as_u64));
        Ok(Introspection {
            active: answer.active,
            for_us: answer.client_id.as_deref() == Some(ours) || aud_ok,
            sub: answer.sub,
            sid,
            since,
        })
    }
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
