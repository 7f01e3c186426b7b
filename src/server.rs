//! The listener that feeds [`crate::pipeline`]: one single-threaded runtime per core, the
//! connection and request limits ([`crate::limits`]), graceful shutdown — and, beside it on the
//! same workers, `grpc_authz_listen`'s gRPC checks ([`crate::grpc_authz`]), stopped with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::app::{App, Current, StartError, POOL_MAX_IDLE_PER_WORKER};
use crate::body::Body;
use crate::config::{ConfigSource, FileConfig, Settings};
use crate::limits::balance::{Balance, Worker};
use crate::limits::inflight::InFlight;
use crate::limits::connection::{Connection, ListenerKind};
use crate::limits::listener::{serve_connections, Listening};
use crate::reload::Reloader;

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for at most `drain`. Connections and requests are held to
/// `limits:` ([`crate::limits`]): a request beyond a cap is answered at once (429/503), never
/// queued — except the health probes, which an overloaded proxy still answers.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    serve_current(listener, Arc::new(Current::new(app)), shutdown, drain).await;
}

/// [`serve`] with the app `current` holds at each request: a test, or an embedding program,
/// reloads the configuration by putting another app in it ([`App::succeed`], [`Current::put`]).
/// With `grpc_authz_listen` set, its gRPC checks are served beside, and stopped with the rest.
pub async fn serve_current(listener: TcpListener, current: Arc<Current>, shutdown: impl Future<Output = ()>, drain: Duration) {
    let watch = AbortOnDrop(tokio::spawn(crate::pipeline::connections::watch(Arc::clone(&current))));
    let cert_watch = current.get().tls.as_ref().map(|tls| AbortOnDrop(tokio::spawn(Arc::clone(&tls.cert).watch(crate::reload::CHECK_EVERY))));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let grpc = grpc_authz_beside(&current, stopped, drain).await;
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    serve_as_worker(listener, current, shutdown, drain, None, None).await;
    if let Some(mut grpc) = grpc {
        // Draining already, since the same signal.
        let _ = (&mut grpc.0).await;
    }
    drop((watch, cert_watch));
}

/// `grpc_authz_listen`'s checks ([`crate::grpc_authz`]) served beside [`serve_current`]'s listener
/// until `stopped` says so; `None` when it is not set, or cannot be bound (logged).
async fn grpc_authz_beside(current: &Arc<Current>, stopped: tokio::sync::watch::Receiver<bool>, drain: Duration) -> Option<AbortOnDrop> {
    let addr = current.get().settings.grpc_authz_listen?;
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for gRPC checks (grpc_authz_listen)");
            return None;
        }
    };
    Some(AbortOnDrop(tokio::spawn(crate::grpc_authz::serve(listener, Arc::clone(current), stopped_by(stopped), drain))))
}

/// Resolves once `stopped` says `true` (or its sender is gone).
async fn stopped_by(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A background task that ends with whoever holds it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`serve`] as one of several workers sharing `listener`, which spread its connections evenly
/// ([`crate::limits::balance`]), with `front` (if any) answering its own paths first.
async fn serve_as_worker(
    listener: TcpListener,
    current: Arc<Current>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    worker: Option<Worker>,
    front: Option<Front>,
) {
    let (limits, door) = {
        let app = current.get();
        (Arc::clone(&app.limits), app.tls.as_ref().map(|tls| Arc::clone(&tls.door)))
    };
    let handler = move |mut req: Request<Incoming>, conn: &Arc<Connection>| {
        // The app in force when the request came: it keeps it to the end, whatever a reload does.
        let app = current.get();
        let hsts = app.hsts.clone();
        if let Some(subject) = conn.client_subject() {
            // Mutual TLS: who the client certificate says the client is, for the app.
            req.extensions_mut().insert(ClientSubject(crate::identity::header_value(subject)));
        }
        let front = front.as_ref().filter(|f| req.uri().path().starts_with(&f.prefix)).map(|f| Arc::clone(&f.handler));
        let peer = conn.peer();
        let mut flight = InFlight::begin(conn, &req);
        let admitted = if is_health_probe(&req) { Ok(()) } else { flight.admit(&req) };
        if req.headers().contains_key(header::UPGRADE) {
            req.extensions_mut().insert(flight.upgrade_hold());
        }
        async move {
            let response = match (admitted, front) {
                (Err(refusal), _) => crate::pipeline::refused(&app, &req, peer, refusal),
                (Ok(()), Some(front)) => front(req).await,
                // Boxed: the request path's future is large (~19 KB in a debug build). Inline, every
                // HTTP/2 stream's task and every connection's task would keep that much for as long
                // as it lives, long after the response head went out (1,744 HTTP/2 streams left
                // unread held ~80 MB); boxed, it is freed as soon as the response exists.
                (Ok(()), None) => Box::pin(app.handle(req, peer)).await,
            };
            let mut response = response.map(|body| flight.respond(body));
            if let Some(hsts) = hsts {
                // Every answer over HTTPS, the proxy's and the app's (an app's own value is kept).
                response.headers_mut().entry(header::STRICT_TRANSPORT_SECURITY).or_insert(hsts);
            }
            response
        }
    };
    let listening = Listening { socket: listener, tls: door };
    serve_connections(listening, limits, ListenerKind::Main, handler, shutdown, drain, worker).await;
}

/// The subject of the client's certificate (mutual TLS), as a header value: a request extension
/// the request path turns into `X-Trousseau-Client-Subject` for the app.
#[derive(Clone, Debug)]
pub struct ClientSubject(pub http::HeaderValue);

/// What a [`Front`] answers with.
pub type FrontFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// A handler that answers the paths under `prefix` before the app sees them, on the app's own
/// listener and limits: dev mode's embedded IdP (`crate::dev`). It wraps the request path from
/// outside, so a production build has no trace of it.
#[derive(Clone)]
pub struct Front {
    prefix: String,
    handler: Arc<dyn Fn(Request<Incoming>) -> FrontFuture + Send + Sync>,
}

impl Front {
    /// Answers every request whose path starts with `prefix` with `handler`.
    pub fn new(prefix: impl Into<String>, handler: impl Fn(Request<Incoming>) -> FrontFuture + Send + Sync + 'static) -> Front {
        Front { prefix: prefix.into(), handler: Arc::new(handler) }
    }
}

/// `/.trousseau/healthz` and `/.trousseau/readyz`: outside the request caps (answered at once, they
/// hold nothing), so a kubelet does not restart a proxy that is only busy.
fn is_health_probe<B>(req: &Request<B>) -> bool {
    matches!(req.uri().path(), "/.trousseau/healthz" | "/.trousseau/readyz")
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Binds the listener and serves until SIGTERM/SIGINT; discovery runs in the background and
/// readiness follows it. `front`, when given, answers its own paths first (dev mode). With
/// `source` (where `settings` were read from, and the file they were read into), SIGHUP and a
/// changed file reload the configuration ([`crate::reload`]).
pub async fn run(mut settings: Settings, source: Option<(ConfigSource, FileConfig)>, front: Option<Front>) -> Result<(), StartError> {
    let workers = crate::util::worker_count();
    crate::limits::fit_open_file_limit(&mut settings.limits, workers, POOL_MAX_IDLE_PER_WORKER);
    let addr = settings.listen;
    let drain = settings.proxy.drain_timeout.0;
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let listener = listener.into_std().map_err(|source| StartError::Bind { addr, source })?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
        None => None,
    };
    let redirect_listener = match settings.http_redirect_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
        None => None,
    };
    let grpc_listener = match settings.grpc_authz_listen {
        Some(addr) => {
            let bound = TcpListener::bind(addr).await.and_then(TcpListener::into_std);
            Some(bound.map_err(|source| StartError::Bind { addr, source })?)
        }
        None => None,
    };
    let app = App::new(settings)?;
    tokio::spawn(crate::oidc::Oidc::discover_until_ready(Arc::downgrade(app.oidc())));
    if let Some(redis) = app.redis.clone() {
        // Says at once (in the log) whether Redis is reachable; requests reconnect on their own.
        tokio::spawn(async move { redis.ping().await });
    }
    let current = Arc::new(Current::new(Arc::clone(&app)));
    tokio::spawn(crate::pipeline::connections::watch(Arc::clone(&current)));
    // SIGHUP, changed files, renewed certificates (certbot, cert-manager): no restart.
    let (source, file) = source.map_or((None, None), |(source, file)| (Some(source), Some(file)));
    tokio::spawn(Arc::new(Reloader::new(Arc::clone(&current), source, file)).watch());
    if let Some(listener) = redirect_listener {
        let https_port = app.settings().public_url.port();
        tracing::info!(listen = ?listener.local_addr().ok(), "plain http redirected to https");
        tokio::spawn(crate::https_redirect::serve(listener, https_port, Arc::clone(&app.limits), std::future::pending()));
    }
    if let Some(listener) = metrics_listener {
        let metrics_current = Arc::clone(&current);
        tracing::info!(listen = ?listener.local_addr().ok(), "metrics at /metrics");
        let limits = Arc::clone(&app.limits);
        tokio::spawn(crate::metrics::serve_metrics(listener, move || metrics_current.get().metrics_text(), limits, std::future::pending()));
    }
    if let Some(listener) = &grpc_listener {
        tracing::info!(listen = ?listener.local_addr().ok(), "gRPC external authorization (envoy.service.auth.v3.Authorization)");
    }
    tracing::info!(listen = %addr, public_url = %app.settings().public_origin, upstream = %app.settings().upstream, "trousseau-proxy listening");
    let listeners = Listeners { main: listener, grpc_authz: grpc_listener };
    serve_on_workers(listeners, current, drain, front).await.map_err(|source| StartError::Bind { addr, source })
}

/// Serves `listener` with one single-threaded runtime per core until SIGTERM/SIGINT, then drains.
///
/// Thread per core: every worker accepts on the same listening socket (whoever is free takes the
/// next connection; one that holds more than its share hands it to the least loaded, see
/// [`crate::limits::balance`]) and runs each connection, its requests and its upstream connections (one
/// pool per worker, [`crate::proxy::set_worker`]) on its own thread. A request never hops
/// between threads, which a work-stealing runtime makes it do — and every hop is a futex wake
/// and a context switch, more than the request's own work on a small machine. The runtime that
/// called this (from `main`) only waits for the signal and runs background tasks.
async fn serve_on_workers(listeners: Listeners, current: Arc<Current>, drain: Duration, front: Option<Front>) -> std::io::Result<()> {
    let workers = crate::util::worker_count();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut threads = Vec::with_capacity(workers);
    let (balance, worker_sides) = Balance::new(workers);
    current.get().limits.set_balance(balance);
    for (index, worker) in worker_sides.into_iter().enumerate() {
        let listener = listeners.main.try_clone()?;
        let grpc = listeners.grpc_authz.as_ref().map(std::net::TcpListener::try_clone).transpose()?;
        let (current, stopped, front) = (current.clone(), stopped.clone(), front.clone());
        let thread = std::thread::Builder::new().name(format!("trousseau-worker-{index}")).spawn(move || {
            crate::logging::buffer_this_thread();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(crate::logging::flush_this_thread)
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return tracing::error!(error = %e, worker = index, "cannot start a worker runtime"),
            };
            crate::proxy::set_worker(index);
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return tracing::error!(error = %e, worker = index, "cannot listen"),
                };
                let shutdown = stopped_by(stopped.clone());
                tokio::spawn(timer_heartbeat());
                // The gRPC checks on every worker too: a central instance's whole load may be there.
                let grpc = grpc.and_then(|listener| TcpListener::from_std(listener).inspect_err(|e| tracing::error!(error = %e, worker = index, "cannot listen for gRPC checks")).ok());
                let grpc = grpc.map(|listener| tokio::spawn(crate::grpc_authz::serve(listener, Arc::clone(&current), stopped_by(stopped), drain)));
                serve_as_worker(listener, current, shutdown, drain, Some(worker), front).await;
                if let Some(grpc) = grpc {
                    let _ = grpc.await;
                }
            });
        })?;
        threads.push(thread);
    }
    drop(listeners);
    shutdown_signal().await;
    let delay = current.get().settings.proxy.shutdown_delay.0;
    if !delay.is_zero() {
        crate::pipeline::endpoints::health::set_stopping();
        tracing::info!(
            delay = ?delay,
            "stopping: still serving for proxy.shutdown_delay while the load balancer takes this replica out (readyz answers 503); a second signal drains at once"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown_signal() => {}
        }
    }
    let _ = stop.send(true);
    let exporter = current.get().exporter.clone();
    tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
        // Drained: the last requests' spans go to the collector before the process ends.
        if let Some(exporter) = exporter {
            exporter.flush(crate::trace::otlp::EXPORT_TIMEOUT);
        }
    })
    .await
    .ok();
    Ok(())
}

/// The sockets the workers share: `listen`, and `grpc_authz_listen` when set.
struct Listeners {
    main: std::net::TcpListener,
    grpc_authz: Option<std::net::TcpListener>,
}

/// Keeps a deadline at most [`HEARTBEAT`] away in a worker's timer wheel, forever.
///
/// Every request arms timers (hyper's header-read timeout, our response timeout). When tokio's
/// timer driver went to sleep knowing no deadline at all — every connection idle between two
/// requests — the first new timer made it wake its own thread: an eventfd write, then an extra
/// `epoll_wait` round, for about one request in four under load. With a near deadline always known,
/// a new 30-second timer is never the earliest and the driver is left alone. Costs ten wake-ups a
/// second per worker. It also writes the worker's buffered log lines ([`crate::logging`]).
async fn timer_heartbeat() {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A worker that never runs out of work never parks: its access lines go out from here.
        crate::logging::flush_this_thread();
    }
}

/// See [`timer_heartbeat`].
const HEARTBEAT: Duration = Duration::from_millis(100);

