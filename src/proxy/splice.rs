//! Websocket tunnels: after a `101`, the browser's and the app's connections are spliced together
//! in a task of their own, bytes copied both ways until either side closes.
//!
//! A tunnel opened for a session carries a [`Tether`]: when the session ends, the proxy ends the
//! websocket the way the protocol wants — a close frame with code 1008 (policy violation) and a
//! short reason to each side, then the connection closed. A close frame may only go between
//! frames, so each direction follows where its frames end ([`FrameCursor`]: the two to fourteen
//! header bytes of each frame are read, its payload is skipped by its length, nothing is decoded
//! and nothing is checked per frame). When the cut comes in the middle of a frame, that frame is
//! finished first (for at most [`CLOSE_WAIT`], with everything else).

use std::io;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tether::{EndReason, Tether};

/// The websocket close code for a session that ended: 1008, policy violation (RFC 6455 §7.4.1).
pub const POLICY_VIOLATION: u16 = 1008;

/// How long ending a tunnel may take: finishing the frames in flight, sending the close frames,
/// and hearing the peers close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Bytes read at a time each way (as `tokio::io::copy_bidirectional`).
const BUFFER: usize = 8 * 1024;

/// Copies bytes both ways between the browser's and the app's upgraded connections until either
/// side closes, or until `tether` is cut. The browser's side completes once the `101` has been
/// written to it.
pub(super) fn splice(client: OnUpgrade, app: OnUpgrade, hold: Option<crate::limits::UpgradeHold>, tether: Option<Tether>) {
    if let Some(hold) = &hold {
        hold.adopt();
    }
    tokio::spawn(async move {
        let _hold = hold;
        let (client, app) = match tokio::try_join!(client, app) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(error = %err, "protocol upgrade did not complete");
                return;
            }
        };
        let (mut client, mut app) = (TokioIo::new(client), TokioIo::new(app));
        match tether {
            Some(tether) => tethered(client, app, &tether).await,
            None => match tokio::io::copy_bidirectional(&mut client, &mut app).await {
                Ok((to_app, to_client)) => tracing::debug!(to_app, to_client, "upgraded connection closed"),
                Err(err) => tracing::debug!(error = %err, "upgraded connection ended"),
            },
        }
    });
}

/// The splice of a tunnel tied to a session: see the module documentation.
pub async fn tethered<C, A>(client: C, app: A, tether: &Tether)
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut app_r, mut app_w) = tokio::io::split(app);
    let mut up = Pump::new();
    let mut down = Pump::new();
    let reason = tokio::select! {
        copied = async { tokio::try_join!(up.run(&mut client_r, &mut app_w), down.run(&mut app_r, &mut client_w)) } => {
            if let Err(err) = copied {
                tracing::debug!(error = %err, "upgraded connection ended");
            }
            return;
        }
        reason = tether.cut() => reason,
    };
    // Frames to the app are masked, frames to the browser are not (RFC 6455 §5.1).
    let closing = async {
        tokio::join!(
            up.close(&mut client_r, &mut app_w, reason, true),
            down.close(&mut app_r, &mut client_w, reason, false),
        )
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, closing).await;
}

/// One direction of a tunnel: the bytes read but not yet written, and where the frames end.
struct Pump {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    frames: FrameCursor,
    /// The source has closed.
    eof: bool,
}

impl Pump {
    fn new() -> Pump {
        Pump { buf: vec![0; BUFFER].into_boxed_slice(), start: 0, end: 0, frames: FrameCursor::default(), eof: false }
    }

    /// Copies until the source closes (then closes the destination's writing side). Safe to
    /// drop at any await: what was written is accounted for, what was not stays in the buffer.
    async fn run<R, W>(&mut self, from: &mut R, to: &mut W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            while self.start < self.end {
                let n = to.write(&self.buf[self.start..self.end]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.frames.advance(&self.buf[self.start..self.start + n]);
                self.start += n;
            }
            to.flush().await?;
            let n = from.read(&mut self.buf).await?;
            (self.start, self.end) = (0, n);
            if n == 0 {
                self.eof = true;
                return to.shutdown().await;
            }
        }
    }

    /// Finishes the frame in flight (forwarding nothing past its end), sends a close frame for
    /// `reason`, closes the writing side, then reads what the source still sends until it closes.
    async fn close<R, W>(&mut self, from: &mut R, to: &mut W, reason: EndReason, masked: bool)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let _ = self.finish_frame(from, to).await;
        if self.frames.at_boundary() && !self.eof {
            let _ = to.write_all(&close_frame(POLICY_VIOLATION, reason.close_text(), masked)).await;
        }
        let _ = to.flush().await;
        let _ = to.shutdown().await;
        while !self.eof {
            match from.read(&mut self.buf).await {
                Ok(0) | Err(_) => self.eof = true,
                Ok(_) => {}
            }
        }
    }

    async fn finish_frame<R, W>(&mut self, from: &mut R, to: &mut W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        while !self.frames.at_boundary() {
            if self.start == self.end {
                let n = from.read(&mut self.buf).await?;
                (self.start, self.end) = (0, n);
                if n == 0 {
                    self.eof = true;
                    return Ok(());
                }
            }
            let n = self.frames.clone().len_to_frame_end(&self.buf[self.start..self.end]);
            to.write_all(&self.buf[self.start..self.start + n]).await?;
            self.frames.advance(&self.buf[self.start..self.start + n]);
            self.start += n;
        }
        Ok(())
    }
}

/// Where the websocket frames of one direction end, followed through the bytes that pass.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FrameCursor {
    /// Reading a frame header: `have` of its bytes so far.
    Header { bytes: [u8; 14], have: usize },
    /// Inside a frame's payload, `left` bytes to go.
    Payload { left: u64 },
}

impl Default for FrameCursor {
    fn default() -> Self {
        FrameCursor::Header { bytes: [0; 14], have: 0 }
    }
}

impl FrameCursor {
    /// Between two frames: a close frame may go here.
    fn at_boundary(&self) -> bool {
        matches!(self, FrameCursor::Header { have: 0, .. })
    }

    /// Follows `bytes` through as many frames as they hold.
    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.step(bytes);
            bytes = &bytes[n..];
        }
    }

    /// How many of `bytes` complete the current frame (all of them if it goes on past them).
    fn len_to_frame_end(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        while taken < bytes.len() {
            taken += self.step(&bytes[taken..]);
            if self.at_boundary() {
                break;
            }
        }
        taken
    }

    /// Consumes bytes of the header or of the payload, never both: how many.
    fn step(&mut self, bytes: &[u8]) -> usize {
        match self {
            FrameCursor::Payload { left } => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                if *left == 0 {
                    *self = FrameCursor::default();
                }
                n as usize
            }
            FrameCursor::Header { bytes: header, have } => {
                let mut taken = 0;
                loop {
                    let need = header_len(&header[..*have]);
                    if *have == need {
                        let left = payload_len(&header[..need]);
                        *self = if left == 0 { FrameCursor::default() } else { FrameCursor::Payload { left } };
                        return taken;
                    }
                    let Some(&byte) = bytes.get(taken) else { return taken };
                    header[*have] = byte;
                    *have += 1;
                    taken += 1;
                }
            }
        }
    }
}

/// The length of a frame header whose first bytes are `start` (at least 2 until they are known).
fn header_len(start: &[u8]) -> usize {
    let Some(&second) = start.get(1) else { return 2 };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + if second & 0x80 != 0 { 4 } else { 0 }
}

/// The payload length a complete header announces.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes(header[2..10].try_into().expect("eight bytes")),
        n => u64::from(n),
    }
}

/// A close frame (FIN, opcode 8) with `code` and `reason`; masked with a random key when it goes
/// to the app, as every frame from a client must be.
fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    let mut frame = vec![0x88, payload.len() as u8 | if masked { 0x80 } else { 0 }];
    if masked {
        let mut key = [0u8; 4];
        // A zero key if the system's generator fails: masking defends against cache poisoning by
        // scripts choosing the bytes, and these bytes are ours.
        let _ = aws_lc_rs::rand::fill(&mut key);
        frame.extend_from_slice(&key);
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
    }
    frame.extend_from_slice(&payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    fn frame(len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let mask = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(len as u8 | mask),
            126..=65535 => {
                f.push(126 | mask);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(127 | mask);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, len));
        f
    }

    #[test]
    fn frame_ends_are_found_for_every_length_form_however_the_bytes_are_split() {
        for (len, masked) in [(0, false), (5, true), (125, false), (126, true), (65535, false), (65536, true), (200_000, false)] {
            let bytes: Vec<u8> = [frame(len, masked), frame(3, masked)].concat();
            let first_end = frame(len, masked).len();
            for chunk in [1, 2, 3, 7, 13, 4096] {
                let mut cursor = FrameCursor::default();
                let mut at = 0;
                for piece in bytes.chunks(chunk) {
                    cursor.advance(piece);
                    at += piece.len();
                    assert_eq!(cursor.at_boundary(), at == first_end || at == bytes.len(), "len {len}, chunk {chunk}, at {at}");
                }
            }
            let mut cursor = FrameCursor::default();
            assert_eq!(cursor.len_to_frame_end(&bytes), first_end, "len {len}");
            assert!(cursor.at_boundary());
        }
    }

    /// A websocket client and an app on either side of a tethered splice, over in-memory pipes.
    async fn tunnel() -> (WebSocketStream<tokio::io::DuplexStream>, WebSocketStream<tokio::io::DuplexStream>, crate::tether::Cutter, tokio::task::JoinHandle<()>) {
        let (browser, proxy_client_side) = tokio::io::duplex(64 * 1024);
        let (proxy_app_side, app) = tokio::io::duplex(64 * 1024);
        let tether = Tether::new();
        let cutter = tether.cutter();
        let task = tokio::spawn(async move { tethered(proxy_client_side, proxy_app_side, &tether).await });
        let browser = WebSocketStream::from_raw_socket(browser, Role::Client, None).await;
        let app = WebSocketStream::from_raw_socket(app, Role::Server, None).await;
        (browser, app, cutter, task)
    }

    fn policy_close(message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> CloseFrame {
        match message {
            Some(Ok(Message::Close(Some(frame)))) => frame,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_cut_tunnel_closes_both_sides_with_1008_and_its_reason() {
        let (mut browser, mut app, cutter, task) = tunnel().await;
        browser.send(Message::text("hello")).await.unwrap();
        assert_eq!(app.next().await.unwrap().unwrap(), Message::text("hello"));
        app.send(Message::text("hi")).await.unwrap();
        assert_eq!(browser.next().await.unwrap().unwrap(), Message::text("hi"));

        assert!(cutter.cut(EndReason::Backchannel));
        let to_browser = policy_close(browser.next().await);
        assert_eq!(to_browser.code, CloseCode::Policy);
        assert_eq!(to_browser.reason.as_str(), EndReason::Backchannel.close_text());
        let to_app = policy_close(app.next().await);
        assert_eq!(to_app.code, CloseCode::Policy);
        assert_eq!(to_app.reason.as_str(), EndReason::Backchannel.close_text());
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("the tunnel ends").unwrap();
    }

    #[tokio::test]
    async fn a_frame_in_flight_is_finished_before_the_close_frame() {
        let (browser, mut app, cutter, task) = tunnel().await;
        // The browser sends the first half of a frame, then the cut comes, then the rest.
        let mut raw = browser.into_inner();
        let big = frame(10_000, true);
        raw.write_all(&big[..5_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(cutter.cut(EndReason::Logout));
        tokio::time::sleep(Duration::from_millis(50)).await;
        raw.write_all(&big[5_000..]).await.unwrap();
        match app.next().await {
            Some(Ok(Message::Binary(data))) => assert_eq!(data.len(), 10_000),
            other => panic!("the whole frame first, got {other:?}"),
        }
        assert_eq!(policy_close(app.next().await).code, CloseCode::Policy);
        drop(raw);
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("the tunnel ends").unwrap();
    }

    #[tokio::test]
    async fn a_tunnel_closed_by_either_side_ends_without_a_cut() {
        let (mut browser, mut app, cutter, task) = tunnel().await;
        browser.close(None).await.unwrap();
        assert!(matches!(app.next().await, Some(Ok(Message::Close(_)))));
        drop((browser, app));
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("the tunnel ends").unwrap();
        assert!(!cutter.is_open());
    }

    #[test]
    fn close_frames_to_the_app_are_masked_and_to_the_browser_are_not() {
        let plain = close_frame(POLICY_VIOLATION, "bye", false);
        assert_eq!(plain, [0x88, 5, 0x03, 0xf0, b'b', b'y', b'e']);
        let masked = close_frame(POLICY_VIOLATION, "bye", true);
        assert_eq!(&masked[..2], &[0x88, 0x80 | 5]);
        let key = &masked[2..6];
        let payload: Vec<u8> = masked[6..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        assert_eq!(payload, [0x03, 0xf0, b'b', b'y', b'e']);
    }
}
