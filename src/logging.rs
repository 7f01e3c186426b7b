//! Logging: one line per event on standard error, text or JSON, without a lock and, on the
//! server's worker threads, without a system call per line.
//!
//! tracing formats an event into a per-thread buffer and hands it over with one `write_all`.
//! Through `std::io::stderr()` that call takes a process-wide lock, and with one access line per
//! request the worker threads queued on it (a futex wait and wake for about every other request
//! under load). Here the line goes to a duplicate of the descriptor through `&File`, which takes no
//! lock: the kernel keeps each `write` whole (a log file's position moves atomically; a pipe keeps
//! writes of up to 4 KiB together). Batches, longer than that, are written under a lock.
//!
//! A worker thread ([`buffer_this_thread`]) goes further, as Envoy and nginx's `access_log …
//! buffer=` do: its `INFO` and `DEBUG` lines (the access log) collect in a per-thread buffer written
//! with one `write` when the thread is about to sleep ([`flush_this_thread`], called by the
//! runtime's park hook), at the latest every 100 ms while it is busy, when 32 KiB have collected,
//! and when the thread ends. A `WARN` or `ERROR` line flushes at once, behind the lines before it.
//! Under load that is one `write` per batch of requests instead of one per request (5% of a proxied
//! request's CPU). A process killed with SIGKILL loses at most the last 100 ms of access lines.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `2026-01-02T03:04:05.123456Z  INFO target: message key=value …`; colored on a terminal.
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// Installs the global subscriber: `TROUSSEAU_PROXY_LOG` (an `EnvFilter`) or `info` with hyper,
/// rustls and h2 at `warn`, lines as described in the module doc. Call once, from `main`.
pub fn init(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TROUSSEAU_PROXY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hyper=warn,rustls=warn,h2=warn"));
    // Colors only on a terminal: escape codes in a log file are noise, and formatting them was ~5% of
    // a proxied request's instructions.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(Output::stderr()).with_ansi(ansi);
    match format {
        // On a terminal, tracing's own format with colors; otherwise the same line written directly.
        Format::Text if ansi => builder.init(),
        Format::Text => builder.event_format(PlainText).init(),
        Format::Json => builder.json().flatten_event(true).init(),
    }
    if !(ansi && format == Format::Text) {
        let _ = ACCESS_FORMAT.set(format);
    }
}

/// The target of the access log lines (`TROUSSEAU_PROXY_LOG=info,trousseau_proxy::access=off`
/// turns them off).
pub const ACCESS_TARGET: &str = "trousseau_proxy::access";

/// One request's access log line.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path, without the query (which may carry secrets).
    pub path: &'a str,
    /// The answer's status code.
    pub status: u16,
    /// From the request's arrival to its response head.
    pub latency: std::time::Duration,
    /// The user's `sub`, `-` without a session.
    pub sub: &'a str,
    /// The request id (`X-Request-Id`).
    pub request_id: &'a str,
    /// The W3C trace id (hex).
    pub trace_id: &'a str,
}

/// The format [`access`] writes itself, set by [`init`] when the lines are plain text or JSON
/// (on a terminal, colored lines go through tracing).
static ACCESS_FORMAT: std::sync::OnceLock<Format> = std::sync::OnceLock::new();

/// Logs `line` at `INFO` under [`ACCESS_TARGET`], exactly as the `tracing` event
/// `info!(target: ACCESS_TARGET, method = %m, path = %p, status, latency_ms, sub, request_id,
/// trace_id, "request")` would be written in the installed format.
///
/// Performance: that event went through tracing-subscriber's generic formatting (timestamp, field
/// visitors, `Debug` escaping), ~9% of a proxied request's instructions. With our own output
/// installed, the line is written directly: the timestamp's seconds formatted once a second, the
/// fields without a visitor. Filters still apply (`enabled!`).
pub fn access(line: &Access<'_>) {
    let latency_ms = line.latency.as_micros() as f64 / 1000.0;
    match ACCESS_FORMAT.get() {
        Some(format) => {
            if tracing::enabled!(target: ACCESS_TARGET, Level::INFO) {
                write_line(false, |out: &mut Vec<u8>| match format {
                    Format::Text => write_access_text(out, line),
                    Format::Json => write_access_json(out, line),
                });
            }
        }
        None => tracing::info!(
            target: ACCESS_TARGET,
            method = %line.method,
            path = %line.path,
            status = line.status,
            latency_ms,
            sub = line.sub,
            request_id = line.request_id,
            trace_id = line.trace_id,
            "request"
        ),
    }
}

/// Writes one line as it is (a JSON object and its newline), in this thread's batch like the
/// access lines, when [`init`] installed our own output; `false` on a terminal, where lines go
/// through tracing.
/// The batch is written at once with it (`urgent`: an audit line must not wait for the next
/// flush — a process killed then would lose it).
pub(crate) fn write_line(urgent: bool, write: impl FnOnce(&mut Vec<u8>)) -> bool {
    if ACCESS_FORMAT.get().is_none() {
        return false;
    }
    let mut write = Some(write);
    let pushed = with_pending(|pending| {
        if let Some(write) = write.take() {
            pending.push(urgent, write);
        }
    });
    if pushed.is_none() {
        if let (Some(out), Some(write)) = (OUTPUT.get(), write.take()) {
            let mut one = Vec::with_capacity(256);
            write(&mut one);
            let _ = out.write_now(&one);
        }
    }
    true
}

/// The current time as the log lines write it (RFC 3339, microseconds, UTC).
pub(crate) fn write_timestamp(out: &mut Vec<u8>) {
    timestamp(out);
}

/// `2026-01-02T03:04:05.123456Z  INFO trousseau_proxy::access: request method=GET path=/ status=200
/// latency_ms=0.408 sub="…" request_id="…" trace_id="…"`, as [`PlainText`] writes the event.
fn write_access_text(out: &mut Vec<u8>, line: &Access<'_>) {
    timestamp(out);
    out.extend_from_slice(b"  INFO trousseau_proxy::access: request method=");
    out.extend_from_slice(line.method.as_bytes());
    out.extend_from_slice(b" path=");
    out.extend_from_slice(line.path.as_bytes());
    out.extend_from_slice(b" status=");
    push_decimal(out, u64::from(line.status));
    out.extend_from_slice(b" latency_ms=");
    push_millis(out, line.latency);
    out.extend_from_slice(b" sub=");
    quoted_debug(out, line.sub);
    out.extend_from_slice(b" request_id=");
    quoted_debug(out, line.request_id);
    out.extend_from_slice(b" trace_id=");
    quoted_debug(out, line.trace_id);
    out.push(b'\n');
}

/// The JSON object tracing-subscriber's flattened JSON format writes for the event.
fn write_access_json(out: &mut Vec<u8>, line: &Access<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
    json_string(out, line.method);
    out.extend_from_slice(b",\"path\":");
    json_string(out, line.path);
    out.extend_from_slice(b",\"status\":");
    push_decimal(out, u64::from(line.status));
    out.extend_from_slice(b",\"latency_ms\":");
    push_millis(out, line.latency);
    out.extend_from_slice(b",\"sub\":");
    json_string(out, line.sub);
    out.extend_from_slice(b",\"request_id\":");
    json_string(out, line.request_id);
    out.extend_from_slice(b",\"trace_id\":");
    json_string(out, line.trace_id);
    out.extend_from_slice(b",\"target\":\"trousseau_proxy::access\"}\n");
}

/// `n` in decimal digits.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `latency` in milliseconds to the microsecond, as `{:?}` writes the `f64` `µs / 1000.0`
/// (`0.059`, `2.67`, `12.0`) — the access line's format — without the float formatting machinery,
/// which was ~1% of a proxied request's instructions.
fn push_millis(out: &mut Vec<u8>, latency: std::time::Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    push_decimal(out, micros / 1000);
    out.push(b'.');
    let fraction = micros % 1000;
    if fraction == 0 {
        out.push(b'0');
        return;
    }
    let digits = [b'0' + (fraction / 100) as u8, b'0' + (fraction / 10 % 10) as u8, b'0' + (fraction % 10) as u8];
    let len = if digits[2] != b'0' { 3 } else if digits[1] != b'0' { 2 } else { 1 };
    out.extend_from_slice(&digits[..len]);
}

/// Printable ASCII that neither `Debug` nor JSON escapes.
fn plain(value: &str) -> bool {
    value.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

/// `value` as `{:?}` writes it.
fn quoted_debug(out: &mut Vec<u8>, value: &str) {
    if plain(value) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// `value` as a JSON string.
fn json_string(out: &mut Vec<u8>, value: &str) {
    if plain(value) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

thread_local! {
    /// `YYYY-MM-DDTHH:MM:SS` of the second this thread last logged in, and that second.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// The current time as tracing-subscriber's `SystemTime` writes it: RFC 3339, UTC, microseconds.
fn timestamp(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let formatted = chrono::DateTime::<chrono::Utc>::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            if formatted.len() == 19 {
                second.1.copy_from_slice(formatted.as_bytes());
                second.0 = secs;
            } else {
                // Beyond year 9999: no cache, the line is still right.
                out.extend_from_slice(formatted.as_bytes());
                let _ = write!(out, ".{:06}Z", now.subsec_micros());
                return;
            }
        }
        out.extend_from_slice(&second.1);
        push_micros_fraction(out, now.subsec_micros());
    });
}

/// `.uuuuuuZ`: the microseconds of a second, six digits, as `.{:06}Z` writes them.
fn push_micros_fraction(out: &mut Vec<u8>, micros: u32) {
    let mut text = *b".000000Z";
    let mut rest = micros.min(999_999);
    for at in (1..7).rev() {
        text[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&text);
}


/// Buffer size at which a worker writes its lines without waiting to go idle.
const FLUSH_AT: usize = 32 * 1024;

thread_local! {
    /// The lines a worker thread has not written yet; `None` on threads that write each line.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// A worker thread's unwritten lines, and where they go. Written when the thread ends, too.
struct Pending {
    lines: Vec<u8>,
    out: Arc<Output>,
}

/// Held while a batch is written. A pipe keeps a `write` whole only up to 4 KiB (a socket, such as
/// journald's, not even that), and a full pipe makes `write_all` go in pieces: two workers writing
/// batches at once could cut each other's lines. One lock per batch — not per line — costs nothing
/// measurable.
static BATCH_WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Pending {
    /// Appends a line written by `write`; writes the lines when `urgent` or at [`FLUSH_AT`].
    fn push(&mut self, urgent: bool, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.lines);
        if urgent || self.lines.len() >= FLUSH_AT {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.lines.is_empty() {
            let _writing = BATCH_WRITE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Nothing sensible to do when standard error fails: drop the lines rather than grow.
            let _ = self.out.write_now(&self.lines);
            self.lines.clear();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.flush();
    }
}

/// From now on, this thread's `INFO`/`DEBUG`/`TRACE` lines are buffered until
/// [`flush_this_thread`] (see the module doc). Does nothing before [`init`] installed our output
/// (in tests, say): lines then go wherever the installed subscriber sends them.
pub fn buffer_this_thread() {
    let Some(out) = OUTPUT.get() else { return };
    PENDING.with(|pending| {
        pending.borrow_mut().get_or_insert_with(|| Pending { lines: Vec::with_capacity(FLUSH_AT), out: out.clone() });
    });
}

/// Writes this thread's buffered lines, if any, with one `write`.
pub fn flush_this_thread() {
    with_pending(Pending::flush);
}

/// Runs `f` on this thread's pending lines. `None` on a thread that writes each line — and while
/// they are in use or being torn down (a line logged then is written directly, never a panic).
fn with_pending<R>(f: impl FnOnce(&mut Pending) -> R) -> Option<R> {
    PENDING.try_with(|pending| pending.try_borrow_mut().ok()?.as_mut().map(f)).ok().flatten()
}

/// The output installed by [`init`], for [`buffer_this_thread`].
static OUTPUT: std::sync::OnceLock<Arc<Output>> = std::sync::OnceLock::new();

/// Standard error through its own descriptor; through `std::io::stderr()` when the descriptor
/// could not be duplicated.
struct Output(Option<File>);

impl Output {
    fn stderr() -> SharedOutput {
        use std::os::fd::AsFd;
        let out = OUTPUT
            .get_or_init(|| Arc::new(Output(io::stderr().as_fd().try_clone_to_owned().ok().map(File::from))))
            .clone();
        SharedOutput(out)
    }

    fn write_now(&self, bytes: &[u8]) -> io::Result<()> {
        match &self.0 {
            Some(file) => (&*file).write_all(bytes),
            None => io::stderr().write_all(bytes),
        }
    }
}

/// What tracing-subscriber asks for a writer per event.
struct SharedOutput(Arc<Output>);

impl<'a> MakeWriter<'a> for SharedOutput {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter { out: &self.0, urgent: true }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter<'a> {
        LineWriter { out: &self.0, urgent: *meta.level() <= Level::WARN }
    }
}

/// Writes one formatted event: into the thread's buffer when it has one, else straight out.
struct LineWriter<'a> {
    out: &'a Output,
    /// A warning or an error: out at once (with the buffered lines before it).
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match with_pending(|pending| pending.push(self.urgent, |lines| lines.extend_from_slice(buf))) {
            Some(()) => Ok(()),
            None => self.out.write_now(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The text log line exactly as tracing-subscriber's default format writes it without colors
/// (`2026-01-02T03:04:05.123456Z  INFO target: message key=value …`), written directly.
/// Performance: the generic formatter styles every piece even with colors off, and the access log
/// line was ~15% of a proxied request's instructions; this writes it with about half of that.
struct PlainText;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainText
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
        // Records of the `log` crate (rustls logs through it) keep their own target and level.
        let normalized = tracing_log::NormalizeEvent::normalized_metadata(event);
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write!(writer, " {:>5} {}: ", meta.level().as_str(), meta.target())?;
        let mut fields = PlainFields { writer: &mut writer, first: true, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writeln!(writer)
    }
}

/// Writes an event's fields like tracing-subscriber's default visitor: the message as is, then
/// ` name=value` with values in their `Debug` form (strings quoted, `%`-fields as displayed).
struct PlainFields<'a, 'w> {
    writer: &'a mut tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl PlainFields<'_, '_> {
    /// Starts a field: the separator, then `name=` (nothing for the message). `false` when the
    /// field is not written (a `log.` field, or an earlier write failed).
    fn start(&mut self, field: &tracing::field::Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        if name != "message" {
            self.result = self.result.and_then(|()| self.writer.write_str(name.strip_prefix("r#").unwrap_or(name))).and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl tracing::field::Visit for PlainFields<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if value.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
            // What `Debug` writes for a string that needs no escaping, without its per-character
            // escape machinery (the access line has three such fields).
            if self.start(field) {
                self.result = self.writer.write_char('"').and_then(|()| self.writer.write_str(value)).and_then(|()| self.writer.write_char('"'));
            }
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_error(&mut self, field: &tracing::field::Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.start(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// At most one log line per interval from one call site (or one owner); the lines not written are
/// counted and reported by the next one. For lines a client can cause at will: refusals, client
/// faults, a full listener.
pub(crate) struct LogBudget {
    interval_ms: u64,
    next_ms: AtomicU64,
    skipped: AtomicU64,
}

impl LogBudget {
    /// A budget of one line per `interval`, allowing a line now.
    pub(crate) const fn every(interval: std::time::Duration) -> LogBudget {
        LogBudget { interval_ms: interval.as_millis() as u64, next_ms: AtomicU64::new(0), skipped: AtomicU64::new(0) }
    }

    /// A budget of one line a second.
    pub(crate) const fn every_second() -> LogBudget {
        LogBudget::every(std::time::Duration::from_secs(1))
    }

    /// `Some(lines skipped since the last one)` when a line may be written now.
    pub(crate) fn take(&self) -> Option<u64> {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now < next || self.next_ms.compare_exchange(next, now + self.interval_ms, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_written_as_the_f64_milliseconds_debug_writes() {
        let micros = (0..200_000u64).chain([999_999, 1_000_000, 1_000_001, 86_400_000_000, 123_456_789_012]);
        for m in micros {
            let mut out = Vec::new();
            push_millis(&mut out, std::time::Duration::from_micros(m));
            assert_eq!(String::from_utf8(out).unwrap(), format!("{:?}", m as f64 / 1000.0), "{m} µs");
        }
        let mut out = Vec::new();
        push_millis(&mut out, std::time::Duration::from_nanos(1_999));
        assert_eq!(out, b"0.001", "below the microsecond is dropped, as as_micros does");
        for micros in [0u32, 5, 42, 999, 1_000, 123_456, 999_999] {
            let mut out = Vec::new();
            push_micros_fraction(&mut out, micros);
            assert_eq!(String::from_utf8(out).unwrap(), format!(".{micros:06}Z"));
        }
        for n in [0u64, 7, 10, 200, 404, 65_535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    fn line<'a>(path: &'a str, sub: &'a str) -> Access<'a> {
        Access { method: "GET", path, status: 200, latency: std::time::Duration::from_micros(1408), sub, request_id: "rid-1", trace_id: "4bf92f3577b34da6a3ce929d0e0e4736" }
    }

    #[test]
    fn a_log_budget_allows_one_line_per_interval_and_counts_the_rest() {
        let budget = LogBudget::every_second();
        assert_eq!(budget.take(), Some(0));
        assert_eq!(budget.take(), None);
        assert_eq!(budget.take(), None);
        budget.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(budget.take(), Some(2));
        let slow = LogBudget::every(std::time::Duration::from_secs(10));
        assert_eq!(slow.take(), Some(0));
        assert!(slow.next_ms.load(Ordering::Relaxed) >= 10_000);
    }

    #[test]
    fn the_text_access_line_is_what_tracing_writes() {
        let mut out = Vec::new();
        write_access_text(&mut out, &line("/a\"b", "ca\"mille"));
        let text = String::from_utf8(out).unwrap();
        let (stamp, rest) = text.split_at(27);
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T' && stamp.as_bytes()[19] == b'.', "{stamp}");
        assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok(), "{stamp}");
        assert_eq!(
            rest,
            "  INFO trousseau_proxy::access: request method=GET path=/a\"b status=200 latency_ms=1.408 sub=\"ca\\\"mille\" request_id=\"rid-1\" trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"\n"
        );
    }

    #[test]
    fn the_json_access_line_is_one_object_with_every_field() {
        let mut out = Vec::new();
        write_access_json(&mut out, &line("/a\"b\\c\u{7}", "é"));
        assert_eq!(out.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["message"], "request");
        assert_eq!(value["target"], ACCESS_TARGET);
        assert_eq!(value["method"], "GET");
        assert_eq!(value["path"], "/a\"b\\c\u{7}");
        assert_eq!(value["status"], 200);
        assert_eq!(value["latency_ms"], 1.408);
        assert_eq!(value["sub"], "é");
        assert_eq!(value["request_id"], "rid-1");
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(chrono::DateTime::parse_from_rfc3339(value["timestamp"].as_str().unwrap()).is_ok());
    }
}
