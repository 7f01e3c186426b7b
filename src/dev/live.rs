//! The demo app's live page: `/live` keeps a websocket (`/live/socket`) open through the proxy,
//! the app sending a message every second. Sign out in another tab, or let Trousseau end the
//! session: the proxy closes the socket at once with 1008 and its reason, and the page says so —
//! what `session.end_open_connections` does, seen in a browser.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::body::{self, Body};
use crate::pages::{self, Lang};

/// The page's path in the demo app.
pub const PAGE: &str = "/live";
/// The websocket's path.
pub const SOCKET: &str = "/live/socket";

/// How often the app speaks on the socket.
const TICK: Duration = Duration::from_secs(1);

/// The page: the connection's state, the last message, and what ended it.
pub fn page(lang: Lang) -> Response<Body> {
    let t = |en, fr| lang.pick(en, fr);
    let script = format!(
        r#"(() => {{
  const state = document.getElementById('state');
  const last = document.getElementById('last');
  const again = document.getElementById('again');
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '{SOCKET}');
  ws.onopen = () => {{ state.dataset.state = 'open'; state.textContent = {open:?}; }};
  ws.onmessage = (e) => {{ last.textContent = e.data; }};
  ws.onclose = (e) => {{
    state.dataset.state = 'closed';
    state.dataset.code = String(e.code);
    state.textContent = {closed:?} + ' ' + e.code + (e.reason ? ' — ' + e.reason : '');
    again.hidden = false;
  }};
}})();"#,
        open = t("Connected: the app sends a message every second.", "Connecté : l'application envoie un message chaque seconde."),
        closed = t("The proxy closed the connection: code", "Le proxy a fermé la connexion : code"),
    );
    let main = maud::html! {
        h1 { (t("Live connection", "Connexion en direct")) }
        p class="lead" {
            (t(
                "This page keeps a websocket open to the demo app through the proxy. Sign out in another tab, or have Trousseau end the session: the proxy closes this connection at once (code 1008) and the app sees it close too.",
                "Cette page garde un websocket ouvert vers l'application de démonstration, à travers le proxy. Déconnectez-vous dans un autre onglet, ou faites terminer la session par Trousseau : le proxy ferme aussitôt cette connexion (code 1008) et l'application la voit se fermer aussi.",
            ))
        }
        section class="panel" aria-labelledby="live-title" {
            h2 id="live-title" { (t("Connection", "Connexion")) }
            p id="state" class="status" role="status" data-state="connecting" { (t("Connecting…", "Connexion…")) }
            p { (t("Last message: ", "Dernier message : ")) span id="last" class="code" { "—" } }
            p id="again" hidden { a class="button" href="/" { (t("Sign in again", "Se reconnecter")) } }
        }
        p { a href="/" { (t("Back to the demo app", "Retour à l'application de démonstration")) } }
        script { (maud::PreEscaped(script)) }
    };
    let frame = pages::Frame { wide: true, tag: Some(lang.pick("Demo app", "Application de démo")), ..pages::Frame::default() };
    let mut r = Response::new(body::full(pages::page(lang, t("Live connection", "Connexion en direct"), main, frame)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Accepts the websocket and speaks on it every second until it closes.
pub fn socket<B>(mut req: Request<B>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(body::full("a websocket upgrade was expected"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let who = req.headers().get("x-trousseau-email").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let mut tick = tokio::time::interval(TICK);
        for n in 1u64.. {
            tokio::select! {
                _ = tick.tick() => {
                    let text = if who.is_empty() { format!("message {n}") } else { format!("message {n} for {who}") };
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Close(frame))) => {
                        tracing::info!(code = frame.as_ref().map(|f| u16::from(f.code)), "demo app: the live websocket was closed");
                        break;
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
    });
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        r.headers_mut().insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    r
}
