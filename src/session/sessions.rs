//! [`Sessions`]: everything the request path does with a session, in one place — load it (cookie
//! or server-side store), check it against the revocations and `max_lifetime`, save it, end it,
//! and the sign-in attempts' state cookies that come before it.
//!
//! The endpoints and the pipeline call these methods; none of them touches a cookie, the store
//! or the revocation set on its own.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::HeaderMap;

use super::cookies::{CookieSettings, RequestCookies, SessionCodec};
use super::revocation::RevocationSet;
use super::seal::Sealer;
use super::sign_ins::{LoopFacts, SessionTrouble, SignInTrail, LOOP_AFTER, WINDOW_SECS};
use super::redis::{Redis, KEY_PREFIX};
use super::store::{SessionStore, StoreError};
use super::Session;
use crate::claims::Organization;
use crate::oidc::LoginState;
use crate::tether::EndReason;
use crate::util::clock::now_secs;
use crate::util::constant_time_eq;
use crate::util::histogram::{Histogram, COOKIE_BYTES_BUCKETS};

/// Sealing purpose of login-state cookies (never interchangeable with a session).
#[doc(hidden)]
pub const LOGIN_STATE_PURPOSE: &str = "login-state";

/// Sealing purpose of the handle a server-side store's cookie carries.
const SESSION_HANDLE_PURPOSE: &str = "session-handle";

/// Sealing purpose of a cookie session refreshed in the background, kept in Redis.
const REFRESHED_PURPOSE: &str = "refreshed-session";

/// Most cookie sessions refreshed in the background remembered on one replica.
const MAX_REFRESHED: u64 = 100_000;

/// The most bytes a sealed cookie session may take. Past it the ID token goes, then the
/// organizations are set aside: the browser sends the cookie with every request, and a front end
/// with nginx's defaults refuses a header over 8 KB (the app's cookies share it); in forward-auth
/// nginx takes the whole answer's headers in one 4 KB buffer (`proxy_buffer_size`): a refreshed
/// cookie, the identity headers and the assertion
/// ([`crate::identity::ASSERTION_ORGANIZATIONS_BUDGET`]) together — with the ID token kept up to
/// one cookie, as before, a refresh through the nginx recipe failed there for a user with one
/// organization. A session with two organizations and no ID token takes about 1,100 bytes; the
/// sign-out then names the client (`client_id`) instead of giving the ID token as a hint.
pub const COOKIE_BUDGET: usize = 2_400;

/// Most memory the organizations set aside may take on one replica.
const ASIDE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// How long one sign-in attempt may take.
const LOGIN_STATE_TTL: Duration = Duration::from_secs(600);

/// At most this many sign-in attempts (state cookies) at once; older ones are dropped first.
const MAX_LOGIN_ATTEMPTS: usize = 4;

/// The cookies of one request: those it came with, and the `Set-Cookie` values its answer will
/// carry.
#[derive(Debug, Default)]
pub struct Jar {
    /// The request's cookies (ours included; they are stripped from what the app receives).
    pub incoming: RequestCookies,
    /// `Set-Cookie` values decided along the way, added to the answer at the end.
    pub outgoing: Vec<HeaderValue>,
    /// The proxy ended this request's session ([`Sessions::end`]): what follows is a sign-in, never
    /// the loop page.
    pub ended: bool,
}

/// The sessions of one application: see the module documentation.
pub struct Sessions {
    codec: SessionCodec,
    sealer: Arc<Sealer>,
    /// `None`: the session lives in its cookie (`session.store: cookie`).
    store: Option<Arc<dyn SessionStore>>,
    revocations: RevocationSet,
    max_lifetime: Duration,
    /// `session.cookie_name`, to recognise our cookies in what the app sets.
    base_name: String,
    login_cookie_prefix: String,
    /// The sign-in trail's cookie ([`super::sign_ins`]).
    trail_cookie: String,
    /// This instance's random number in the sign-in trail.
    replica: u32,
    /// `identity.pass_access_token`: the access token stays in the session only then (or when
    /// the organizations are set aside).
    keep_access_token: bool,
    /// Organizations of cookie sessions set aside, by digest ([`Sessions::within_budget`]).
    aside: moka::sync::Cache<String, Arc<Vec<Organization>>>,
    /// Cookie sessions refreshed in the background for their open connections, whose cookie
    /// still holds the session before: id → (deadline, the refreshed session). See
    /// [`Sessions::keep_refreshed`].
    refreshed: moka::sync::Cache<String, (u64, Arc<Session>)>,
    /// Shares `refreshed` with the other replicas.
    redis: Option<Arc<Redis>>,
    /// Store handles of revoked sessions this replica removed lately: a browser coming back with
    /// one had its session ended, normally — not a sign-in loop ([`Sessions::looping`]).
    ended_here: moka::sync::Cache<String, ()>,
    /// Bytes of the session cookies set, per response (metrics).
    cookie_bytes: Arc<Histogram>,
    /// Our cookies under the names of earlier configurations (`session.cookie_name` changed by a
    /// reload): browsers still send them, and they must not reach the app either (until the next
    /// restart: the names are this process's memory). The app may set cookies of those names
    /// again: we no longer read them. The latest [`RETIRED_NAMES`]; usually none.
    retired: Vec<Retired>,
}

/// How many earlier `session.cookie_name`s are still stripped from requests.
const RETIRED_NAMES: usize = 8;

/// The names our cookies had under an earlier `session.cookie_name`.
#[derive(Clone, Debug)]
struct Retired {
    cookie: CookieSettings,
    login_cookie_prefix: String,
    trail_cookie: String,
}

impl Retired {
    fn is_ours(&self, name: &str) -> bool {
        self.cookie.is_ours(name) || is_sign_in_cookie(&self.login_cookie_prefix, &self.trail_cookie, name)
    }
}

/// Whether `name` is a sign-in attempt's cookie (`<prefix><id>`) or the sign-in trail's.
fn is_sign_in_cookie(login_cookie_prefix: &str, trail_cookie: &str, name: &str) -> bool {
    name.starts_with(login_cookie_prefix) || name == trail_cookie
}

/// An entry of [`Sessions::refreshed`] lives until its session's deadline.
struct UntilSessionDeadline;

impl moka::Expiry<String, (u64, Arc<Session>)> for UntilSessionDeadline {
    fn expire_after_create(&self, _key: &String, value: &(u64, Arc<Session>), _created_at: std::time::Instant) -> Option<Duration> {
        Some(Duration::from_secs(value.0.saturating_sub(now_secs())))
    }

    fn expire_after_update(&self, key: &String, value: &(u64, Arc<Session>), updated_at: std::time::Instant, _left: Option<Duration>) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

impl Sessions {
    /// Sessions sealed by `sealer` into `cookie`, kept in `store` (or in the cookie itself when
    /// `None`), ended early by `revocations`, never older than `max_lifetime`; the sessions
    /// refreshed in the background are shared with the other replicas through `redis`.
    pub fn new(
        sealer: Arc<Sealer>,
        cookie: CookieSettings,
        base_name: &str,
        store: Option<Arc<dyn SessionStore>>,
        revocations: RevocationSet,
        max_lifetime: Duration,
        redis: Option<Arc<Redis>>,
    ) -> Sessions {
        let host_prefix = if cookie.secure { "__Host-" } else { "" };
        let login_cookie_prefix = format!("{host_prefix}{base_name}_login_");
        let trail_cookie = format!("{host_prefix}{base_name}_signins");
        Sessions {
            codec: SessionCodec::new(sealer.clone(), cookie),
            sealer,
            store,
            revocations,
            max_lifetime,
            base_name: base_name.to_string(),
            login_cookie_prefix,
            trail_cookie,
            replica: u32::from_be_bytes(crate::util::id::random_bytes::<4>()),
            keep_access_token: false,
            aside: moka::sync::Cache::builder()
                .weigher(|_, orgs: &Arc<Vec<Organization>>| u32::try_from(orgs.iter().map(Organization::approx_size).sum::<usize>()).unwrap_or(u32::MAX))
                .max_capacity(ASIDE_MAX_BYTES)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            refreshed: moka::sync::Cache::builder().max_capacity(MAX_REFRESHED).expire_after(UntilSessionDeadline).build(),
            redis,
            ended_here: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(WINDOW_SECS)).build(),
            cookie_bytes: Arc::new(Histogram::of_sizes(COOKIE_BYTES_BUCKETS)),
            retired: Vec::new(),
        }
    }

    /// These sessions, for a reloaded configuration, carrying over what outlives one: the
    /// organizations set aside, the sessions refreshed in the background, this replica's number
    /// in the sign-in trail, the cookie-size histogram. Not the decoded-cookie cache: the session
    /// secrets may have changed, and a cookie only an old secret opened must not stay open.
    pub fn carrying(mut self, old: &Sessions) -> Sessions {
        self.replica = old.replica;
        self.aside = old.aside.clone();
        self.refreshed = old.refreshed.clone();
        self.ended_here = old.ended_here.clone();
        self.cookie_bytes = Arc::clone(&old.cookie_bytes);
        let old_names = Retired {
            cookie: old.codec.cookie().clone(),
            login_cookie_prefix: old.login_cookie_prefix.clone(),
            trail_cookie: old.trail_cookie.clone(),
        };
        // Newest first. `old.retired` never holds `old`'s own names, so there is nothing to dedupe
        // but the names this configuration uses again.
        let current = self.codec.cookie();
        self.retired = std::iter::once(old_names)
            .chain(old.retired.iter().cloned())
            .filter(|r| r.cookie != *current)
            .take(RETIRED_NAMES)
            .collect();
        self
    }

    /// The server-side store (`None`: sessions live in their cookie).
    pub fn store(&self) -> Option<&Arc<dyn SessionStore>> {
        self.store.as_ref()
    }

    /// Keeps the access token in stored sessions (`identity.pass_access_token`): without it, a
    /// session holds one only while its organizations are set aside.
    pub fn passing_access_tokens(mut self, pass: bool) -> Sessions {
        self.keep_access_token = pass;
        self
    }

    /// Bytes of the session cookies set, per response.
    pub fn cookie_bytes(&self) -> &Histogram {
        &self.cookie_bytes
    }

    /// Records the size of one response's session cookies: their `name=value` parts (what the
    /// browser will send back), chunks whose value is empty (expiring a stale chunk) not counted.
    fn count_cookie_bytes(&self, values: &[HeaderValue]) {
        self.cookie_bytes.observe_size(sent_back_bytes(values.iter()) as u64);
    }

    /// Whether sessions live in a server-side store (`memory`, `redis`) rather than their cookie.
    pub fn server_side(&self) -> bool {
        self.store.is_some()
    }

    /// The revocation set (back-channel logouts, bearer checks, metrics).
    pub fn revocations(&self) -> &RevocationSet {
        &self.revocations
    }

    /// Whether the request carries a session cookie at all (valid or not): such a request is
    /// judged by it, never by a bearer token beside it.
    pub fn has_cookie(&self, cookies: &RequestCookies) -> bool {
        self.codec.cookie().read_chunked(cookies).is_some()
    }

    /// The session of this request: opened from the cookie (or, with a server-side store, looked up
    /// by the handle sealed in the cookie). Anything wrong, revoked or past `max_lifetime` is no
    /// session; a store that cannot answer is an error (the caller fails closed with 503).
    pub async fn load(&self, cookies: &RequestCookies) -> Result<Option<Arc<Session>>, StoreError> {
        let session = match &self.store {
            None => self.codec.load(cookies).map(|session| match self.aside_of(&session) {
                Some(organizations) => self.filled(Some(cookies), &session, &organizations),
                None => session,
            }),
            Some(store) => match self.handle(cookies) {
                Some(handle) => store.load(&handle).await?.map(Arc::new),
                None => None,
            },
        };
        let Some(session) = session else { return Ok(None) };
        if self.revocations.is_revoked(&session).await? {
            crate::trace::record::note_session("revoked");
            // A revoked record goes too (best effort): the revocation entry is then not all that
            // keeps it ended.
            if let (Some(store), Some(handle)) = (&self.store, self.handle(cookies)) {
                let _ = store.remove(&handle).await;
                self.ended_here.insert(handle, ());
            }
            return Ok(None);
        }
        let now = now_secs();
        Ok((now < self.deadline(&session) && session.created_at <= now + 60).then_some(session))
    }

    /// Saves the session and sets its cookie on this response. In the cookie the ID token (kept only
    /// for the logout hint) is dropped when the session would not fit in one cookie; `Ok(false)`
    /// when even that does not fit in the cookie chunks.
    pub async fn save(&self, session: &Session, jar: &mut Jar) -> Result<bool, StoreError> {
        let max_age = Duration::from_secs(self.deadline(session).saturating_sub(now_secs()));
        if let Some(store) = &self.store {
            let stripped;
            let session = if session.access_token.is_some() && !self.keep_access_token {
                stripped = Session { access_token: None, ..session.clone() };
                &stripped
            } else {
                session
            };
            // The handle is the session id: a request carrying it is updating its session; any
            // other save is a sign-in, which counts against the user's cap.
            if self.handle(&jar.incoming).as_deref() == Some(session.id.as_str()) {
                if !store.replace(&session.id, session, max_age).await? {
                    tracing::debug!(sub = %session.identity.sub, "the session ended while this request updated it: not stored again");
                }
            } else {
                store.create(&session.id, session, max_age).await?;
            }
            let sealed = self.sealer.seal(SESSION_HANDLE_PURPOSE, session.id.as_bytes());
            return match self.codec.cookie().write_chunked(&sealed, max_age, &jar.incoming) {
                Ok(values) => {
                    self.count_cookie_bytes(&values);
                    jar.outgoing.extend(values);
                    Ok(true)
                }
                Err(_) => Ok(false),
            };
        }
        let session = &self.within_budget(session);
        if self.codec.sealed_len(session) > COOKIE_BUDGET {
            return Ok(self.too_large(session));
        }
        match self.codec.store(session, max_age, &jar.incoming) {
            Ok(values) => {
                self.count_cookie_bytes(&values);
                jar.outgoing.extend(values);
                Ok(true)
            }
            Err(_) => Ok(self.too_large(session)),
        }
    }

    /// What of `session` its cookie holds, within [`COOKIE_BUDGET`] when it can be: the access
    /// token only if the app is given it; past the budget, no ID token (it served the logout
    /// hint only), then the organizations set aside ([`Sessions::set_aside`]) with the access
    /// token kept to ask Trousseau for them again on a replica that has not seen them.
    fn within_budget(&self, session: &Session) -> Session {
        let mut kept = session.clone();
        if kept.identity.organizations.is_some() {
            kept.organizations_aside = None;
        }
        if !self.keep_access_token {
            kept.access_token = None;
        }
        if self.codec.sealed_len(&kept) <= COOKIE_BUDGET {
            return kept;
        }
        kept.id_token = None;
        if self.codec.sealed_len(&kept) <= COOKIE_BUDGET {
            return kept;
        }
        if let Some(organizations) = kept.identity.organizations.take() {
            kept.organizations_aside = Some(self.set_aside(organizations));
            kept.access_token.clone_from(&session.access_token);
        }
        kept
    }

    /// The page's answer for a session that cannot fit the cookie budget, and one ERROR line an
    /// hour (not one per attempt of every such user).
    fn too_large(&self, session: &Session) -> bool {
        static ERROR: crate::logging::LogBudget = crate::logging::LogBudget::every(Duration::from_secs(3600));
        if let Some(unlogged) = ERROR.take() {
            tracing::error!(
                sub = %session.identity.sub,
                sealed_bytes = self.codec.sealed_len(session),
                budget = COOKIE_BUDGET,
                unlogged,
                "session does not fit in its cookie budget even with its organizations set aside; set session.store: memory or redis"
            );
        }
        false
    }

    /// Keeps `organizations` on this replica under the digest of their JSON, which the cookie
    /// carries instead of them; returns the digest.
    fn set_aside(&self, organizations: Vec<Organization>) -> String {
        let json = serde_json::to_vec(&organizations).unwrap_or_default();
        let digest = crate::util::hash::sha256_b64url(&json);
        self.aside.insert(digest.clone(), Arc::new(organizations));
        digest
    }

    /// The organizations `session` set aside, when they are not in it and this replica has them.
    fn aside_of(&self, session: &Session) -> Option<Arc<Vec<Organization>>> {
        match (&session.organizations_aside, &session.identity.organizations) {
            (Some(digest), None) => self.aside.get(digest),
            _ => None,
        }
    }

    /// `session` with its organizations back. When `session` is what this request's `cookies`
    /// hold (not refreshed since), the copy is remembered for them: made once per cookie, not per
    /// request.
    pub fn filled(&self, cookies: Option<&RequestCookies>, session: &Session, organizations: &[Organization]) -> Arc<Session> {
        let mut whole = session.clone();
        whole.identity.organizations = Some(organizations.to_vec());
        let whole = Arc::new(whole);
        if let Some(cookies) = cookies {
            self.codec.remember(cookies, whole.clone());
        }
        whole
    }

    /// Keeps what Trousseau now says of a session's organizations, under the digest its cookie
    /// carries (they may have changed since; the next refresh writes the new digest).
    pub fn keep_aside(&self, digest: &str, organizations: Vec<Organization>) -> Arc<Vec<Organization>> {
        let organizations = Arc::new(organizations);
        self.aside.insert(digest.to_string(), organizations.clone());
        organizations
    }

    /// Forgets the session: its cookies (every chunk) and, with a server-side store, its record.
    /// A cookie session cannot be taken back from the browser (or from whoever copied the cookie),
    /// so its id goes into the revocation set for what remains of its lifetime: a copy is no
    /// session afterwards, here at once and on the other replicas (Redis) within
    /// `session.revocation_staleness`.
    pub async fn end(&self, session: Option<&Session>, jar: &mut Jar) {
        match (&self.store, session) {
            (Some(store), _) => {
                if let Some(handle) = self.handle(&jar.incoming) {
                    if let Err(e) = store.remove(&handle).await {
                        tracing::warn!(error = %e, "could not remove the session record; it expires on its own");
                    }
                }
            }
            (None, Some(session)) => {
                self.refreshed.invalidate(&session.id);
                let ttl = Duration::from_secs(self.deadline(session).saturating_sub(now_secs()).max(1));
                if let Err(e) = self.revocations.end_session(session, ttl).await {
                    // The cookies still go; only a copy taken before would keep working.
                    tracing::warn!(sub = %session.identity.sub, error = %e, "could not record the sign-out in the revocation set: a copy of this cookie stays valid until it expires");
                }
            }
            (None, None) => {}
        }
        jar.outgoing.extend(self.codec.clear(&jar.incoming));
        // The proxy ended it (a sign-out, a refused refresh): the sign-ins before it were no loop.
        jar.ended = true;
        if jar.incoming.get(&self.trail_cookie).is_some() {
            jar.outgoing.push(self.codec.cookie().single(&self.trail_cookie, "", Duration::ZERO));
        }
    }

    /// Keeps a session refreshed where no response could carry its cookie: a refresh made in the
    /// background for the session's open websockets and streams. A server-side store's record is
    /// replaced. A cookie session is remembered here (and in Redis, for the other replicas) until
    /// its deadline: the browser's cookie still holds the refresh token before, which Trousseau
    /// has rotated and would take for a stolen one; [`Sessions::newer_copy`] hands this instead.
    pub async fn keep_refreshed(&self, session: &Arc<Session>) -> Result<(), StoreError> {
        let deadline = self.deadline(session);
        let ttl = Duration::from_secs(deadline.saturating_sub(now_secs()).max(1));
        if let Some(store) = &self.store {
            store.replace(&session.id, session, ttl).await?;
            return Ok(());
        }
        self.refreshed.insert(session.id.clone(), (deadline, session.clone()));
        if let Some(redis) = &self.redis {
            let sealed = self.sealer.seal(REFRESHED_PURPOSE, &serde_json::to_vec(&**session).unwrap_or_default());
            let key = format!("{KEY_PREFIX}refreshed:{}", session.id);
            redis.run::<()>(::redis::cmd("SET").arg(key).arg(sealed).arg("PX").arg(ttl.as_millis() as u64)).await?;
        }
        Ok(())
    }

    /// A newer copy of this session than the one in hand, if there is one: for a cookie session,
    /// the copy refreshed in the background after its cookie was written
    /// ([`Sessions::keep_refreshed`]); for a server-side store, its record (refreshed meanwhile by
    /// a request, perhaps on another replica). Asked only when the token in hand is due, so never
    /// on the hot path. A store or Redis that cannot answer is "none" (the refresh then goes on
    /// from the session in hand, coordinated as ever).
    pub async fn newer_copy(&self, session: &Session) -> Option<Arc<Session>> {
        let newer = |s: &Session| s.id == session.id && s.identity.sub == session.identity.sub && s.updated_at_ms > session.updated_at_ms;
        if let Some(store) = &self.store {
            let record = store.load(&session.id).await.ok()??;
            return newer(&record).then(|| Arc::new(record));
        }
        if let Some((_, copy)) = self.refreshed.get(&session.id) {
            return newer(&copy).then_some(copy);
        }
        let redis = self.redis.as_ref()?;
        let sealed: Option<String> = redis.run(::redis::cmd("GET").arg(format!("{KEY_PREFIX}refreshed:{}", session.id))).await.ok()?;
        let plain = self.sealer.open(REFRESHED_PURPOSE, &sealed?)?;
        let copy: Session = serde_json::from_slice(&plain).ok()?;
        newer(&copy).then(|| Arc::new(copy))
    }

    /// Whether and why this session ended elsewhere, asked of the store and the revocations
    /// directly (no cache): a server-side store no longer holds its record (a sign-out), or it
    /// was revoked (told apart no further: a back-channel logout, or a cookie session's sign-out).
    /// For a replica catching up on ends it was not told about.
    pub async fn ended_elsewhere(&self, session: &Session) -> Result<Option<EndReason>, StoreError> {
        if let Some(store) = &self.store {
            if store.load(&session.id).await?.is_none() {
                return Ok(Some(EndReason::Logout));
            }
        }
        Ok(self.revocations.is_revoked_uncached(session).await?.then_some(EndReason::Backchannel))
    }

    /// When `session` ends whatever happens: `created_at` + `session.max_lifetime` (unix seconds).
    pub fn deadline(&self, session: &Session) -> u64 {
        session.created_at.saturating_add(self.max_lifetime.as_secs())
    }

    /// The store handle sealed in the session cookie (server-side stores only).
    fn handle(&self, cookies: &RequestCookies) -> Option<String> {
        let sealed = self.codec.cookie().read_chunked(cookies)?;
        let handle = self.sealer.open(SESSION_HANDLE_PURPOSE, &sealed)?;
        String::from_utf8(handle).ok().filter(|h| h.len() >= 16)
    }

    /// Whether a request cookie of this name is ours (session chunks, sign-in attempts): removed
    /// before the request reaches the app.
    pub fn is_our_cookie(&self, name: &str) -> bool {
        self.codec.cookie().is_ours(name)
            || is_sign_in_cookie(&self.login_cookie_prefix, &self.trail_cookie, name)
            || self.retired.iter().any(|r| r.is_ours(name))
    }

    /// Removes the app's `Set-Cookie` fields that would write one of our cookies: the app must not
    /// plant a session (fixation), clear one, or fill the browser with fake sign-in attempts. Any
    /// case and either `__Host-`/`__Secure-` prefix count, as browsers apply prefixes without
    /// regard to case.
    pub fn drop_app_cookies_of_ours(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(header::SET_COOKIE) {
            return;
        }
        let base = self.base_name.as_bytes();
        let ours = |value: &HeaderValue| {
            let name = value.as_bytes().split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
            let name = [b"__host-".as_slice(), b"__secure-"]
                .iter()
                .find(|prefix| name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix))
                .map_or(name, |prefix| &name[prefix.len()..]);
            name.len() >= base.len() && name[..base.len()].eq_ignore_ascii_case(base)
        };
        if !headers.get_all(header::SET_COOKIE).iter().any(ours) {
            return;
        }
        let kept: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().filter(|v| !ours(v)).cloned().collect();
        tracing::warn!("the app tried to set a cookie named like the proxy's own: dropped");
        headers.remove(header::SET_COOKIE);
        for value in kept {
            headers.append(header::SET_COOKIE, value);
        }
    }

    /// Records a new sign-in attempt in its own sealed state cookie, keeping at most
    /// [`MAX_LOGIN_ATTEMPTS`] (the oldest and unreadable ones are dropped first).
    pub fn begin_login(&self, login: &LoginState, jar: &mut Jar) {
        let mut attempts: Vec<(u64, String)> = jar
            .incoming
            .iter()
            .filter(|(name, _)| name.starts_with(&self.login_cookie_prefix))
            .map(|(name, value)| (self.open_login_state(value).map(|s| s.started_at).unwrap_or(0), name.to_string()))
            .collect();
        attempts.sort();
        let excess = (attempts.len() + 1).saturating_sub(MAX_LOGIN_ATTEMPTS);
        for (_, name) in attempts.into_iter().take(excess) {
            jar.outgoing.push(self.codec.cookie().single(&name, "", Duration::ZERO));
        }
        let sealed = self.sealer.seal(LOGIN_STATE_PURPOSE, &serde_json::to_vec(login).unwrap_or_default());
        let name = self.login_cookie_name(&login.state);
        jar.outgoing.push(self.codec.cookie().single(&name, &sealed, LOGIN_STATE_TTL));
    }

    /// The sign-in attempt the callback's `state` parameter names, if this browser started it, it
    /// has not expired, and the states match (constant time). Its cookie is expired either way:
    /// a state serves once.
    pub fn take_login(&self, state_param: &str, jar: &mut Jar) -> Option<LoginState> {
        let cookie_name = self.login_cookie_name(state_param);
        let value = jar.incoming.get(&cookie_name)?;
        let login = self.open_login_state(value).filter(|l| constant_time_eq(l.state.as_bytes(), state_param.as_bytes()));
        jar.outgoing.push(self.codec.cookie().single(&cookie_name, "", Duration::ZERO));
        login
    }

    /// Whether the request carries any sign-in attempt's cookie at all (valid or not).
    pub fn has_login_cookies(&self, jar: &Jar) -> bool {
        jar.incoming.iter().any(|(name, _)| name.starts_with(&self.login_cookie_prefix))
    }

    /// Records a completed sign-in in the trail cookie ([`super::sign_ins`]), with the size of the
    /// session cookies this answer sets. Call after [`Sessions::save`].
    pub fn note_sign_in(&self, jar: &mut Jar) {
        let previous = jar.incoming.get(&self.trail_cookie).and_then(SignInTrail::parse);
        let session_cookies = jar.outgoing.iter().filter(|v| {
            let name = v.as_bytes().split(|&b| b == b'=').next().unwrap_or_default();
            std::str::from_utf8(name).is_ok_and(|name| self.codec.cookie().is_ours(name))
        });
        let bytes = u32::try_from(sent_back_bytes(session_cookies)).unwrap_or(u32::MAX);
        let trail = SignInTrail::after_sign_in(previous, self.sealer.fingerprint(), self.replica, bytes, now_secs());
        jar.outgoing.push(self.codec.cookie().single(&self.trail_cookie, &trail.encode(), Duration::from_secs(WINDOW_SECS)));
    }

    /// Whether this request — a navigation without a session — comes after [`LOOP_AFTER`] sign-ins
    /// completed within the last minute: a loop, with what can be told about its cause. `Err`: the
    /// store could not say whether it knows the session.
    pub async fn looping(&self, jar: &Jar) -> Result<Option<LoopFacts>, StoreError> {
        if jar.ended {
            return Ok(None);
        }
        let Some(trail) = jar.incoming.get(&self.trail_cookie).and_then(SignInTrail::parse) else { return Ok(None) };
        let recent = trail.recent(now_secs());
        if recent < LOOP_AFTER {
            return Ok(None);
        }
        // A revoked session (a back-channel logout, a sign-out elsewhere) ended normally; so did one
        // the proxy ended itself, whose answer expired the trail (`end`). Signing in is the way on.
        let Some(trouble) = self.trouble(&jar.incoming).await? else { return Ok(None) };
        Ok(Some(LoopFacts {
            recent,
            trouble,
            other_secret: trail.key != self.sealer.fingerprint(),
            other_replica: trail.replica != self.replica,
            server_side: self.store.is_some(),
            shared_store: self.store.as_ref().is_some_and(|s| s.shared()),
            trail,
        }))
    }

    /// Why this request's cookies hold no session (the diagnosis path only: [`Sessions::load`]
    /// answers the request path, and says nothing of why); `None` when its session was revoked —
    /// a back-channel logout, a sign-out elsewhere —, which is no loop.
    async fn trouble(&self, cookies: &RequestCookies) -> Result<Option<SessionTrouble>, StoreError> {
        if !self.has_cookie(cookies) {
            return Ok(Some(SessionTrouble::NoCookie));
        }
        let session = match &self.store {
            None => match self.codec.load(cookies) {
                Some(session) => (*session).clone(),
                None => return Ok(Some(SessionTrouble::Unreadable)),
            },
            Some(store) => match self.handle(cookies) {
                None => return Ok(Some(SessionTrouble::Unreadable)),
                // Removed here because it was revoked (`load`).
                Some(handle) if self.ended_here.contains_key(&handle) => return Ok(None),
                Some(handle) => match store.load(&handle).await? {
                    Some(session) => session,
                    None => return Ok(Some(SessionTrouble::UnknownHandle)),
                },
            },
        };
        // It opens and was not revoked, yet it is refused: its times do not fit.
        Ok((!self.revocations.is_revoked(&session).await?).then_some(SessionTrouble::Ended))
    }

    /// Expires every sign-in attempt's cookie the request carries, and the sign-in trail
    /// (sign-out).
    pub fn clear_logins(&self, jar: &mut Jar) {
        let names: Vec<String> = jar
            .incoming
            .iter()
            .filter(|(name, _)| is_sign_in_cookie(&self.login_cookie_prefix, &self.trail_cookie, name))
            .map(|(name, _)| name.to_string())
            .collect();
        for name in names {
            jar.outgoing.push(self.codec.cookie().single(&name, "", Duration::ZERO));
        }
    }

    fn login_cookie_name(&self, state: &str) -> String {
        // The state is random base64url; its first 12 characters name the attempt's cookie.
        let id: String = state.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
        format!("{}{}", self.login_cookie_prefix, id)
    }

    fn open_login_state(&self, value: &str) -> Option<LoginState> {
        open_login_state(&self.sealer, value, now_secs())
    }
}

/// Bytes of `Set-Cookie` values as the browser sends them back: their `name=value` parts, those
/// expiring a cookie (empty value) not counted.
fn sent_back_bytes<'v>(values: impl Iterator<Item = &'v HeaderValue>) -> usize {
    values.map(|v| v.as_bytes().split(|&b| b == b';').next().filter(|pair| !pair.ends_with(b"=")).map_or(0, <[u8]>::len)).sum()
}

/// The sign-in attempt a state cookie value holds, if it opens and has not expired at `now`.
/// Public for the fuzz targets ([`crate::fuzz`]).
#[doc(hidden)]
pub fn open_login_state(sealer: &Sealer, value: &str, now: u64) -> Option<LoginState> {
    let plain = sealer.open(LOGIN_STATE_PURPOSE, value)?;
    let state: LoginState = serde_json::from_slice(&plain).ok()?;
    // Unexpired, and not started later than now (a minute of clock skew between replicas).
    let fresh = state.started_at.saturating_add(LOGIN_STATE_TTL.as_secs()) >= now
        && state.started_at <= now.saturating_add(60);
    fresh.then_some(state)
}
