//! AdmissionReview v1, the subset a pod-mutating webhook needs, and the one function that turns
//! a review request into its answer.
//!
//! The answer is always an AdmissionReview: `allowed: true` with or without a JSON patch, or
//! `allowed: false` with a status message when the request is malformed or an opted-in pod
//! cannot be protected (the injector is fail-closed: a pod that asked for the proxy never runs
//! without it). Only a body that is not an AdmissionReview at all, with no `uid` to answer to,
//! is an HTTP error ([`MalformedReview`]).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::pod::{self, Decision};
use super::scan::{self, PodMeta, Text};
use super::InjectorSettings;

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The kind of both the request and the response.
pub const KIND: &str = "AdmissionReview";

/// The request envelope as the API server sends it; `request` is read in place, later.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewRequestEnvelope<'a> {
    #[serde(default, borrow)]
    api_version: Option<Text<'a>>,
    #[serde(default, borrow)]
    kind: Option<Text<'a>>,
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
}

/// `request.uid`, read first: with it, any other problem is an answer rather than an HTTP error.
#[derive(Debug, Deserialize)]
struct RequestUid<'a> {
    #[serde(default, borrow)]
    uid: Option<Text<'a>>,
}

/// `request` of an AdmissionReview: the fields we read; the pod stays text.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionRequest<'a> {
    #[serde(borrow)]
    kind: GroupVersionKind<'a>,
    #[serde(default, borrow)]
    sub_resource: Option<Text<'a>>,
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    namespace: Option<Text<'a>>,
    #[serde(borrow)]
    operation: Text<'a>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
}

/// `group`/`version`/`kind` of the object under review.
#[derive(Debug, Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(default, borrow)]
    group: Option<Text<'a>>,
    #[serde(borrow)]
    version: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
}

/// The answer: an AdmissionReview with `response` set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// The verdict.
    pub response: AdmissionResponse,
}

/// `response` of an AdmissionReview.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's `uid`, echoed.
    pub uid: String,
    /// Whether the object may be created.
    pub allowed: bool,
    /// Why not (set when `allowed` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `JSONPatch` when a patch is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// The RFC 6902 patch, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown to the client (`kubectl` prints them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The part of `metav1.Status` an admission response carries.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// HTTP-like code: 400 for a malformed request, 422 for a pod that cannot be protected.
    pub code: u16,
    /// The message `kubectl` and controller events show.
    pub message: String,
}

/// A body that is not an AdmissionReview we can answer (no `request.uid`): HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("not an AdmissionReview {API_VERSION} request: {0}")]
pub struct MalformedReview(pub String);

/// Answers one AdmissionReview request body. The body is read in place: the pod is never
/// copied into a JSON tree (see [`scan`]).
pub fn review(body: &[u8], settings: &InjectorSettings) -> Result<AdmissionReviewResponse, MalformedReview> {
    let envelope: ReviewRequestEnvelope<'_> =
        serde_json::from_slice(body).map_err(|e| MalformedReview(format!("invalid JSON: {e}")))?;
    let request = envelope.request.ok_or_else(|| MalformedReview("`request` is missing".into()))?;
    let uid: RequestUid<'_> =
        serde_json::from_str(request.get()).map_err(|e| MalformedReview(format!("`request` is not an object: {e}")))?;
    let uid = uid
        .uid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| MalformedReview("`request.uid` is missing".into()))?
        .to_string();
    let answer = Answer { uid };

    if envelope.api_version.as_deref() != Some(API_VERSION) || envelope.kind.as_deref() != Some(KIND) {
        return Ok(answer.deny(
            400,
            format!(
                "expected apiVersion {API_VERSION} kind {KIND}, got {} {} (set admissionReviewVersions: [v1])",
                envelope.api_version.as_deref().unwrap_or("(none)"),
                envelope.kind.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    let request: AdmissionRequest<'_> = match serde_json::from_str(request.get()) {
        Ok(r) => r,
        Err(e) => return Ok(answer.deny(400, format!("malformed AdmissionReview request: {e}"))),
    };
    let is_pod = request.kind.group.as_deref().unwrap_or("").is_empty()
        && &*request.kind.version == "v1"
        && &*request.kind.kind == "Pod";
    if !is_pod || request.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return Ok(answer.allow(vec![format!(
            "trousseau-proxy injector: ignored a {} (only pods are injected; check the webhook's rules)",
            request.kind.kind
        )]));
    }
    // Containers are immutable after creation: only CREATE can be injected.
    if &*request.operation != "CREATE" {
        return Ok(answer.allow(Vec::new()));
    }
    let Some(object) = request.object.map(RawValue::get).filter(|o| o.starts_with('{')) else {
        return Ok(answer.deny(400, "malformed AdmissionReview request: `request.object` is not a pod".into()));
    };
    let meta = match scan::metadata(object) {
        Ok(meta) => meta,
        Err(e) => return Ok(answer.deny(400, format!("malformed AdmissionReview request: `request.object`: {e}"))),
    };

    let who = pod_name(&meta, request.name.as_deref());
    let asked = Asked { who: &who, namespace: request.namespace.as_deref().unwrap_or("-"), dry_run: request.dry_run.unwrap_or(false) };
    Ok(answer.decided(pod::decide(object, &meta, settings), &asked, settings))
}

/// Builds responses to one request.
struct Answer {
    uid: String,
}

impl Answer {
    fn allow(self, warnings: Vec<String>) -> AdmissionReviewResponse {
        self.respond(true, None, warnings)
    }

    fn deny(self, code: u16, message: String) -> AdmissionReviewResponse {
        self.respond(false, Some(Status { code, message }), Vec::new())
    }

    fn respond(self, allowed: bool, status: Option<Status>, warnings: Vec<String>) -> AdmissionReviewResponse {
        let warnings = warnings.into_iter().map(fit_warning).collect();
        AdmissionReviewResponse {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            response: AdmissionResponse { uid: self.uid, allowed, status, patch_type: None, patch: None, warnings },
        }
    }

    /// The answer to an opted-in (or not) pod: left alone, patched, or refused with the reason.
    fn decided(self, decision: Result<Decision, pod::PodError>, asked: &Asked<'_>, settings: &InjectorSettings) -> AdmissionReviewResponse {
        let Asked { who, namespace, dry_run } = *asked;
        let patch = match decision {
            Ok(Decision::NotOptedIn) => return self.allow(Vec::new()),
            Ok(Decision::AlreadyInjected) => {
                tracing::info!(uid = %self.uid, namespace, pod = %who, dry_run, "already injected: skipped");
                return self.allow(vec![format!(
                    "trousseau-proxy: pod {who} already has the proxy ({} annotation or container): not injected again",
                    super::INJECTED_ANNOTATION
                )]);
            }
            Err(e) => {
                tracing::warn!(uid = %self.uid, namespace, pod = %who, dry_run, error = %e, "refused an opted-in pod");
                let label = format!("{}: {}", super::INJECT_LABEL, super::INJECT_VALUE);
                return self.deny(422, format!("trousseau-proxy cannot protect pod {who} ({label}): {e}"));
            }
            Ok(Decision::Inject { patch, warnings }) => (serde_json::to_vec(&patch), warnings),
        };
        let (patch, warnings) = match patch {
            (Ok(patch), warnings) => (patch, warnings),
            (Err(e), _) => return self.deny(500, format!("cannot encode the patch: {e}")),
        };
        // dryRun needs nothing special: the injector has no side effects (sideEffects: None), so a
        // dry run gets the same patch the real request would.
        let mode = if settings.native_sidecar { "native-sidecar" } else { "container" };
        tracing::info!(uid = %self.uid, namespace, pod = %who, dry_run, mode, "injected");
        AdmissionReviewResponse {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            response: AdmissionResponse {
                uid: self.uid,
                allowed: true,
                status: None,
                patch_type: Some("JSONPatch".into()),
                patch: Some(base64::engine::general_purpose::STANDARD.encode(patch)),
                warnings: warnings.into_iter().map(fit_warning).collect(),
            },
        }
    }
}

/// Who a review is about, for its log line and its answer.
#[derive(Clone, Copy)]
struct Asked<'a> {
    who: &'a str,
    namespace: &'a str,
    dry_run: bool,
}

/// The API server may cut warnings longer than 256 characters; cut them ourselves, cleanly.
fn fit_warning(mut warning: String) -> String {
    const MAX: usize = 256;
    if warning.len() > MAX {
        let mut end = MAX - 3;
        while !warning.is_char_boundary(end) {
            end -= 1;
        }
        warning.truncate(end);
        warning.push_str("...");
    }
    warning
}

/// The pod's name for messages: its name, else `generateName` + `*` (pods of a ReplicaSet are
/// named by the API server after admission).
fn pod_name(meta: &PodMeta<'_>, request_name: Option<&str>) -> String {
    let name = meta.name.as_deref().filter(|n| !n.is_empty()).or(request_name.filter(|n| !n.is_empty()));
    match (name, meta.generate_name.as_deref().filter(|n| !n.is_empty())) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "(unnamed)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_warnings_are_cut_on_a_character_boundary() {
        assert_eq!(fit_warning("short".into()), "short");
        let cut = fit_warning("é".repeat(200));
        assert!(cut.len() <= 256 && cut.ends_with("..."), "{}", cut.len());
    }
}
