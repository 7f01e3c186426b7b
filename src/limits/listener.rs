//! Accepting connections and keeping watch over them: the one accept loop of the main listener, of
//! `metrics_listen`, `http_redirect_listen` and `grpc_authz_listen`.
//!
//! [`serve_connections`] accepts while the listener has room (`max_connections`, counted across
//! the worker threads), serves each connection in a task of its own, and registers it with the
//! worker's [`Registry`]. No timer is armed per connection or per request: the connection and its
//! responses only bump counters ([`super::connection`]), and one sweeper task per worker looks at every
//! connection a few times per timeout and decides:
//!
//! - no complete request head `header_timeout` after accept (a silent socket, a slowloris head, an
//!   HTTP/2 preface with no request): closed;
//! - nothing in flight for `idle_timeout` (HTTP/1 keep-alive, an idle HTTP/2 connection): drained —
//!   HTTP/1 closes at once, HTTP/2 sends `GOAWAY` — and closed if it has not ended soon after;
//! - a response whose body the client has not taken for `send_timeout` while the proxy had data
//!   for it: on HTTP/1 the connection is closed (that socket is stuck anyway); on HTTP/2 the app's
//!   side of the stream is dropped at once (its connection to the app closes, its buffers are
//!   freed) and the stream ends with an error the next time the client reads it — and if it still
//!   has not, `send_timeout` later, the whole connection is closed.
//!
//! A response waiting for the app (an event stream quiet for an hour) is never stalled: the clock
//! runs only while the proxy holds data that the client is not taking.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::balance::{Inbox, Placed, Placer, Seat, Worker};
use super::connection::{Connection, ListenerKind};
use super::connection::{StreamVerdict, APP_TURN, CLOSE, DRAIN, IN_FLIGHT_MASK};
use super::inflight::Tracked;
use super::{CloseReason, Limits};
use crate::tls::serving::{handshake, ClientStream};

/// How often each worker gives the memory it freed back to the system ([`super::release_memory`]).
const RELEASE_MEMORY_EVERY: Duration = Duration::from_secs(5);

/// The sweeper's notes on one connection, in ticks of its clock.
struct Entry {
    conn: Arc<Connection>,
    /// The generation of the TLS door it came through ([`crate::tls::serving::Door`]).
    door_generation: u64,
    accepted: u64,
    /// A request head has come (the count of requests begun wraps after 2^32).
    served: bool,
    seen_requests: u64,
    quiet_since: u64,
    seen_progress: u64,
    stalled_since: u64,
    /// HTTP/2: when the client last did something (a request begun or ended, a response moving).
    active_at: u64,
    /// When it was told to drain (idle) or close.
    ordered: Option<(u64, u8)>,
}

/// One worker's connections, for its sweeper and for eviction.
struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// The sweeper's clock, in ticks.
    now: AtomicU64,
    emptied: Notify,
    /// Re-derived when a reload changes the timeouts (the period stays: the sweeper's clock).
    ticks: Mutex<Ticks>,
    /// The settings `ticks` was derived from.
    timed_by: Mutex<Arc<super::LimitSettings>>,
}

/// The timeouts in sweeper ticks.
#[derive(Clone, Copy, Debug)]
struct Ticks {
    period: Duration,
    header: u64,
    idle: u64,
    send: u64,
    /// How long a drained connection may take to end before it is closed.
    drain_grace: u64,
}

impl Ticks {
    fn new(limits: &super::LimitSettings) -> Ticks {
        let shortest = limits.header_timeout.min(limits.idle_timeout).min(limits.send_timeout);
        // A few looks per timeout: a connection is closed at most an eighth late.
        Ticks::with_period(limits, (shortest / 8).clamp(Duration::from_millis(5), Duration::from_secs(1)))
    }

    /// The timeouts of `limits` counted in ticks of `period` (a reload keeps the sweeper's period:
    /// a timeout shortened below eight periods is then checked less finely, never later than one
    /// period past it).
    fn with_period(limits: &super::LimitSettings, period: Duration) -> Ticks {
        let ticks = |d: Duration| d.as_nanos().div_ceil(period.as_nanos()).max(1) as u64;
        Ticks {
            period,
            header: ticks(limits.header_timeout),
            idle: ticks(limits.idle_timeout),
            send: ticks(limits.send_timeout),
            drain_grace: ticks(Duration::from_secs(5).min(limits.idle_timeout)),
        }
    }
}

impl Registry {
    fn new(settings: &Arc<super::LimitSettings>) -> Registry {
        Registry {
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            now: AtomicU64::new(0),
            emptied: Notify::new(),
            ticks: Mutex::new(Ticks::new(settings)),
            timed_by: Mutex::new(Arc::clone(settings)),
        }
    }

    /// The timeouts in force, re-derived first when `limits` has new settings (a reload).
    fn ticks(&self, limits: &Limits) -> Ticks {
        let settings = limits.settings();
        let mut timed_by = self.timed_by.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ticks = self.ticks.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&timed_by, &settings) {
            *ticks = Ticks::with_period(&settings, ticks.period);
            *timed_by = settings;
        }
        *ticks
    }

    /// Drains the connections that came through the TLS door before `generation` (a reload
    /// changed the clients it accepts): their requests finish, then they close.
    fn drain_before(&self, generation: u64) {
        let now = self.now.load(Ordering::Relaxed);
        let mut drained = 0;
        for entry in self.entries.lock().unwrap_or_else(PoisonError::into_inner).values_mut() {
            if entry.door_generation < generation && entry.ordered.is_none() {
                entry.conn.order(DRAIN);
                entry.ordered = Some((now, DRAIN));
                drained += 1;
            }
        }
        if drained > 0 {
            tracing::info!(drained, "the clients accepted over TLS changed (tls.client_ca_file): connections opened before are closed once their requests finish");
        }
    }

    fn insert(&self, conn: Arc<Connection>, door_generation: u64) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.now.load(Ordering::Relaxed);
        let entry = Entry { conn, door_generation, accepted: now, served: false, seen_requests: 0, quiet_since: now, seen_progress: 0, stalled_since: now, active_at: now, ordered: None };
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).insert(id, entry);
        id
    }

    fn remove(&self, id: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(&id);
        if entries.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Orders every connection to drain or close (server shutdown); the sweeper then treats them
    /// as it treats the ones it ordered itself.
    fn order_all(&self, command: u8) {
        let now = self.now.load(Ordering::Relaxed);
        for entry in self.entries.lock().unwrap_or_else(PoisonError::into_inner).values_mut() {
            entry.conn.order(command);
            if entry.ordered.is_none_or(|(_, ordered)| ordered < command) {
                entry.ordered = Some((now, command));
            }
        }
    }

    async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.entries.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Closes this worker's longest-idle connection (nothing in flight, or no request yet) and
    /// hands its place in the listener's count to a newcomer; false when none is idle. nginx does
    /// the same when it runs out of connections (`ngx_drain_connections`).
    /// Lets the connections finish their requests in flight for at most `drain`, then closes
    /// those left (the listener stopped accepting).
    async fn drain(&self, drain: Duration, kind: ListenerKind) {
        tracing::info!(drain = ?drain, listener = kind.label(), "shutting down: no new connections, finishing in-flight requests");
        self.order_all(DRAIN);
        if tokio::time::timeout(drain, self.wait_empty()).await.is_err() {
            tracing::warn!(listener = kind.label(), "drain time over: closing the remaining connections");
            self.order_all(CLOSE);
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wait_empty()).await;
        }
    }

    /// Counts a new connection on its listener when there is room, or makes room by closing an
    /// idle one of this worker (the evicted connection's place is handed over: the count stays at
    /// the cap). `false`: the listener is full; the newcomer is refused (counted, logged at most
    /// once a second).
    fn make_room(&self, stats: &super::ListenerStats, cap: usize, kind: ListenerKind) -> bool {
        if stats.open.fetch_add(1, Ordering::Relaxed) < cap {
            return true;
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if self.evict_one() {
            return true;
        }
        stats.refused.fetch_add(1, Ordering::Relaxed);
        static FULL: crate::logging::LogBudget = crate::logging::LogBudget::every_second();
        if let Some(unlogged) = FULL.take() {
            tracing::warn!(listener = kind.label(), cap, unlogged, "connection refused: the listener is full (limits.max_connections)");
        }
        false
    }

    fn evict_one(&self) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let idlest = entries
            .values_mut()
            .filter(|e| e.ordered.is_none() && e.conn.in_flight() == 0 && e.conn.counted.load(Ordering::Relaxed))
            .min_by_key(|e| e.quiet_since);
        let Some(entry) = idlest else { return false };
        entry.conn.counted.store(false, Ordering::Relaxed);
        entry.conn.order(CLOSE);
        entry.ordered = Some((self.now.load(Ordering::Relaxed), CLOSE));
        entry.conn.limits.count_closed(CloseReason::Evicted);
        true
    }

    /// One look at every connection; see the module doc for the rules.
    fn sweep(&self, limits: &Limits) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        let t = self.ticks(limits);
        // Bodies dropped after the lock is released: dropping one closes a connection to the app.
        let mut abandoned = Vec::new();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in entries.values_mut() {
            let conn = &*entry.conn;
            let close = |entry: &mut Entry, reason: CloseReason| {
                entry.conn.order(CLOSE);
                entry.ordered = Some((now, CLOSE));
                entry.conn.limits.count_closed(reason);
            };
            let requests = conn.requests.load(Ordering::Relaxed);
            let in_flight = requests & IN_FLIGHT_MASK;
            match entry.ordered {
                Some((_, CLOSE)) => continue,
                Some((since, _)) if in_flight == 0 => {
                    if now - since >= t.drain_grace {
                        entry.conn.order(CLOSE);
                        entry.ordered = Some((now, CLOSE));
                    }
                    continue;
                }
                _ => {}
            }
            if !entry.served {
                if requests >> 32 == 0 {
                    if now - entry.accepted >= t.header {
                        close(entry, CloseReason::HeaderTimeout);
                    }
                    continue;
                }
                entry.served = true;
            }
            if requests != entry.seen_requests {
                entry.active_at = now;
            }
            if requests != entry.seen_requests || in_flight != 0 {
                entry.seen_requests = requests;
                entry.quiet_since = now;
            }
            if in_flight == 0 {
                if now - entry.quiet_since >= t.idle && entry.ordered.is_none() {
                    entry.conn.order(DRAIN);
                    entry.ordered = Some((now, DRAIN));
                    conn.limits.count_closed(CloseReason::IdleTimeout);
                }
                continue;
            }
            if !conn.http2.load(Ordering::Relaxed) {
                let progress = conn.progress.load(Ordering::Relaxed);
                if progress & APP_TURN != 0 || progress != entry.seen_progress {
                    entry.seen_progress = progress;
                    entry.stalled_since = now;
                } else if now - entry.stalled_since >= t.send {
                    conn.limits.abandoned.fetch_add(1, Ordering::Relaxed);
                    close(entry, CloseReason::SendTimeout);
                }
                continue;
            }
            // One stream the client stopped reading (a paused video) loses its app connection;
            // the whole connection (every tab of the origin) is closed only when the client has
            // done nothing else on it for a send timeout either: it stopped reading altogether.
            let mut give_up = false;
            for stream in conn.streams.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                match stream.check(now, t.send) {
                    StreamVerdict::Moving => entry.active_at = now,
                    StreamVerdict::Fine => {}
                    StreamVerdict::Abandon => {
                        conn.limits.abandoned.fetch_add(1, Ordering::Relaxed);
                        abandoned.push(stream.take_body());
                    }
                    StreamVerdict::GiveUp => give_up = true,
                }
            }
            if give_up && now - entry.active_at >= t.send {
                close(entry, CloseReason::SendTimeout);
            }
        }
        drop(entries);
        drop(abandoned);
    }
}

/// A connection's entry in its worker's registry, removed when this is dropped.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// Serves `listener` until `shutdown` completes, then lets in-flight requests finish for at most
/// `drain`: each connection in a task of its own, `handler` called for each request with the
/// connection it came on. Connections beyond the listener's cap take the place of an idle one of
/// this worker, or are closed at once; see the module doc for the timeouts.
pub(crate) async fn serve_connections<H, Fut>(
    listening: Listening,
    limits: Arc<Limits>,
    kind: ListenerKind,
    handler: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    worker: Option<Worker>,
) where
    H: Fn(Request<Incoming>, &Arc<Connection>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Tracked>> + Send + 'static,
{
    let Listening { socket: listener, tls } = listening;
    let mut tuned = Tuned::new(limits.settings(), kind);
    let registry = Arc::new(Registry::new(&tuned.settings));
    let _sweeper = AbortOnDrop(tokio::spawn(sweep_forever(Arc::clone(&registry), Arc::clone(&limits), tls.clone())));
    let stats = limits.listener(kind);
    tokio::pin!(shutdown);
    let (placer, mut inbox) = match worker {
        Some(Worker { placer, inbox }) => (Some(placer), Some(inbox)),
        None => (None, None),
    };
    while let Some((stream, peer, seat)) = next_connection(&listener, placer.as_ref(), inbox.as_mut(), shutdown.as_mut(), kind).await {
        tuned.follow(&limits);
        if !registry.make_room(stats, tuned.cap, kind) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Connection::new(Arc::clone(&limits), kind, peer));
        let (acceptor, generation) = match tls.as_ref().map(|door| door.current()) {
            Some((acceptor, generation)) => (Some(acceptor), generation),
            None => (None, 0),
        };
        let id = registry.insert(Arc::clone(&conn), generation);
        let service = {
            let (conn, handler) = (Arc::clone(&conn), handler.clone());
            hyper::service::service_fn(move |req| {
                let answer = handler(req, &conn);
                async move { Ok::<_, Infallible>(answer.await) }
            })
        };
        let registered = Registered { registry: Arc::clone(&registry), id };
        let (builder, handshake_timeout) = (Arc::clone(&tuned.builder), tuned.handshake_timeout);
        tokio::spawn(async move {
            // Dropped however the task ends: a panic in a request handler unwinds this task, and
            // the connection must still leave the registry (its place, the drain's wait) and its
            // worker's count.
            let _registered = (registered, seat);
            // The handshake is this task's, never the accept loop's: a slow client delays itself only.
            let stream = match &acceptor {
                None => ClientStream::Plain(stream),
                Some(acceptor) => match handshake(acceptor, stream, handshake_timeout).await {
                    Some((stream, facts)) => {
                        let _ = conn.tls.set(facts);
                        stream
                    }
                    None => return,
                },
            };
            let serving = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            follow_orders(serving, &conn).await;
        });
    }
    // No new connections, from the socket or handed over by another worker (a send to a closed
    // inbox makes the sender keep its connection).
    drop((listener, placer, inbox));
    registry.drain(drain, kind).await;
}

/// The next connection of this worker: accepted here (unless handed to a less busy worker), or
/// handed over by another worker; `None` once `shutdown` completes.
async fn next_connection(
    listener: &TcpListener,
    placer: Option<&Placer>,
    mut inbox: Option<&mut Inbox>,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    kind: ListenerKind,
) -> Option<(TcpStream, SocketAddr, Option<Seat>)> {
    loop {
        return Some(tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match placer {
                    None => (stream, peer, None),
                    Some(placer) => match placer.place(stream, peer) {
                        Placed::Here(stream, peer, seat) => (stream, peer, Some(seat)),
                        Placed::Moved => continue,
                    },
                },
                Err(e) => {
                    // Out of descriptors (EMFILE) or memory: wait instead of spinning on a listener
                    // that stays readable.
                    tracing::warn!(error = %e, listener = kind.label(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some((stream, peer, seat)) = async {
                match inbox.as_deref_mut() {
                    Some(inbox) => inbox.handed_over().await,
                    None => std::future::pending().await,
                }
            } => (stream, peer, Some(seat)),
            () = &mut shutdown => return None,
        });
    }
}

/// The sweeper of one listener's registry: every tick, forever (the listener aborts it).
async fn sweep_forever(registry: Arc<Registry>, limits: Arc<Limits>, door: Option<Arc<crate::tls::serving::Door>>) {
    let period = registry.ticks(&limits).period;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let release_every = (RELEASE_MEMORY_EVERY.as_nanos() / period.as_nanos()).max(1) as u64;
    let mut generation = door.as_ref().map_or(0, |door| door.generation());
    loop {
        tick.tick().await;
        if let Some(now) = door.as_ref().map(|door| door.generation()).filter(|&now| now != generation) {
            registry.drain_before(now);
            generation = now;
        }
        registry.sweep(&limits);
        if registry.now.load(Ordering::Relaxed).is_multiple_of(release_every) {
            super::release_memory();
        }
    }
}

/// Drives a connection until it ends, or until the sweeper orders it closed; an order to drain
/// lets its requests in flight finish first (HTTP/1: the one being answered; HTTP/2: every
/// stream, with a GOAWAY).
async fn follow_orders<I, S>(serving: auto::UpgradeableConnection<'_, I, S, TokioExecutor>, conn: &Connection)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Tracked>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, Tracked>,
{
    tokio::pin!(serving);
    let mut draining = false;
    loop {
        let ordered = conn.wake.notified();
        tokio::select! {
            biased;
            _ = serving.as_mut() => break,
            () = ordered => match conn.command.load(Ordering::Relaxed) {
                CLOSE => break,
                DRAIN if !draining => {
                    draining = true;
                    serving.as_mut().graceful_shutdown();
                }
                _ => {}
            },
        }
    }
}

/// What a listener's connections are served with, from the limits in force: followed at each
/// accept, so a reload's new caps and timeouts hold for the connections that come after it.
struct Tuned {
    settings: Arc<super::LimitSettings>,
    kind: ListenerKind,
    cap: usize,
    handshake_timeout: Duration,
    builder: Arc<auto::Builder<TokioExecutor>>,
}

impl Tuned {
    fn new(settings: Arc<super::LimitSettings>, kind: ListenerKind) -> Tuned {
        let cap = match kind {
            ListenerKind::Main | ListenerKind::Redirect | ListenerKind::GrpcAuthz => settings.max_connections,
            ListenerKind::Metrics => settings.metrics_max_connections,
        };
        let builder = match kind {
            // gRPC is HTTP/2 only (Envoy opens it with prior knowledge): an HTTP/1 request there
            // is a client that dialed the wrong port, and gets the connection closed.
            ListenerKind::GrpcAuthz => builder(&settings).http2_only(),
            _ => builder(&settings),
        };
        let builder = Arc::new(builder);
        Tuned { cap, handshake_timeout: settings.header_timeout, builder, kind, settings }
    }

    /// Takes the settings in force, when a reload changed them (one pointer comparison otherwise).
    fn follow(&mut self, limits: &Limits) {
        let now = limits.settings();
        if !Arc::ptr_eq(&now, &self.settings) {
            *self = Tuned::new(now, self.kind);
        }
    }
}

/// A listener's socket, and the TLS it terminates (`tls.cert_file`) when it serves HTTPS.
pub(crate) struct Listening {
    /// The bound socket.
    pub(crate) socket: TcpListener,
    /// The TLS of an HTTPS listener: its acceptor now (a reload may put in another: a new client
    /// CA; the certificate itself is re-read underneath).
    pub(crate) tls: Option<Arc<crate::tls::serving::Door>>,
}

impl Listening {
    /// A plain-http listener.
    pub(crate) fn plain(socket: TcpListener) -> Listening {
        Listening { socket, tls: None }
    }
}

/// Stops the worker's sweeper with its listener, however the serving future ends (a test may
/// drop it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The HTTP/1 and HTTP/2 server settings of every listener.
fn builder(settings: &super::LimitSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No timer of hyper's on request heads: the sweeper closes a connection without a complete
    // first head (`header_timeout`) and drains one whose next head is slow (`idle_timeout`).
    // hyper's backstop armed a timer for every request head (a boxed sleep put in the timer wheel
    // and taken out again) — the one timer per request this module avoids.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(settings.http2_max_concurrent_streams);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_counted_in_ticks_of_at_most_an_eighth_of_the_shortest() {
        let settings = super::super::LimitSettings {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(8),
            ..Default::default()
        };
        let t = Ticks::new(&settings);
        assert_eq!(t.period, Duration::from_secs(1));
        assert_eq!((t.header, t.idle, t.send, t.drain_grace), (30, 60, 8, 5));
        let short = super::super::LimitSettings { header_timeout: Duration::from_millis(200), ..settings };
        let t = Ticks::new(&short);
        assert_eq!(t.period, Duration::from_millis(25));
        assert_eq!(t.header, 8);
    }
}
