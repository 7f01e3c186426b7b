//! Resource limits: what one client, one connection and everyone together may hold at once, and
//! how long the proxy waits for a client.
//!
//! An attacker's cheapest weapons against a proxy are things that cost it more than they cost the
//! attacker: sockets that never send a byte, request heads or bodies sent a byte at a time, HTTP/2
//! streams opened by the hundred whose answers are never read — each pinning a connection to the
//! app and its buffers. Every one of them is bounded here:
//!
//! | what | bound | answer |
//! |---|---|---|
//! | open connections, per listener, all workers together | `max_connections` | a new connection takes the place of the worker's longest-idle one, or is closed |
//! | a connection that has not sent a complete request head | `header_timeout` from accept | closed |
//! | a connection with nothing in flight | `idle_timeout` | closed (HTTP/2: `GOAWAY` first) |
//! | requests in flight, everyone | `max_requests_in_flight` | 503 + `Retry-After` |
//! | requests in flight, one client address | `max_requests_per_client` | 429 + `Retry-After` |
//! | requests in flight, one HTTP/2 connection | `http2_max_concurrent_streams` | the client waits (`REFUSED_STREAM` beyond) |
//! | a request body the client trickles | `request_body_timeout` + 1 s per `request_body_min_rate` bytes of waiting | 408, the app's request aborted |
//! | a response the client does not read | `send_timeout` without progress | the app's connection dropped; the stream reset or the connection closed |
//!
//! Where the work is: [`listener`] accepts, counts and watches connections (one sweeper task per
//! worker looks at every connection a few times per timeout); [`inflight`] admits requests and
//! follows their response bodies; [`rate`] is the request-body rule, used by [`crate::proxy`].
//! On the request path, admitting a request is a handful of atomic operations and no allocation.

pub mod balance;
pub mod connection;
pub mod inflight;
pub mod listener;
pub mod rate;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::logging::LogBudget;
use std::time::Duration;

pub use inflight::{Tracked, UpgradeHold};
pub use connection::ListenerKind;

/// `limits:`, validated (see [`crate::config::LimitsConfig`] for each value's meaning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    /// Client connections open at once on `listen`.
    pub max_connections: usize,
    /// Connections open at once on `metrics_listen`.
    pub metrics_max_connections: usize,
    /// Requests being served at once.
    pub max_requests_in_flight: usize,
    /// Requests being served at once for one client address; 0: no limit.
    pub max_requests_per_client: usize,
    /// HTTP/2 streams one connection may have open.
    pub http2_max_concurrent_streams: u32,
    /// Accept → first complete request head.
    pub header_timeout: Duration,
    /// A connection with nothing in flight is closed after this.
    pub idle_timeout: Duration,
    /// Waiting allowed for a request body, before the rate extension.
    pub request_body_timeout: Duration,
    /// Bytes per second that extend the wait by one second; 0: none.
    pub request_body_min_rate: u64,
    /// A response the client does not read for this long is abandoned.
    pub send_timeout: Duration,
    /// The client address is the one a trusted proxy put last in `X-Forwarded-For`
    /// (`proxy.trust_forwarded_headers`).
    pub client_from_forwarded: bool,
}

impl Default for LimitSettings {
    /// The defaults of `limits:` (the configuration's own defaults are these).
    fn default() -> Self {
        LimitSettings {
            max_connections: 10_000,
            metrics_max_connections: 64,
            max_requests_in_flight: 4096,
            max_requests_per_client: 256,
            http2_max_concurrent_streams: 100,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            request_body_timeout: Duration::from_secs(30),
            request_body_min_rate: 500,
            send_timeout: Duration::from_secs(60),
            client_from_forwarded: false,
        }
    }
}

/// Why a connection was closed by the proxy rather than by its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// No complete request head within `header_timeout`.
    HeaderTimeout,
    /// Nothing in flight for `idle_timeout`.
    IdleTimeout,
    /// A response not read for `send_timeout` (twice, on HTTP/2: once to drop the app's
    /// connection, once more to give up on the client's).
    SendTimeout,
    /// Made room for a new connection at `max_connections`.
    Evicted,
}

impl CloseReason {
    /// Every reason, in exposition order.
    pub const ALL: [CloseReason; 4] =
        [CloseReason::HeaderTimeout, CloseReason::IdleTimeout, CloseReason::SendTimeout, CloseReason::Evicted];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::Evicted => "evicted",
        }
    }
}

/// A request the proxy refused because of a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_requests_in_flight`: 503.
    InFlight,
    /// `max_requests_per_client`: 429.
    PerClient,
}

impl Refusal {
    /// The `limit` label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::InFlight => "in_flight",
            Refusal::PerClient => "per_client",
        }
    }
}

/// A fault of the client's, not the app's: counted apart and answered 4xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// The request body was malformed (bad chunked encoding) or cut off.
    BrokenBody,
    /// The request body fell behind `request_body_min_rate`.
    SlowBody,
}

impl ClientFault {
    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            ClientFault::BrokenBody => "broken_body",
            ClientFault::SlowBody => "slow_body",
        }
    }
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now (a websocket counts until its tunnel closes).
    pub open: AtomicUsize,
    /// Connections closed at once because the listener was full.
    pub refused: AtomicU64,
}

/// The limits shared by every worker of the server: the settings, the counts they are checked
/// against, and what they refused (for `/metrics`). One per [`crate::app::App`].
#[derive(Debug)]
pub struct Limits {
    /// Swapped whole by a configuration reload ([`Limits::replace_settings`]).
    settings: arc_swap::ArcSwap<LimitSettings>,
    main: ListenerStats,
    metrics: ListenerStats,
    redirect: ListenerStats,
    grpc_authz: ListenerStats,
    in_flight: AtomicUsize,
    clients: ClientTable,
    refused: [AtomicU64; 2],
    closed: [AtomicU64; CloseReason::ALL.len()],
    abandoned: AtomicU64,
    faults: [AtomicU64; 2],
    balance: OnceLock<Arc<balance::Balance>>,
}

impl Limits {
    /// Limits with nothing counted yet.
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            settings: arc_swap::ArcSwap::from_pointee(settings),
            main: ListenerStats::default(),
            metrics: ListenerStats::default(),
            redirect: ListenerStats::default(),
            grpc_authz: ListenerStats::default(),
            in_flight: AtomicUsize::new(0),
            clients: ClientTable::new(),
            refused: Default::default(),
            closed: Default::default(),
            abandoned: AtomicU64::new(0),
            faults: Default::default(),
            balance: OnceLock::new(),
        }
    }

    /// The settings in force now (a reload may replace them; hold the answer, not the borrow, across
    /// an `await`).
    pub fn settings(&self) -> Arc<LimitSettings> {
        self.settings.load_full()
    }

    /// `client_from_forwarded` in force (on every request: no reference count taken).
    pub(crate) fn clients_from_forwarded(&self) -> bool {
        self.settings.load().client_from_forwarded
    }

    /// Puts new settings in force (a configuration reload): requests and connections from now on
    /// are held to them, the counts go on.
    pub fn replace_settings(&self, settings: LimitSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// The worker threads sharing the main listener, once [`crate::server::run`] started them
    /// (for the metrics; a server run by [`crate::server::serve`] alone has none).
    pub fn balance(&self) -> Option<&Arc<balance::Balance>> {
        self.balance.get()
    }

    /// Records the workers' [`balance::Balance`]; the first call wins.
    pub(crate) fn set_balance(&self, balance: Arc<balance::Balance>) {
        let _ = self.balance.set(balance);
    }

    /// One listener's counters.
    pub fn listener(&self, kind: ListenerKind) -> &ListenerStats {
        match kind {
            ListenerKind::Main => &self.main,
            ListenerKind::Metrics => &self.metrics,
            ListenerKind::Redirect => &self.redirect,
            ListenerKind::GrpcAuthz => &self.grpc_authz,
        }
    }

    /// Requests in flight now (admitted and not finished, response body included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests refused by `limit` so far.
    pub fn refused(&self, limit: Refusal) -> u64 {
        self.refused[limit as usize].load(Ordering::Relaxed)
    }

    /// Connections the proxy closed for `reason` so far.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }

    /// Responses abandoned because their client did not read them (`send_timeout`).
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Client faults of `kind` so far.
    pub fn faults(&self, kind: ClientFault) -> u64 {
        self.faults[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts a client fault and logs it — at most one line a second, saying how many were not
    /// logged: a client sending garbage must not be able to flood the log.
    pub fn client_fault(&self, kind: ClientFault, peer: IpAddr, request_id: &str, error: &dyn std::fmt::Display) {
        self.faults[kind as usize].fetch_add(1, Ordering::Relaxed);
        static BUDGET: LogBudget = LogBudget::every_second();
        if let Some(unlogged) = BUDGET.take() {
            tracing::info!(client = %peer, request_id, kind = kind.label(), error = %error, unlogged, "request refused: client fault");
        }
    }

    fn count_closed(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a place for one request of `client`, or says which limit is reached.
    fn admit(&self, client: ClientSlot) -> Result<Admission, Refusal> {
        let settings = self.settings.load();
        let per_client = settings.max_requests_per_client;
        if per_client != 0 && !self.clients.acquire(client, per_client) {
            return Err(self.refuse(Refusal::PerClient));
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= settings.max_requests_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            if per_client != 0 {
                self.clients.release(client);
            }
            return Err(self.refuse(Refusal::InFlight));
        }
        Ok(Admission { slot: client, per_client: per_client != 0 })
    }

    /// Gives back the place [`Limits::admit`] took — exactly what it took, whatever a reload did
    /// to the limits since.
    fn release(&self, admission: Admission) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if admission.per_client {
            self.clients.release(admission.slot);
        }
    }

    fn refuse(&self, limit: Refusal) -> Refusal {
        self.refused[limit as usize].fetch_add(1, Ordering::Relaxed);
        limit
    }
}

/// A request's place under the caps: its client's slot, and whether its client's count was taken
/// (`max_requests_per_client` may be turned on or off by a reload before the request ends).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Admission {
    slot: ClientSlot,
    per_client: bool,
}

/// Where a client's requests are counted in [`ClientTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClientSlot(u16);

/// Requests in flight per client address, in a fixed table of counters indexed by a keyed hash
/// of the address (a counting Bloom filter with one hash): no lock, no allocation, no map that
/// grows with the number of clients, at the price of two clients sharing a counter once in 65,536
/// pairs. The key is drawn at start, so a client cannot aim at another's counter. IPv6 clients
/// are counted per /64: one host usually holds a whole /64.
struct ClientTable {
    key: u64,
    counts: Box<[AtomicU32]>,
}

impl std::fmt::Debug for ClientTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTable").field("slots", &self.counts.len()).finish_non_exhaustive()
    }
}

impl ClientTable {
    fn new() -> ClientTable {
        ClientTable::with_key(u64::from_le_bytes(crate::util::id::random_bytes::<8>()))
    }

    fn with_key(key: u64) -> ClientTable {
        ClientTable { key, counts: (0..=u16::MAX).map(|_| AtomicU32::new(0)).collect() }
    }

    fn slot(&self, ip: IpAddr) -> ClientSlot {
        let bits = match ip.to_canonical() {
            IpAddr::V4(v4) => u64::from(u32::from(v4)) | 1 << 63,
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
        };
        ClientSlot((mix(bits ^ self.key) >> 48) as u16)
    }

    fn acquire(&self, slot: ClientSlot, max: usize) -> bool {
        let count = &self.counts[usize::from(slot.0)];
        if count.fetch_add(1, Ordering::Relaxed) as usize >= max {
            count.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn release(&self, slot: ClientSlot) {
        self.counts[usize::from(slot.0)].fetch_sub(1, Ordering::Relaxed);
    }
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How the allocator gives freed memory back to the system, when the binary has one to offer.
static RELEASE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what [`release_memory`] calls. The binary uses mimalloc, which gives pages freed by a
/// thread back to the system only later, from that thread's next allocations in the same place:
/// after a burst of connections ends, an idle worker would keep its peak memory for good.
pub fn on_release_memory(release: fn()) {
    let _ = RELEASE_MEMORY.set(release);
}

/// Gives the calling thread's freed memory back to the system (see [`on_release_memory`]). Each
/// worker's sweeper calls it every few seconds: its cost (a walk over the thread's heap pages) is
/// nothing at that pace.
pub(crate) fn release_memory() {
    if let Some(release) = RELEASE_MEMORY.get() {
        release();
    }
}

/// Descriptors the process keeps besides its connections: listeners, log output, Redis, the
/// IdP client, the runtime's own (epoll, eventfd), and some slack.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft open-file limit to the hard one (as Go's runtime does at start: the soft limit
/// is often 1,024, a few hundred connections for a proxy) and lowers the connection and request
/// caps until they fit in it: every client connection is a descriptor, every request in flight
/// may hold one more to the app, and each worker keeps up to `pool_idle_per_worker` idle ones.
/// Says what it did in the log; a cap lowered below its configured value is a warning.
pub fn fit_open_file_limit(settings: &mut LimitSettings, workers: usize, pool_idle_per_worker: usize) {
    let limit = raise_open_file_limit();
    let Some(limit) = limit else { return };
    let fixed = RESERVED_DESCRIPTORS + (workers * pool_idle_per_worker) as u64 + settings.metrics_max_connections as u64;
    let wanted = fixed + settings.max_connections as u64 + settings.max_requests_in_flight as u64;
    if wanted <= limit {
        return;
    }
    // Half of what is left for client connections, half for the app's side.
    let share = (limit.saturating_sub(fixed) / 2).max(16) as usize;
    let (connections, requests) = (settings.max_connections.min(share), settings.max_requests_in_flight.min(share));
    tracing::warn!(
        open_file_limit = limit,
        max_connections = connections,
        max_requests_in_flight = requests,
        "limits.max_connections and limits.max_requests_in_flight lowered to fit the open-file limit \
         (raise it with `ulimit -n` or LimitNOFILE= to keep the configured values)"
    );
    settings.max_connections = connections;
    settings.max_requests_in_flight = requests;
}

/// The soft `RLIMIT_NOFILE` after raising it to the hard limit; `None` when it is unlimited or
/// cannot be read.
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let soft = limit.current?;
    if let Some(hard) = limit.maximum {
        if hard > soft {
            limit.current = Some(hard);
            match setrlimit(Resource::Nofile, limit) {
                Ok(()) => {
                    tracing::info!(from = soft, to = hard, "open-file limit raised to the hard limit");
                    return Some(hard);
                }
                Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit"),
            }
        }
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_per_ipv4_address_and_per_ipv6_64() {
        let table = ClientTable::new();
        let slot = |s: &str| table.slot(s.parse().unwrap());
        assert_eq!(slot("192.0.2.7"), slot("::ffff:192.0.2.7"), "an IPv4-mapped peer is the IPv4 client");
        assert_eq!(slot("2001:db8:1:2::1"), slot("2001:db8:1:2:ffff::9"), "one /64, one client");
    }

    #[test]
    fn neighbouring_addresses_spread_over_the_table() {
        // With a random key, 200 addresses in 65,536 slots share one about once in four runs
        // (birthday bound), so the spread is judged over fixed keys: deterministic, and a mixing
        // bug that clusters neighbours still shows as dozens of shared slots.
        for key in [0, 1, 0x9e37_79b9_7f4a_7c15, u64::MAX] {
            let table = ClientTable::with_key(key);
            let distinct: std::collections::HashSet<_> =
                (0..=255u8).map(|i| table.slot(format!("198.51.100.{i}").parse().unwrap())).collect();
            assert!(distinct.len() >= 254, "key {key:#x}: {} distinct slots of 256", distinct.len());
        }
    }

    #[test]
    fn a_client_gets_its_places_and_no_more_and_gets_them_back() {
        let limits = Limits::new(LimitSettings { max_requests_per_client: 2, max_requests_in_flight: 3, ..LimitSettings::default() });
        let (a, b) = (limits.clients.slot("192.0.2.1".parse().unwrap()), limits.clients.slot("192.0.2.2".parse().unwrap()));
        let first = limits.admit(a);
        assert_eq!(first.map(drop), Ok(()));
        assert_eq!(limits.admit(a).map(drop), Ok(()));
        assert_eq!(limits.admit(a).map(drop), Err(Refusal::PerClient));
        assert_eq!(limits.admit(b).map(drop), Ok(()));
        assert_eq!(limits.admit(b).map(drop), Err(Refusal::InFlight), "three in flight in all");
        limits.release(first.unwrap());
        assert_eq!(limits.admit(b).map(drop), Ok(()));
        assert_eq!((limits.refused(Refusal::PerClient), limits.refused(Refusal::InFlight)), (1, 1));
        assert_eq!(limits.in_flight(), 3);
    }

    #[test]
    fn a_reload_between_admission_and_release_leaves_the_counts_balanced() {
        let limits = Limits::new(LimitSettings { max_requests_per_client: 0, ..LimitSettings::default() });
        let a = limits.clients.slot("192.0.2.1".parse().unwrap());
        let before = limits.admit(a).unwrap();
        limits.replace_settings(LimitSettings { max_requests_per_client: 1, ..LimitSettings::default() });
        limits.release(before);
        let during = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).map(drop), Err(Refusal::PerClient), "the new cap holds, and the old request took nothing from it");
        limits.replace_settings(LimitSettings { max_requests_per_client: 0, ..LimitSettings::default() });
        limits.release(during);
        limits.replace_settings(LimitSettings { max_requests_per_client: 1, ..LimitSettings::default() });
        assert_eq!(limits.admit(a).map(drop), Ok(()), "the place taken under the cap was given back");
        assert_eq!(limits.in_flight(), 1);
    }
}
