//! One client connection as the limits see it (`Connection`): the counters its requests and
//! responses bump, the progress words of its responses (`next_progress`, HTTP/2's `Stream`),
//! and the sweeper's orders. Shared by the accept loop ([`super::listener`]), the requests in flight
//! ([`super::inflight`]) and the sweeper; it uses neither of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::Notify;

use super::Limits;
use crate::body::Body;
use crate::tls::serving::ClientTls;

/// Which listener a connection came in on; each has its own connection cap and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// `listen`: the proxy itself.
    Main,
    /// `metrics_listen`: the admin listener.
    Metrics,
    /// `http_redirect_listen`: plain http sent to https.
    Redirect,
    /// `grpc_authz_listen`: Envoy's external authorization over gRPC (HTTP/2 only).
    GrpcAuthz,
}

impl ListenerKind {
    /// The `listener` label value.
    pub fn label(self) -> &'static str {
        match self {
            ListenerKind::Main => "main",
            ListenerKind::Metrics => "metrics",
            ListenerKind::Redirect => "http_redirect",
            ListenerKind::GrpcAuthz => "grpc_authz",
        }
    }
}

/// What the sweeper asks of a connection's task.
pub(super) const NOTHING: u8 = 0;
pub(super) const DRAIN: u8 = 1;
pub(super) const CLOSE: u8 = 2;

/// `requests`: requests begun in the high half, in flight in the low half.
pub(super) const BEGUN: u64 = 1 << 32;
pub(super) const IN_FLIGHT_MASK: u64 = BEGUN - 1;

/// Low bit of a response's progress word: the proxy is waiting for the app (1), or the client has
/// data to take (0). The other bits count the polls, so a word that did not change means a body
/// that was not asked for anything since.
pub(super) const APP_TURN: u64 = 1;

/// The next progress word after `word`: one more poll, now in `app`'s turn or the client's.
pub(super) fn next_progress(word: u64, app: bool) -> u64 {
    ((word >> 1).wrapping_add(1) << 1) | u64::from(app)
}

/// One client connection as the limits see it: its requests and responses in flight, and the
/// sweeper's orders. Shared by the connection's task, its requests and the sweeper; a websocket
/// tunnel keeps it too, so the connection counts as open until the tunnel closes.
pub(crate) struct Connection {
    pub(super) limits: Arc<Limits>,
    pub(super) kind: ListenerKind,
    pub(super) peer: SocketAddr,
    /// Requests begun (high half) and in flight (low half): see [`BEGUN`].
    pub(super) requests: AtomicU64,
    /// Whether requests came over HTTP/2 (set by the first one).
    pub(super) http2: AtomicBool,
    /// HTTP/1: the progress word ([`APP_TURN`]) of the response being sent.
    pub(super) progress: AtomicU64,
    /// HTTP/2: the responses being sent.
    pub(super) streams: Mutex<Vec<Arc<Stream>>>,
    /// [`NOTHING`], [`DRAIN`] or [`CLOSE`]; only ever raised.
    pub(super) command: AtomicU8,
    pub(super) wake: Notify,
    /// Counted in its listener's open connections (false once its place went to a newcomer).
    pub(super) counted: AtomicBool,
    /// What its TLS handshake established (set once, before its first request).
    pub(super) tls: OnceLock<ClientTls>,
}

impl Connection {
    /// A connection of `kind`'s listener from `peer`, already counted in its open connections.
    pub(super) fn new(limits: Arc<Limits>, kind: ListenerKind, peer: SocketAddr) -> Connection {
        Connection {
            limits,
            kind,
            peer,
            requests: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
            command: AtomicU8::new(NOTHING),
            wake: Notify::new(),
            counted: AtomicBool::new(true),
            tls: OnceLock::new(),
        }
    }

    /// The client's address (the TCP peer).
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The subject of the client's certificate (mutual TLS).
    pub(crate) fn client_subject(&self) -> Option<&str> {
        self.tls.get().and_then(|t| t.subject.as_deref())
    }

    pub(super) fn order(&self, command: u8) {
        self.command.fetch_max(command, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(super) fn in_flight(&self) -> u64 {
        self.requests.load(Ordering::Relaxed) & IN_FLIGHT_MASK
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.counted.load(Ordering::Relaxed) {
            self.limits.listener(self.kind).open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the sweeper makes of one HTTP/2 response.
pub(super) enum StreamVerdict {
    /// Moved since the last look (the app sent, or the client took, a part).
    Moving,
    /// Waiting for the app, or for the client not long enough to matter (or abandoned, not
    /// long enough ago to give up).
    Fine,
    /// Not taken for `send_timeout`: drop the app's side.
    Abandon,
    /// Abandoned `send_timeout` ago and still not taken: close the connection.
    GiveUp,
}

/// The sweeper's notes on one HTTP/2 response.
#[derive(Debug, Default)]
pub(super) struct StreamMark {
    seen: u64,
    since: u64,
    abandoned: Option<u64>,
}

impl StreamMark {
    /// Updates the notes with the response's `progress` word at tick `now`.
    pub(super) fn check(&mut self, progress: u64, now: u64, send: u64) -> StreamVerdict {
        if let Some(at) = self.abandoned {
            return if now - at >= send { StreamVerdict::GiveUp } else { StreamVerdict::Fine };
        }
        if progress != self.seen {
            self.seen = progress;
            self.since = now;
            StreamVerdict::Moving
        } else if progress & APP_TURN != 0 {
            self.since = now;
            StreamVerdict::Fine
        } else if now - self.since >= send {
            self.abandoned = Some(now);
            StreamVerdict::Abandon
        } else {
            StreamVerdict::Fine
        }
    }
}

/// An HTTP/2 response body, where the sweeper can reach it: hyper polls each stream's body from a
/// task of its own, and stops polling altogether while the client's window is closed, so no code
/// of ours would run to notice the stall. The sweeper drops the body from here.
pub(crate) struct Stream {
    pub(super) body: Mutex<Option<Body>>,
    pub(super) progress: AtomicU64,
    pub(super) mark: Mutex<StreamMark>,
}

impl Stream {
    pub(super) fn check(&self, now: u64, send: u64) -> StreamVerdict {
        let progress = self.progress.load(Ordering::Relaxed);
        self.mark.lock().unwrap_or_else(PoisonError::into_inner).check(progress, now, send)
    }

    pub(super) fn take_body(&self) -> Option<Body> {
        self.body.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_words_change_on_every_poll_and_say_whose_turn_it_is() {
        let a = next_progress(0, false);
        let b = next_progress(a, false);
        assert_ne!(a, b);
        assert_eq!(next_progress(b, true) & APP_TURN, APP_TURN);
        assert_eq!(b & APP_TURN, 0);
    }

    #[test]
    fn a_response_is_abandoned_only_while_the_client_has_data_it_does_not_take() {
        let send = 4;
        let mut mark = StreamMark::default();
        let client_turn = next_progress(0, false);
        // The app is quiet for a long time: never abandoned.
        let app_turn = next_progress(client_turn, true);
        assert!(matches!(mark.check(app_turn, 1, send), StreamVerdict::Moving));
        for now in 2..100 {
            assert!(matches!(mark.check(app_turn, now, send), StreamVerdict::Fine));
        }
        // The app sent a chunk (the client's turn now) that is not taken.
        let waiting = next_progress(app_turn, false);
        assert!(matches!(mark.check(waiting, 100, send), StreamVerdict::Moving), "the chunk was sent");
        for now in 101..104 {
            assert!(matches!(mark.check(waiting, now, send), StreamVerdict::Fine), "tick {now}");
        }
        assert!(matches!(mark.check(waiting, 104, send), StreamVerdict::Abandon));
        assert!(matches!(mark.check(waiting, 107, send), StreamVerdict::Fine));
        assert!(matches!(mark.check(waiting, 108, send), StreamVerdict::GiveUp));
    }
}
