//! A real headless Chromium, driven over the Chrome DevTools Protocol (CDP) with nothing more than
//! a WebSocket and JSON: launch, navigate, wait for the page, click like a person (mouse events at
//! the element's position, so a hidden or covered button cannot be clicked), read the page, take
//! screenshots into `target/screenshots/`.
//!
//! One [`Chromium`] is one browser process with a fresh profile (its own cookie jar) and one tab.
//! The process is killed and the profile removed when it is dropped, even if the test panics.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one page may take to load (a whole chain of redirects included).
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the browser may take to start and print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The desktop viewport of every screenshot unless a test narrows it.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// Where to find Chromium: `$CHROMIUM` if set (`None` if that is no file), else the usual names
/// on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A headless Chromium with one tab, attached over CDP.
pub struct Chromium {
    child: Child,
    profile: PathBuf,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The flat-mode session of our tab: every page command carries it.
    session: String,
    next_id: u64,
    /// Events read while waiting for a command's answer, kept for later waits.
    events: VecDeque<Value>,
    /// The emulated viewport, CSS pixels.
    viewport: (u32, u32),
    /// The last lines the browser wrote to stderr, for error messages.
    stderr_tail: std::sync::Arc<std::sync::Mutex<VecDeque<String>>>,
}

impl Chromium {
    /// Launches Chromium, or `None` when it is not installed and the run allows skipping
    /// ([`super::parts::require`]).
    pub async fn launch_or_skip() -> Option<Chromium> {
        let Some(binary) = find_chromium() else {
            super::parts::require(&super::parts::CHROMIUM, &["chromium on PATH (or $CHROMIUM)".to_string()]);
            return None;
        };
        Some(Chromium::launch(&binary).await)
    }

    /// Launches `binary` headless with a fresh profile and attaches to its tab.
    pub async fn launch(binary: &Path) -> Chromium {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "trousseau-chromium-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create the browser profile directory");
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--force-color-profile=srgb",
                "--lang=en-GB",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));

        // Chromium prints its DevTools address on stderr; the rest of stderr is drained (a full
        // pipe would block the browser) and its tail kept for error messages.
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        {
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(url.trim().to_string());
                        }
                    }
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == 20 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let ws_url = match tokio::time::timeout(LAUNCH_TIMEOUT, rx).await {
            Ok(Ok(url)) => url,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = stderr_tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&profile);
                panic!("{} did not print its DevTools address; its stderr ended with:\n{tail}", binary.display());
            }
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("connect to the browser's DevTools WebSocket");
        let mut browser = Chromium { child, profile, ws, session: String::new(), next_id: 0, events: VecDeque::new(), viewport: DESKTOP, stderr_tail };

        // Attach to the tab Chromium opened on about:blank (flat mode: one socket, a sessionId per command).
        let targets = browser.browser_call("Target.getTargets", json!({})).await;
        let target_id = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .map(str::to_string);
        let target_id = match target_id {
            Some(id) => id,
            None => browser.browser_call("Target.createTarget", json!({"url": "about:blank"})).await["targetId"]
                .as_str()
                .expect("a new tab")
                .to_string(),
        };
        let attached = browser.browser_call("Target.attachToTarget", json!({"targetId": target_id, "flatten": true})).await;
        browser.session = attached["sessionId"].as_str().expect("a CDP session id").to_string();
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser.set_viewport(DESKTOP.0, DESKTOP.1, false).await;
        browser
    }

    /// Opens `url` in another tab of the same browser (same cookies), waits a moment for it to
    /// load, and closes it: "the user did this in another tab".
    pub async fn in_another_tab(&mut self, url: &str, settle: Duration) {
        let created = self.browser_call("Target.createTarget", json!({"url": url, "background": true})).await;
        let target = created["targetId"].as_str().expect("a new tab").to_string();
        tokio::time::sleep(settle).await;
        self.browser_call("Target.closeTarget", json!({"targetId": target})).await;
    }

    /// Sends a browser-level command and returns its result.
    async fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params).await
    }

    /// Sends a command to our tab and returns its result; a CDP error fails the test.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(session), method, params).await
    }

    async fn send(&mut self, session: Option<String>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).await.unwrap_or_else(|e| panic!("CDP {method}: send failed: {e}"));
        let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
        loop {
            let message = self.read_until(deadline).await.unwrap_or_else(|| panic!("CDP {method}: no answer in {LOAD_TIMEOUT:?}"));
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("CDP {method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push_back(message);
            }
        }
    }

    /// The next message from the browser, or `None` at the deadline.
    async fn read_until(&mut self, deadline: tokio::time::Instant) -> Option<Value> {
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("CDP sent invalid JSON ({e})")));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("CDP connection failed: {e}\n{}", self.stderr_tail()),
                None => panic!("the browser closed the DevTools connection\n{}", self.stderr_tail()),
            }
        }
    }

    /// Waits for an event of our tab named `method` (already buffered or yet to come).
    async fn wait_event(&mut self, method: &str, timeout: Duration) -> Option<Value> {
        let ours = |e: &Value, session: &str| e["method"] == method && e["sessionId"] == session;
        if let Some(pos) = self.events.iter().position(|e| ours(e, &self.session)) {
            return self.events.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = self.read_until(deadline).await?;
            if ours(&event, &self.session) {
                return Some(event);
            }
            if event.get("method").is_some() {
                self.events.push_back(event);
            }
        }
    }

    /// Forgets buffered events named `method`, so the next wait sees only new ones.
    fn forget_events(&mut self, method: &str) {
        self.events.retain(|e| e["method"] != method);
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default();
        format!("browser stderr (last lines):\n{tail}")
    }

    /// Loads `url` in the tab and waits until the page (after any redirects) has loaded.
    pub async fn navigate(&mut self, url: &str) {
        self.forget_events("Page.loadEventFired");
        let answer = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(error) = answer["errorText"].as_str().filter(|e| !e.is_empty()) {
            panic!("navigating to {url} failed: {error}");
        }
        self.wait_for_load().await;
    }

    /// Waits for the next page load of the tab.
    pub async fn wait_for_load(&mut self) {
        if self.wait_event("Page.loadEventFired", LOAD_TIMEOUT).await.is_none() {
            let url = self.url().await;
            panic!("the page did not finish loading within {LOAD_TIMEOUT:?} (at {url})");
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let answer = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await;
        if let Some(details) = answer.get("exceptionDetails") {
            panic!("JavaScript `{expression}` threw: {details}");
        }
        answer["result"]["value"].clone()
    }

    /// The tab's current URL.
    pub async fn url(&mut self) -> String {
        self.eval("location.href").await.as_str().unwrap_or_default().to_string()
    }

    /// The page's visible text, as a person would read it.
    pub async fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''").await.as_str().unwrap_or_default().to_string()
    }

    /// The names of the cookies the browser holds for `url`.
    pub async fn cookie_names(&mut self, url: &str) -> Vec<String> {
        let answer = self.call("Network.getCookies", json!({"urls": [url]})).await;
        answer["cookies"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()
    }

    /// The page's `<title>`.
    pub async fn title(&mut self) -> String {
        self.eval("document.title").await.as_str().unwrap_or_default().to_string()
    }

    /// The `lang` attribute of the page.
    pub async fn lang(&mut self) -> String {
        self.eval("document.documentElement.lang").await.as_str().unwrap_or_default().to_string()
    }

    /// Clicks the element matched by the CSS `selector` with the mouse, and waits for the page
    /// that the click leads to.
    pub async fn click(&mut self, selector: &str) {
        let find = format!("document.querySelector({})", json!(selector));
        self.click_found(&find, selector).await;
    }

    /// Clicks the button or link whose visible text contains `text`, and waits for the page
    /// that the click leads to.
    pub async fn click_text(&mut self, text: &str) {
        let find = format!(
            "[...document.querySelectorAll('button, a, [role=button]')].find(e => e.innerText.includes({}))",
            json!(text)
        );
        self.click_found(&find, &format!("the button or link `{text}`")).await;
    }

    async fn click_found(&mut self, find: &str, what: &str) {
        // Scroll it into view and click its middle, like a person: if something covers it, the
        // click lands on that instead and the test notices.
        let point = self
            .eval(&format!(
                "(() => {{ const e = {find}; if (!e) return null; e.scrollIntoView({{block: 'center'}}); \
                 const r = e.getBoundingClientRect(); if (r.width === 0 || r.height === 0) return 'invisible'; \
                 const x = r.left + r.width / 2, y = r.top + r.height / 2; \
                 const hit = document.elementFromPoint(x, y); \
                 if (!hit || (hit !== e && !e.contains(hit))) return 'covered'; return {{x, y}}; }})()"
            ))
            .await;
        let (x, y) = match (point["x"].as_f64(), point["y"].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => {
                let url = self.url().await;
                let text = self.text().await;
                panic!("cannot click {what} at {url} ({point}); the page says:\n{text}");
            }
        };
        self.forget_events("Page.loadEventFired");
        for (kind, buttons) in [("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1}),
            )
            .await;
        }
        self.wait_for_load().await;
    }

    /// Presses Tab `times` times and returns the focused element's text, to check keyboard use.
    pub async fn tab(&mut self, times: usize) -> String {
        for _ in 0..times {
            for kind in ["rawKeyDown", "keyUp"] {
                self.call(
                    "Input.dispatchKeyEvent",
                    json!({"type": kind, "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}),
                )
                .await;
            }
        }
        self.eval("document.activeElement ? document.activeElement.innerText || document.activeElement.outerHTML : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Sets the viewport: `width` × `height` CSS pixels, as a phone when `mobile`.
    pub async fn set_viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
        self.viewport = (width, height);
    }

    /// The emulated viewport (width, height) in CSS pixels.
    pub fn viewport(&self) -> (u32, u32) {
        self.viewport
    }

    /// Sets the preferred color scheme (`"light"` or `"dark"`).
    pub async fn set_color_scheme(&mut self, scheme: &str) {
        self.call("Emulation.setEmulatedMedia", json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]})).await;
    }

    /// Saves a PNG of the whole page (not just the viewport) as `target/screenshots/{name}.png`.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let viewport = &metrics["cssLayoutViewport"];
        let width = viewport["clientWidth"].as_f64().unwrap_or(DESKTOP.0 as f64);
        let height = metrics["cssContentSize"]["height"].as_f64().unwrap_or(DESKTOP.1 as f64).max(viewport["clientHeight"].as_f64().unwrap_or(0.0));
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Closes the browser politely (the profile is removed on drop).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.browser_call_quiet("Browser.close")).await;
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn browser_call_quiet(&mut self, method: &str) {
        self.next_id += 1;
        let message = json!({"id": self.next_id, "method": method, "params": {}});
        let _ = self.ws.send(Message::text(message.to_string())).await;
        while let Some(Ok(_)) = self.ws.next().await {}
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Chromium's helper processes may still be writing for a moment.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `target/screenshots/` of this workspace (honours `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}
