//! How the proxy's HTTP/2 answers are encoded: values new with every response are sent as HPACK
//! "never indexed" literals, so they take no place in the connection's header table (where h2
//! compared each new value with every earlier one, and a long-lived connection's table filled with
//! request ids nobody would ever reference). Read from the wire with a client of the test's own:
//! the h2 crate's client does not say how a header was encoded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Env, JEAN};

/// One HPACK representation's kind (RFC 7541 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Indexed,
    Incremental,
    WithoutIndexing,
    NeverIndexed,
    SizeUpdate,
}

/// `value` as an HPACK integer with an `n`-bit prefix, the byte's other bits `flags`.
fn encode_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal without indexing whose name is static-table entry `index`; the value not Huffman-coded.
fn literal(out: &mut Vec<u8>, index: usize, value: &str) {
    encode_int(out, 0x00, 4, index);
    encode_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

fn decode_int(block: &[u8], at: &mut usize, n: u32) -> usize {
    let max = (1usize << n) - 1;
    let mut value = usize::from(block[*at]) & max;
    *at += 1;
    if value == max {
        let mut shift = 0;
        loop {
            let b = block[*at];
            *at += 1;
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    value
}

fn skip_string(block: &[u8], at: &mut usize) {
    let len = decode_int(block, at, 7);
    *at += len;
}

/// The kinds of a header block's representations, in order (strings skipped, never decoded).
fn kinds(block: &[u8]) -> Vec<Kind> {
    let mut at = 0;
    let mut kinds = Vec::new();
    while at < block.len() {
        let first = block[at];
        let (kind, prefix) = match first {
            b if b & 0x80 != 0 => (Kind::Indexed, 7),
            b if b & 0xc0 == 0x40 => (Kind::Incremental, 6),
            b if b & 0xe0 == 0x20 => (Kind::SizeUpdate, 5),
            b if b & 0xf0 == 0x10 => (Kind::NeverIndexed, 4),
            _ => (Kind::WithoutIndexing, 4),
        };
        let name = decode_int(block, &mut at, prefix);
        if matches!(kind, Kind::Incremental | Kind::WithoutIndexing | Kind::NeverIndexed) {
            if name == 0 {
                skip_string(block, &mut at);
            }
            skip_string(block, &mut at);
        }
        kinds.push(kind);
    }
    kinds
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads frames until the header block of `stream` (HEADERS, no CONTINUATION: the answers are
/// small), acknowledging the server's settings on the way.
async fn header_block(conn: &mut TcpStream, stream: u32) -> Vec<u8> {
    loop {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).await.unwrap();
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.unwrap();
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match head[3] {
            0x4 if head[4] & 0x1 == 0 => conn.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap(),
            0x1 if id == stream => {
                assert!(head[4] & 0x4 != 0, "the answer's headers span CONTINUATION frames");
                assert!(head[4] & 0x28 == 0, "padded or prioritized HEADERS");
                return payload;
            }
            0x7 => panic!("GOAWAY: {payload:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn values_new_with_every_answer_are_never_put_in_the_http2_header_table() {
    let env = Env::start().await;
    let mut browser = env.browser();
    browser.sign_in("/", JEAN).await;
    let cookie = browser.cookie_header();

    let mut conn = TcpStream::connect(env.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    conn.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    let mut answers = Vec::new();
    for stream in [1u32, 3, 5, 7] {
        // :method GET, :scheme http (static 2, 6); :path, :authority, cookie (static 4, 1, 32).
        let mut block = vec![0x82, 0x86];
        literal(&mut block, 4, "/hello");
        literal(&mut block, 1, "proxy.test");
        literal(&mut block, 32, &cookie);
        literal(&mut block, 19, "application/json"); // accept
        conn.write_all(&frame(0x1, 0x5, stream, &block)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), header_block(&mut conn, stream)).await.expect("an answer");
        answers.push(kinds(&answer));
    }
    // Every answer carries its request id, and the app's date, never indexed.
    for kinds in &answers {
        assert!(kinds.iter().filter(|k| **k == Kind::NeverIndexed).count() >= 2, "{kinds:?}");
    }
    // After the first answer, what repeats is a reference to the table and what is new (the id,
    // the date when a second turns over) is never indexed: no incremental literal, which would be
    // a value put in the table again.
    for kinds in &answers[1..] {
        assert!(!kinds.contains(&Kind::Incremental), "a value put in the header table again: {answers:?}");
    }
}
