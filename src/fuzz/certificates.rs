//! The client certificate of mutual TLS (`tls.client_ca_file`): its subject becomes a header
//! for the app (`X-Trousseau-Client-Subject`).

/// The input is a DER certificate. Properties: reading the subject never panics; a subject read
/// is not empty, and the header value made of it carries no control character (no CR or LF to
/// split a header), whatever the certificate's names hold.
pub fn client_certificate(data: &[u8]) {
    let Some(subject) = crate::tls::serving::subject_of(data) else { return };
    assert!(!subject.is_empty());
    let value = crate::identity::header_value(&subject);
    assert!(value.as_bytes().iter().all(|&b| b >= 0x20 && b != 0x7f), "{value:?}");
}
