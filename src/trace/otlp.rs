//! OTLP/HTTP export of the recorded spans ([`super::record`]) to an OpenTelemetry collector
//! (`telemetry.otlp_endpoint`): protobuf (`application/x-protobuf`) posted to `/v1/traces`.
//!
//! The proxy never waits for the collector. A request's spans go into a bounded queue ([`QUEUE`]
//! spans; a full queue drops them and counts them) under a lock held for a push. A thread of its
//! own (its runtime apart from the workers') takes everything queued once [`BATCH`] spans are
//! waiting or [`BATCH_DELAY`] has passed, and posts it in batches of at most [`BATCH`] within
//! [`EXPORT_TIMEOUT`]; a batch the collector refuses or does not take in time is dropped and
//! counted (`trousseau_proxy_trace_spans_dropped_total`), with a warning at most every 30 s. No
//! retry: a collector that is down would only be sent the same spans again while new ones queue.
//!
//! A request wakes the exporter only when its spans fill a batch: a channel that woke it for each
//! request (a futex wake and a context switch per request) cost 1.3× the CPU time of a request
//! with every span exported, in `bench/run.sh` with `OTLP=1`.
//!
//! Why not the OpenTelemetry SDK's batch processor: the SDK builds a span through the `tracing`
//! or `opentelemetry` API with its attributes boxed one by one, and its exporters bring a second
//! HTTP client stack; the proxy already knows each span's fields when it ends and has an HTTP
//! client. The messages are OpenTelemetry's own (`opentelemetry-proto`), so what goes on the wire
//! is the collector's format, checked by decoding it in the tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::trace::v1::{span, status};
use prost::encoding::{encode_varint, WireType};
use tokio::sync::Notify;

use super::record::{SpanKind, SpanRecord, Value};

/// Spans that may wait for export: at 30,000 spans a second, a quarter of a second's worth.
pub const QUEUE: usize = 8192;
/// The most spans in one export.
pub const BATCH: usize = 512;
/// The longest a span waits for its batch to fill.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);
/// The longest one export may take, connection included.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The spans exported and dropped, for `/metrics`; kept across reloads.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full (the collector slow or down for a while).
    pub dropped_queue_full: AtomicU64,
    /// Spans dropped because their export failed (refused, unreachable, too slow).
    pub dropped_export_failed: AtomicU64,
}

/// The spans waiting for export, between the request path and the exporter's thread.
#[derive(Debug, Default)]
struct Queue {
    spans: Mutex<Vec<SpanRecord>>,
    /// Wakes the exporter: a batch is full, or the exporter is being dropped.
    ready: Notify,
    closed: AtomicBool,
}

/// The exporter: the request path's side of the queue. Its thread ends once it is dropped and
/// the last spans are posted.
#[derive(Debug)]
pub struct Exporter {
    queue: Arc<Queue>,
    endpoint: String,
    stats: Arc<ExportStats>,
    /// Says when the thread has posted its last spans and ended ([`Exporter::flush`]).
    done: Mutex<std::sync::mpsc::Receiver<()>>,
}

/// The URI spans are posted to: `endpoint` plus `/v1/traces` when it has no path of its own,
/// else `endpoint` as it is (OpenTelemetry's `OTEL_EXPORTER_OTLP_ENDPOINT` always appends it, its
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` never: this takes a collector's base URL or a full one).
/// `Err` says why it is not usable.
pub fn traces_uri(endpoint: &str) -> Result<http::Uri, String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("`{endpoint}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{endpoint}` must be an http:// or https:// URL of a collector (http://collector:4318)"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{endpoint}`: no user, password, query or fragment (they would be logged)"));
    }
    let mut text = url.to_string();
    if url.path() == "/" {
        text = format!("{}v1/traces", text);
    }
    text.parse().map_err(|e| format!("`{endpoint}`: {e}"))
}

impl Exporter {
    /// Starts exporting to `endpoint` (checked by [`traces_uri`]), counting in `stats`.
    pub fn start(endpoint: &str, stats: Arc<ExportStats>) -> Result<Arc<Exporter>, String> {
        let uri = traces_uri(endpoint)?;
        let tls = crate::tls::client_config(None).map_err(|e| e.to_string())?;
        let queue = Arc::new(Queue { spans: Mutex::new(Vec::with_capacity(QUEUE)), ..Queue::default() });
        let (spans, thread_stats) = (Arc::clone(&queue), Arc::clone(&stats));
        let (ended, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("trousseau-otlp".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return tracing::error!(error = %e, "cannot start the OTLP exporter's runtime: no span is exported"),
                };
                runtime.block_on(export_loop(spans, Poster::new(uri, tls), thread_stats));
                let _ = ended.send(());
            })
            .map_err(|e| format!("cannot start the exporter's thread: {e}"))?;
        Ok(Arc::new(Exporter { queue, endpoint: endpoint.to_string(), stats, done: Mutex::new(done) }))
    }

    /// Whether this exporter posts to `endpoint` (a reload keeps it then).
    pub fn exports_to(&self, endpoint: &str) -> bool {
        self.endpoint == endpoint
    }

    /// Queues one request's spans: its own and its children's. Never waits for the exporter; a
    /// full queue drops them (counted).
    pub fn submit(&self, span: SpanRecord, mut children: Vec<SpanRecord>) {
        let n = 1 + children.len();
        let Ok(mut queued) = self.queue.spans.lock() else { return };
        let before = queued.len();
        if before + n > QUEUE {
            drop(queued);
            self.stats.dropped_queue_full.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        queued.push(span);
        queued.append(&mut children);
        drop(queued);
        if before < BATCH && before + n >= BATCH {
            self.queue.ready.notify_one();
        }
    }
}

impl Exporter {
    /// At shutdown, once no request is left: posts what is queued and waits, at most `within`,
    /// for the exporter's thread to end. Spans submitted after it are dropped unexported.
    pub fn flush(&self, within: Duration) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.ready.notify_one();
        if let Ok(done) = self.done.lock() {
            let _ = done.recv_timeout(within);
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // The thread posts what is queued, then ends.
        self.queue.closed.store(true, Ordering::Release);
        self.queue.ready.notify_one();
    }
}

/// Posts batches to the collector.
struct Poster {
    uri: http::Uri,
    client: Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
}

impl Poster {
    fn new(uri: http::Uri, tls: rustls::ClientConfig) -> Poster {
        let connector = crate::tls::https_connector(tls, EXPORT_TIMEOUT);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Poster { uri, client }
    }

    /// Posts `spans`; `Err` says why they were not taken.
    async fn post(&self, spans: &[SpanRecord]) -> Result<(), String> {
        let body = encode(spans);
        let request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| crate::util::error_chain(&e))?;
            let status = response.status();
            // Read to the end, so the connection can carry the next batch (a partial-success
            // answer's details are not needed: the spans were taken).
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the collector answered {status}"))
            }
        };
        tokio::time::timeout(EXPORT_TIMEOUT, exchange).await.unwrap_or_else(|_| Err(format!("no answer within {EXPORT_TIMEOUT:?}")))
    }
}

/// Takes the queued spans out when a batch is full or [`BATCH_DELAY`] has passed, and posts them,
/// until the exporter is dropped.
async fn export_loop(queue: Arc<Queue>, poster: Poster, stats: Arc<ExportStats>) {
    static WARNING: crate::logging::LogBudget = crate::logging::LogBudget::every(Duration::from_secs(30));
    // Swapped with the queue's, so neither side allocates again once both have grown.
    let mut taken: Vec<SpanRecord> = Vec::with_capacity(QUEUE);
    loop {
        let _ = tokio::time::timeout(BATCH_DELAY, queue.ready.notified()).await;
        let closed = queue.closed.load(Ordering::Acquire);
        if let Ok(mut queued) = queue.spans.lock() {
            std::mem::swap(&mut *queued, &mut taken);
        }
        for batch in taken.chunks(BATCH) {
            let n = batch.len() as u64;
            match poster.post(batch).await {
                Ok(()) => {
                    stats.exported.fetch_add(n, Ordering::Relaxed);
                }
                Err(reason) => {
                    stats.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
                    if let Some(unlogged) = WARNING.take() {
                        tracing::warn!(collector = %poster.uri, spans = n, error = %reason, unlogged, "spans not exported: dropped (counted in trousseau_proxy_trace_spans_dropped_total)");
                    }
                }
            }
        }
        taken.clear();
        if closed {
            return;
        }
    }
}

/// The OTLP message carrying `spans` (an `ExportTraceServiceRequest`), encoded: written
/// straight from the records, field by field as `opentelemetry-proto`'s messages define them
/// (the tests decode it with those messages and compare it with their own encoding). Building the
/// messages first cost about 20 allocations a span, on the same two cores as the requests.
pub fn encode(spans: &[SpanRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + spans.len() * 256);
    // ExportTraceServiceRequest.resource_spans
    nested(&mut out, 1, |out| {
        // ResourceSpans.resource
        nested(out, 1, |out| {
            attribute(out, 1, "service.name", &Value::from("trousseau-proxy"));
            attribute(out, 1, "service.version", &Value::from(env!("CARGO_PKG_VERSION")));
        });
        // ResourceSpans.scope_spans
        nested(out, 2, |out| {
            // ScopeSpans.scope: InstrumentationScope { name, version }
            nested(out, 1, |out| {
                text(out, 1, "trousseau-proxy");
                text(out, 2, env!("CARGO_PKG_VERSION"));
            });
            for span in spans {
                // ScopeSpans.spans
                nested(out, 2, |out| span_fields(out, span));
            }
        });
    });
    out
}

/// A `Span`'s fields (trace.proto's numbers).
fn span_fields(out: &mut Vec<u8>, record: &SpanRecord) {
    let kind = match record.kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Internal => span::SpanKind::Internal,
    };
    bytes(out, 1, &record.trace_id);
    bytes(out, 2, &record.span_id);
    if let Some(parent) = &record.parent {
        bytes(out, 4, parent);
    }
    text(out, 5, &record.name);
    key(out, 6, WireType::Varint);
    encode_varint(kind as u64, out);
    key(out, 7, WireType::SixtyFourBit);
    out.extend_from_slice(&record.start_unix_nanos.to_le_bytes());
    key(out, 8, WireType::SixtyFourBit);
    out.extend_from_slice(&record.end_unix_nanos.to_le_bytes());
    for (name, value) in &record.attributes {
        attribute(out, 9, name, value);
    }
    if record.error {
        // Status { code: ERROR }
        nested(out, 15, |out| {
            key(out, 3, WireType::Varint);
            encode_varint(status::StatusCode::Error as u64, out);
        });
    }
    // flags: the W3C trace flags — only sampled traces are recorded.
    key(out, 16, WireType::ThirtyTwoBit);
    out.extend_from_slice(&1u32.to_le_bytes());
}

/// A `KeyValue` as field `field`.
fn attribute(out: &mut Vec<u8>, field: u32, name: &str, value: &Value) {
    nested(out, field, |out| {
        text(out, 1, name);
        // AnyValue: string_value (1) or int_value (3).
        nested(out, 2, |out| match value {
            Value::Text(t) => text(out, 1, t),
            Value::Int(n) => {
                key(out, 3, WireType::Varint);
                encode_varint(*n as u64, out);
            }
        });
    });
}

fn key(out: &mut Vec<u8>, field: u32, wire: WireType) {
    encode_varint(u64::from(field << 3 | wire as u32), out);
}

fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(out, field, WireType::LengthDelimited);
    encode_varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn text(out: &mut Vec<u8>, field: u32, data: &str) {
    bytes(out, field, data.as_bytes());
}

/// A length-delimited message as field `field`, written by `body` in place: room for a
/// five-byte length is left, and the body moved back once its length is known.
fn nested(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, WireType::LengthDelimited);
    let at = out.len();
    out.extend_from_slice(&[0; 5]);
    body(out);
    let len = out.len() - at - 5;
    let mut prefix = Vec::with_capacity(5);
    encode_varint(len as u64, &mut prefix);
    out.copy_within(at + 5.., at + prefix.len());
    out.truncate(at + prefix.len() + len);
    out[at..at + prefix.len()].copy_from_slice(&prefix);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message as _;

    #[test]
    fn the_endpoint_gets_the_traces_path_unless_it_has_one() {
        assert_eq!(traces_uri("http://collector:4318").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(traces_uri("http://collector:4318/").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(traces_uri("https://otel.example.com/custom/traces").unwrap(), "https://otel.example.com/custom/traces");
        for bad in ["collector:4318", "grpc://collector:4317", "http://user:pw@collector:4318", "http://collector:4318/?token=x", "nonsense"] {
            assert!(traces_uri(bad).is_err(), "{bad}");
        }
    }

    /// The same message built with `opentelemetry-proto`'s types and encoded by prost.
    fn encode_with_messages(spans: &[SpanRecord]) -> Vec<u8> {
        let kv = |key: &str, value: &Value| KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(match value {
                    Value::Text(text) => any_value::Value::StringValue(text.to_string()),
                    Value::Int(n) => any_value::Value::IntValue(*n),
                }),
            }),
            ..Default::default()
        };
        let resource = Resource {
            attributes: vec![kv("service.name", &Value::from("trousseau-proxy")), kv("service.version", &Value::from(env!("CARGO_PKG_VERSION")))],
            ..Default::default()
        };
        let spans = spans
            .iter()
            .map(|r| Span {
                trace_id: r.trace_id.to_vec(),
                span_id: r.span_id.to_vec(),
                parent_span_id: r.parent.map(|p| p.to_vec()).unwrap_or_default(),
                flags: 1,
                name: r.name.to_string(),
                kind: match r.kind {
                    SpanKind::Server => span::SpanKind::Server,
                    SpanKind::Client => span::SpanKind::Client,
                    SpanKind::Internal => span::SpanKind::Internal,
                } as i32,
                start_time_unix_nano: r.start_unix_nanos,
                end_time_unix_nano: r.end_unix_nanos,
                attributes: r.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                status: r.error.then(|| Status { code: status::StatusCode::Error as i32, ..Default::default() }),
                ..Default::default()
            })
            .collect();
        let scope = InstrumentationScope { name: "trousseau-proxy".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans { scope: Some(scope), spans, ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn the_direct_encoding_is_the_messages_encoding() {
        let long = "x".repeat(300);
        let records: Vec<SpanRecord> = (0..40u8)
            .map(|i| SpanRecord {
                trace_id: [i; 16],
                span_id: [i.wrapping_add(1); 8],
                parent: (i % 3 != 0).then_some([7; 8]),
                name: if i % 2 == 0 { "GET".into() } else { long.clone().into() },
                kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][usize::from(i % 3)],
                start_unix_nanos: 1_700_000_000_000_000_000 + u64::from(i),
                end_unix_nanos: 1_700_000_000_000_000_500 + u64::from(i),
                attributes: vec![("url.path", Value::from(long[..usize::from(i) * 7].to_string())), ("http.response.status_code", Value::Int(-i64::from(i)))],
                error: i % 5 == 0,
            })
            .collect();
        for n in [0, 1, 2, 40] {
            let ours = encode(&records[..n]);
            assert_eq!(
                ExportTraceServiceRequest::decode(ours.as_slice()).unwrap(),
                ExportTraceServiceRequest::decode(encode_with_messages(&records[..n]).as_slice()).unwrap(),
                "{n} spans"
            );
            assert_eq!(ours, encode_with_messages(&records[..n]), "byte for byte, {n} spans");
        }
    }

    #[test]
    fn spans_encode_as_the_collector_reads_them() {
        let record = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            name: "GET".into(),
            kind: SpanKind::Server,
            start_unix_nanos: 10,
            end_unix_nanos: 20,
            attributes: vec![("http.response.status_code", Value::Int(200)), ("trousseau.session", Value::from("valid"))],
            error: true,
        };
        let bytes = encode(&[record]);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!((span.trace_id.as_slice(), span.span_id.as_slice(), span.parent_span_id.as_slice()), (&[1u8; 16][..], &[2u8; 8][..], &[3u8; 8][..]));
        assert_eq!((span.name.as_str(), span.kind, span.start_time_unix_nano, span.end_time_unix_nano), ("GET", span::SpanKind::Server as i32, 10, 20));
        assert_eq!(span.attributes[0].value.as_ref().unwrap().value, Some(any_value::Value::IntValue(200)));
        assert_eq!(span.status.as_ref().unwrap().code, status::StatusCode::Error as i32);
    }
}
