//! Open connections and the sessions they were opened for.
//!
//! A session is checked when a request arrives; a websocket or a streaming response opened while
//! the user was signed in would outlive the session for hours. So every such connection is
//! tracked here under its session, holding a [`Cutter`] for its [`crate::tether::Tether`], and
//! ends when the session does:
//!
//! - at once, on this replica, when the session ends here ([`OpenConnections::end`]: a sign-out,
//!   a back-channel logout, a refresh Trousseau refused);
//! - on the other replicas through Redis, when one is configured: the end is published on a
//!   channel every replica listens to (`crate::pipeline::connections` subscribes, and checks
//!   every tracked session against the revocations whenever it (re)subscribes, so an end
//!   published while a replica was cut off from Redis is not missed);
//! - when the refreshed claims no longer meet the route's rule ([`OpenConnections::refreshed`]);
//! - at `session.max_lifetime` ([`OpenConnections::sweep`], once a second).
//!
//! Between those events nothing is checked: the connection pays one atomic load per poll, the
//! registry is touched when a connection is first tracked and by the sweep. A response body is
//! tracked only once it proves long (a second frame, or a wait for the app, see [`body`]), and
//! not at all when its `Content-Length` is at most 64 KiB (`crate::pipeline`'s forward step): the
//! answers that fit in one read never are. A connection that ends by itself frees its entry at
//! the next sweep.

pub mod body;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Method, Uri};

use crate::policy::{Decision, Policy};
use crate::session::redis::Redis;
use crate::session::Session;
use crate::tether::{Cutter, EndReason};

/// Independent locks: a connection tracked on one worker never waits for another's.
const SHARDS: usize = 16;

/// The shard of a session id: its last byte (ids are random base64url; a bearer session's
/// `bearer-<hex>` ends in hex).
fn shard_index(id: &str) -> usize {
    id.bytes().last().map_or(0, usize::from) % SHARDS
}

/// What kind of connection, for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A websocket spliced to the app.
    Websocket,
    /// A response body streaming from the app (SSE, chunked, a download).
    Stream,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Websocket => "websocket",
            Kind::Stream => "stream",
        }
    }
}

/// The request a connection answers: what is needed to track it and to judge it again.
#[derive(Clone)]
pub struct Opened {
    /// The session it was opened for.
    pub session: Arc<Session>,
    /// The API client's `Authorization` value, when the session came from a bearer token: checked
    /// again with Trousseau when its check expires.
    pub bearer: Option<HeaderValue>,
    /// The request's method and target, for the route rules.
    pub method: Method,
    /// See `method`.
    pub uri: Uri,
    /// For the log line.
    pub request_id: HeaderValue,
}

/// Which sessions ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// This one session (its id): a sign-out, a refused refresh.
    Session(String),
    /// Every session of Trousseau's session `sid`.
    Sid(String),
    /// Every session of this user begun at or before `at` (unix seconds).
    Sub {
        /// The user.
        sub: String,
        /// Sessions created later are not affected.
        at: u64,
    },
}

impl Target {
    fn matches(&self, id: &str, session: &Session) -> bool {
        match self {
            Target::Session(ended) => ended == id,
            Target::Sid(sid) => session.sid.as_deref() == Some(sid.as_str()),
            Target::Sub { sub, at } => session.identity.sub == *sub && session.created_at <= *at,
        }
    }

    /// The message published to the other replicas: `<reason> <kind> <value>`.
    fn message(&self, reason: EndReason) -> String {
        match self {
            Target::Session(id) => format!("{} session {id}", reason.as_str()),
            Target::Sid(sid) => format!("{} sid {sid}", reason.as_str()),
            Target::Sub { sub, at } => format!("{} sub {at} {sub}", reason.as_str()),
        }
    }

    /// Reads [`Target::message`] back.
    pub fn parse(message: &str) -> Option<(Target, EndReason)> {
        let (reason, rest) = message.split_once(' ')?;
        let reason = EndReason::parse(reason)?;
        let (kind, value) = rest.split_once(' ')?;
        let target = match kind {
            "session" => Target::Session(value.to_string()),
            "sid" => Target::Sid(value.to_string()),
            "sub" => {
                let (at, sub) = value.split_once(' ')?;
                Target::Sub { sub: sub.to_string(), at: at.parse().ok()? }
            }
            _ => return None,
        };
        Some((target, reason))
    }
}

/// One tracked connection. Its text is copied out of the request: a `Uri` or `HeaderValue` from
/// the request would keep hyper's whole read buffer of that connection alive (about 16 KB a
/// websocket, measured with `bench/connections.sh`).
struct Connection {
    cutter: Cutter,
    kind: Kind,
    method: Method,
    path: Box<str>,
    request_id: Box<str>,
}

/// The open connections of one session.
struct Group {
    session: Arc<Session>,
    bearer: Option<HeaderValue>,
    connections: Vec<Connection>,
    /// A background check (refresh, bearer check) is running: the sweep starts no other.
    checking: bool,
}

/// A session whose token is due, handed to the background check by [`OpenConnections::sweep`].
pub struct Due {
    /// The session as the connections know it.
    pub session: Arc<Session>,
    /// The bearer token it came from, if it did.
    pub bearer: Option<HeaderValue>,
}

/// Every tracked connection, by session. See the module documentation.
pub struct OpenConnections {
    enabled: bool,
    shards: Box<[Mutex<HashMap<String, Group>>]>,
    ended: [AtomicU64; EndReason::ALL.len()],
    /// Connections tracked at the last sweep.
    open: AtomicU64,
    /// Publishes ends to the other replicas.
    redis: Option<(Arc<Redis>, String)>,
    /// The ends of the last [`LATE_WINDOW`], newest last: a connection tracked after its session
    /// ended — a stream is tracked once it proves long, a websocket once the app switched
    /// protocols, both after the request was authenticated — is cut as it is tracked.
    recent: Mutex<VecDeque<(Instant, Target, EndReason)>>,
}

/// How long an end is remembered for connections tracked late ([`OpenConnections::track`]).
const LATE_WINDOW: Duration = Duration::from_secs(60);

/// At most this many recent ends are remembered (the oldest go first).
const LATE_MAX: usize = 4096;

impl OpenConnections {
    /// A registry, tracking nothing when `enabled` is false (`session.end_open_connections`).
    /// With `redis`, ends are published on `channel` for the other replicas.
    pub fn new(enabled: bool, redis: Option<Arc<Redis>>, channel: String) -> OpenConnections {
        OpenConnections {
            enabled,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            ended: std::array::from_fn(|_| AtomicU64::new(0)),
            open: AtomicU64::new(0),
            redis: redis.map(|r| (r, channel)),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether connections are tracked at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The Redis channel ends are published on, when there is one.
    pub fn channel(&self) -> Option<(&Arc<Redis>, &str)> {
        self.redis.as_ref().map(|(r, c)| (r, c.as_str()))
    }

    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.shards[shard_index(id)].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tracks a connection under its session.
    pub fn track(&self, opened: Opened, kind: Kind, cutter: Cutter) {
        if !self.enabled {
            return;
        }
        let Opened { session, bearer, method, uri, request_id } = opened;
        let connection = Connection {
            cutter,
            kind,
            method,
            path: uri.path().into(),
            request_id: request_id.to_str().unwrap_or("-").into(),
        };
        let mut shard = self.shard(&session.id);
        // Under the shard's lock: an end that comes after this look finds the connection in the
        // shard (it remembers, then scans), one that came before is in `recent`.
        if let Some(reason) = self.ended_lately(&session) {
            drop(shard);
            self.cut(&session, &connection, reason);
            return;
        }
        let group = shard.entry(session.id.clone()).or_insert_with(|| Group {
            session: session.clone(),
            bearer: bearer.and_then(|b| HeaderValue::from_bytes(b.as_bytes()).ok()),
            connections: Vec::new(),
            checking: false,
        });
        if session.updated_at_ms > group.session.updated_at_ms {
            group.session = session;
        }
        group.connections.push(connection);
    }

    /// Ends the connections of the sessions `target` names, here, and publishes the end to the
    /// other replicas. Returns how many connections ended here.
    pub async fn end(&self, target: Target, reason: EndReason) -> usize {
        if !self.enabled {
            return 0;
        }
        let ended = self.end_here(&target, reason);
        if let Some((redis, channel)) = &self.redis {
            let message = target.message(reason);
            // Redis logs its own failures once; the revocation itself was recorded (or refused)
            // by the caller, and a replica that missed this checks again when it resubscribes.
            let _ = redis.run::<i64>(::redis::cmd("PUBLISH").arg(channel.as_str()).arg(message)).await;
        }
        ended
    }

    /// Ends, on this replica only, the connections of the sessions `target` names (an end
    /// published by another replica).
    pub fn end_here(&self, target: &Target, reason: EndReason) -> usize {
        if !self.enabled {
            return 0;
        }
        self.remember(target, reason);
        let mut ended = Vec::new();
        // One session lives in one shard; a `sid` or a user may be in any.
        let shards = match target {
            Target::Session(id) => {
                let index = shard_index(id);
                &self.shards[index..=index]
            }
            _ => &self.shards[..],
        };
        for shard in shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|id, group| {
                let hit = target.matches(id, &group.session);
                if hit {
                    ended.extend(std::mem::take(&mut group.connections).into_iter().map(|c| (group.session.clone(), c)));
                }
                !hit
            });
        }
        ended.into_iter().filter(|(session, c)| self.cut(session, c, reason)).count()
    }

    /// The session was refreshed (by a request, or in the background): its connections go on
    /// with it, except those whose route the new claims no longer allow.
    pub fn refreshed(&self, session: &Arc<Session>, policy: &Policy) {
        if !self.enabled {
            return;
        }
        let denied: Vec<Connection>;
        {
            let mut shard = self.shard(&session.id);
            let Some(group) = shard.get_mut(&session.id) else { return };
            group.checking = false;
            if session.updated_at_ms < group.session.updated_at_ms {
                return;
            }
            group.session = session.clone();
            let (allowed, refused) = std::mem::take(&mut group.connections)
                .into_iter()
                .partition(|c| matches!(policy.authorize(session, &c.method, &c.path), Decision::Allow));
            group.connections = allowed;
            denied = refused;
        }
        for c in denied {
            self.cut(session, &c, EndReason::Policy);
        }
    }

    /// The background check of this session ended without news: the next sweep may start another.
    pub fn checked(&self, id: &str) {
        if let Some(group) = self.shard(id).get_mut(id) {
            group.checking = false;
        }
    }

    /// Once a second: forgets connections that ended by themselves, ends those past
    /// `deadline(session)` (`max_lifetime`), and returns the sessions whose token is `due` and
    /// that no background check is looking at yet (now marked as checked).
    /// `due` is told whether the session came from a bearer token.
    pub fn sweep(&self, now: u64, deadline: impl Fn(&Session) -> u64, due: impl Fn(&Session, bool) -> bool) -> Vec<Due> {
        let mut work = Vec::new();
        let mut expired = Vec::new();
        let mut open = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|_, group| {
                group.connections.retain(|c| c.cutter.is_open());
                if group.connections.is_empty() {
                    return false;
                }
                if group.bearer.is_none() && now >= deadline(&group.session) {
                    expired.extend(std::mem::take(&mut group.connections).into_iter().map(|c| (group.session.clone(), c)));
                    return false;
                }
                open += group.connections.len() as u64;
                if !group.checking && due(&group.session, group.bearer.is_some()) {
                    group.checking = true;
                    work.push(Due { session: group.session.clone(), bearer: group.bearer.clone() });
                }
                true
            });
        }
        self.open.store(open, Ordering::Relaxed);
        for (session, c) in expired {
            self.cut(&session, &c, EndReason::Lifetime);
        }
        work
    }

    /// Every tracked session, to check against the store and the revocations, with whether it
    /// came from a bearer token (no store holds those).
    pub fn sessions(&self) -> Vec<(Arc<Session>, bool)> {
        let shards = self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner));
        shards.flat_map(|s| s.values().map(|g| (g.session.clone(), g.bearer.is_some())).collect::<Vec<_>>()).collect()
    }

    fn cut(&self, session: &Session, c: &Connection, reason: EndReason) -> bool {
        if !c.cutter.cut(reason) {
            return false;
        }
        self.ended[reason as usize - 1].fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            sub = %session.identity.sub,
            reason = reason.as_str(),
            request_id = &*c.request_id,
            kind = c.kind.as_str(),
            "open connection ended with its session"
        );
        true
    }

    /// Keeps an end for the connections tracked after it ([`LATE_WINDOW`]).
    fn remember(&self, target: &Target, reason: EndReason) {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        while recent.front().is_some_and(|(at, _, _)| now.duration_since(*at) > LATE_WINDOW) || recent.len() >= LATE_MAX {
            recent.pop_front();
        }
        recent.push_back((now, target.clone(), reason));
    }

    /// Why `session` ended within the last [`LATE_WINDOW`], if an end names it.
    fn ended_lately(&self, session: &Session) -> Option<EndReason> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().rev().find(|(at, target, _)| at.elapsed() <= LATE_WINDOW && target.matches(&session.id, session)).map(|(_, _, reason)| *reason)
    }

    /// Connections ended, by reason (for metrics).
    pub fn ended(&self) -> impl Iterator<Item = (EndReason, u64)> + '_ {
        EndReason::ALL.into_iter().map(|r| (r, self.ended[r as usize - 1].load(Ordering::Relaxed)))
    }

    /// Connections tracked at the last sweep (for metrics).
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tether::Tether;

    fn session(id: &str, sub: &str, sid: Option<&str>, created_at: u64) -> Arc<Session> {
        Arc::new(Session { sid: sid.map(Into::into), created_at, ..crate::session::sample(id, sub) })
    }

    fn open(registry: &OpenConnections, session: &Arc<Session>, kind: Kind) -> Tether {
        let tether = Tether::new();
        let opened = Opened {
            session: session.clone(),
            bearer: None,
            method: Method::GET,
            uri: Uri::from_static("/live"),
            request_id: HeaderValue::from_static("r"),
        };
        registry.track(opened, kind, tether.cutter());
        tether
    }

    #[test]
    fn an_end_reaches_exactly_the_connections_it_names() {
        let registry = OpenConnections::new(true, None, String::new());
        let a1 = session("a1", "alice", Some("sid-a"), 100);
        let a2 = session("a2", "alice", Some("sid-b"), 300);
        let b = session("b1", "bob", Some("sid-c"), 100);
        let (ta1, ta1b, ta2, tb) = (open(&registry, &a1, Kind::Websocket), open(&registry, &a1, Kind::Stream), open(&registry, &a2, Kind::Websocket), open(&registry, &b, Kind::Stream));

        assert_eq!(registry.end_here(&Target::Sid("sid-a".into()), EndReason::Backchannel), 2);
        assert_eq!((ta1.ended(), ta1b.ended()), (Some(EndReason::Backchannel), Some(EndReason::Backchannel)));
        assert_eq!(ta2.ended(), None);
        // A user's logout reaches the sessions begun before it only.
        assert_eq!(registry.end_here(&Target::Sub { sub: "alice".into(), at: 200 }, EndReason::Backchannel), 0);
        assert_eq!(registry.end_here(&Target::Session("a2".into()), EndReason::Logout), 1);
        assert_eq!(ta2.ended(), Some(EndReason::Logout));
        assert_eq!(tb.ended(), None);
        assert_eq!(registry.ended().find(|(r, _)| *r == EndReason::Backchannel).unwrap().1, 2);
    }

    #[test]
    fn a_connection_tracked_after_its_session_ended_is_cut_as_it_is_tracked() {
        // A stream is tracked once it proves long, after the request was authenticated: a logout
        // in between must still reach it (found by the soak).
        let registry = OpenConnections::new(true, None, String::new());
        assert_eq!(registry.end_here(&Target::Sid("sid-a".into()), EndReason::Backchannel), 0);
        assert_eq!(registry.end_here(&Target::Sub { sub: "bob".into(), at: 200 }, EndReason::Backchannel), 0);
        let late = open(&registry, &session("a1", "alice", Some("sid-a"), 100), Kind::Stream);
        assert_eq!(late.ended(), Some(EndReason::Backchannel));
        let bobs_old = open(&registry, &session("b1", "bob", Some("sid-b"), 150), Kind::Websocket);
        assert_eq!(bobs_old.ended(), Some(EndReason::Backchannel));
        // Sessions the ends do not name go on: another sid, a session begun after the user's logout.
        let other = open(&registry, &session("a2", "alice", Some("sid-c"), 100), Kind::Stream);
        let bobs_new = open(&registry, &session("b2", "bob", Some("sid-d"), 300), Kind::Stream);
        assert_eq!((other.ended(), bobs_new.ended()), (None, None));
        assert_eq!(registry.ended().find(|(r, _)| *r == EndReason::Backchannel).unwrap().1, 2);
    }

    #[test]
    fn the_sweep_forgets_closed_connections_and_ends_those_past_their_lifetime() {
        let registry = OpenConnections::new(true, None, String::new());
        let old = session("old", "alice", None, 100);
        let young = session("young", "bob", None, 1_000);
        let t_old = open(&registry, &old, Kind::Stream);
        drop(open(&registry, &young, Kind::Stream));
        let t_young = open(&registry, &young, Kind::Websocket);
        let due = registry.sweep(1_050, |s| s.created_at + 900, |s, _| s.id == "young");
        assert_eq!(t_old.ended(), Some(EndReason::Lifetime));
        assert_eq!(t_young.ended(), None);
        assert_eq!(registry.open(), 1, "the closed connection is forgotten");
        assert_eq!(due.len(), 1);
        assert!(registry.sweep(1_051, |s| s.created_at + 900, |_, _| true).is_empty(), "one check at a time");
        registry.checked("young");
        assert_eq!(registry.sweep(1_052, |s| s.created_at + 900, |_, _| true).len(), 1);
    }

    #[test]
    fn nothing_is_tracked_or_ended_when_switched_off() {
        let registry = OpenConnections::new(false, None, String::new());
        let s = session("s", "alice", None, 0);
        let t = open(&registry, &s, Kind::Stream);
        assert_eq!(registry.end_here(&Target::Session("s".into()), EndReason::Logout), 0);
        assert_eq!(t.ended(), None);
    }

    #[test]
    fn published_ends_read_back() {
        for target in [Target::Session("abc".into()), Target::Sid("s 1".into()), Target::Sub { sub: "u v".into(), at: 42 }] {
            assert_eq!(Target::parse(&target.message(EndReason::Policy)), Some((target, EndReason::Policy)));
        }
        for bad in ["", "logout", "logout session", "nope session x", "logout sub x y", "logout other x"] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }
}
