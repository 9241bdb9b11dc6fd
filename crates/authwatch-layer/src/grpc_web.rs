//! The status of a gRPC-Web response, read from the trailers frame at the end of its body.
//!
//! gRPC-Web cannot rely on HTTP trailers, so the server sends them as the body's last frame:
//! a flag byte with the 0x80 bit set, a 4-byte big-endian length, then HTTP/1-style header
//! lines (`grpc-status:16\r\ngrpc-message:…\r\n`). Message frames (flag 0x00, or 0x01 when
//! compressed) come before it. The body reaches the layer in chunks that split frames anywhere,
//! so [`GrpcWebScan`] is a small state machine fed chunk by chunk: it skips message frames
//! without looking at them, scans the trailers frame for `grpc-status` as it streams past, and
//! never allocates or buffers.
//!
//! `application/grpc-web-text` carries the same frames in base64 (each frame may be encoded,
//! and padded, on its own). It is decoded on the fly, a few bytes at a time on the stack.
//!
//! Only `grpc-status` is read from the trailers frame: a `www-authenticate` among them does not
//! make a 16 an invalid token, as it does in native gRPC trailers (16 on a token-validation
//! route still is one).

use std::io::IoSlice;

use bytes::Buf;

use crate::classify::{classify_grpc, Malformed};
use crate::op::{AuthOp, Outcome};

/// How a gRPC-Web response encodes its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `application/grpc-web`, `application/grpc-web+proto`, …: the frames as they are.
    Binary,
    /// `application/grpc-web-text`, `application/grpc-web-text+proto`, …: the frames in base64.
    Text,
}

/// Follows a gRPC-Web response body to its trailers frame. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrpcWebScan {
    op: AuthOp,
    /// The base64 decoder in front of the frames, for `application/grpc-web-text`.
    text: Option<Base64>,
    frames: Frames,
}

impl GrpcWebScan {
    /// A scan of the body of a gRPC-Web response to an `op` request, before its first byte.
    pub(crate) fn new(op: AuthOp, encoding: Encoding) -> Self {
        Self {
            op,
            text: (encoding == Encoding::Text).then_some(Base64 { bits: 0, n: 0 }),
            frames: Frames::PREFIX,
        }
    }

    /// The next body bytes, as the data frame holds them (any `Buf`, contiguous or not),
    /// without consuming them.
    pub(crate) fn feed_buf(&mut self, data: &impl Buf) {
        if self.frames.is_done() {
            return;
        }
        let first = data.chunk();
        if first.len() == data.remaining() {
            self.feed(first);
            return;
        }
        // A buffer in pieces (a `Chain`, a queue of chunks): every piece, or the framing is
        // lost.
        let mut pieces = [IoSlice::new(&[]); 16];
        let n = data.chunks_vectored(&mut pieces);
        let pieces = &pieces[..n];
        if pieces.iter().map(|p| p.len()).sum::<usize>() != data.remaining() {
            self.frames = Frames::Unreadable;
            return;
        }
        for p in pieces {
            self.feed(p);
        }
    }

    /// The next body bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.frames.is_done() {
            return;
        }
        let Some(b64) = &mut self.text else {
            self.frames.feed(bytes);
            return;
        };
        // Decoded in batches on the stack, so the frame parser runs once per batch.
        let mut out = [0u8; 96];
        let mut len = 0;
        for &c in bytes {
            let Some(decoded) = b64.push(c) else {
                // What came before counts (it may have completed the trailers frame), as it
                // would have in a chunk of its own.
                self.frames.feed(&out[..len]);
                if !self.frames.is_done() {
                    self.frames = Frames::Unreadable;
                }
                return;
            };
            let d = decoded.bytes();
            out[len..len + d.len()].copy_from_slice(d);
            len += d.len();
            if len > out.len() - 3 {
                self.frames.feed(&out[..len]);
                len = 0;
            }
        }
        self.frames.feed(&out[..len]);
    }

    /// The outcome and `grpc-status` when the body has ended: from the trailers frame if one
    /// came; without one, a 200 whose head had no status is a success, as before the body.
    pub(crate) fn at_end(self) -> (Outcome, Option<u16>) {
        let status = match self.frames {
            Frames::Prefix { .. } | Frames::Message { .. } | Frames::Unreadable => {
                return (Outcome::Success, None)
            }
            // A trailers frame cut short counts if its `grpc-status` line was complete.
            Frames::Trailers { status, .. } | Frames::Ended(status) => status,
        };
        match status {
            Some(code) => classify_grpc(self.op, code, None),
            // Trailers without a status, as in native gRPC: the call failed.
            None => (Outcome::Error, None),
        }
    }
}

/// Where the parser is in the sequence of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frames {
    /// Reading a frame's 5-byte prefix: `got` bytes of it so far, the flag byte, the length.
    Prefix { got: u8, flag: u8, len: u32 },
    /// Inside a message frame, with `left` bytes of it to skip.
    Message { left: u32 },
    /// Inside the trailers frame, with `left` bytes of it to come.
    Trailers {
        left: u32,
        line: Line,
        status: Option<Result<u16, Malformed>>,
    },
    /// The trailers frame is complete: the status it carried. Nothing after it is read.
    Ended(Option<Result<u16, Malformed>>),
    /// Not gRPC-Web framing (a reserved flag bit, compressed trailers, bad base64): the
    /// head's classification stands.
    Unreadable,
}

/// The name the trailers frame is scanned for, in lowercase (header names match in any case).
const GRPC_STATUS: &[u8] = b"grpc-status";

/// A `Line::Value` digit count that marks the value malformed (more than 3 digits, or
/// anything but digits and surrounding whitespace).
const BAD_VALUE: u8 = 4;

impl Frames {
    const PREFIX: Self = Self::Prefix {
        got: 0,
        flag: 0,
        len: 0,
    };

    fn is_done(&self) -> bool {
        matches!(self, Self::Ended(_) | Self::Unreadable)
    }

    /// The frame that starts after a prefix with this flag and length.
    fn start(flag: u8, len: u32) -> Self {
        match (flag, len) {
            (0x00 | 0x01, 0) => Self::PREFIX,
            (0x00 | 0x01, left) => Self::Message { left },
            (0x80, 0) => Self::Ended(None),
            (0x80, left) => Self::Trailers {
                left,
                line: Line::Name(0),
                status: None,
            },
            _ => Self::Unreadable,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(&b) = bytes.first() {
            match self {
                Self::Prefix { got, flag, len } => {
                    if *got == 0 {
                        *flag = b;
                    } else {
                        *len = (*len << 8) | u32::from(b);
                    }
                    *got += 1;
                    bytes = &bytes[1..];
                    if *got == 5 {
                        *self = Self::start(*flag, *len);
                    }
                }
                Self::Message { left } => {
                    let n = take(*left, bytes.len());
                    bytes = &bytes[n..];
                    *left -= n as u32;
                    if *left == 0 {
                        *self = Self::PREFIX;
                    }
                }
                Self::Trailers { left, line, status } => {
                    let n = take(*left, bytes.len());
                    for &b in &bytes[..n] {
                        line.push(b, status);
                    }
                    bytes = &bytes[n..];
                    *left -= n as u32;
                    if *left == 0 {
                        // The last line needs no line break.
                        line.end(status);
                        *self = Self::Ended(*status);
                    }
                }
                Self::Ended(_) | Self::Unreadable => return,
            }
        }
    }
}

/// How many of `available` bytes belong to a frame with `left` bytes to go.
fn take(left: u32, available: usize) -> usize {
    usize::try_from(left).map_or(available, |left| left.min(available))
}

/// Where the scan is in one header line of the trailers frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// `n` bytes into the line, all of them the start of `grpc-status`.
    Name(u8),
    /// In the value of `grpc-status`: the code so far, its digit count ([`BAD_VALUE`]: not a
    /// code), and whether whitespace followed the digits (only more whitespace may come).
    Value { code: u16, digits: u8, ended: bool },
    /// Another header: skipped to the end of the line.
    Other,
}

impl Line {
    fn push(&mut self, b: u8, status: &mut Option<Result<u16, Malformed>>) {
        if b == b'\n' {
            self.end(status);
            return;
        }
        *self = match *self {
            Self::Name(n) => match GRPC_STATUS.get(usize::from(n)) {
                Some(&c) if b.to_ascii_lowercase() == c => Self::Name(n + 1),
                None if b == b':' => Self::Value {
                    code: 0,
                    digits: 0,
                    ended: false,
                },
                _ => Self::Other,
            },
            Self::Value {
                code,
                digits,
                ended,
            } => match b {
                b' ' | b'\t' | b'\r' => Self::Value {
                    code,
                    digits,
                    ended: digits > 0,
                },
                b'0'..=b'9' if !ended && digits < 3 => Self::Value {
                    code: code * 10 + u16::from(b - b'0'),
                    digits: digits + 1,
                    ended,
                },
                _ => Self::Value {
                    code,
                    digits: BAD_VALUE,
                    ended,
                },
            },
            Self::Other => Self::Other,
        };
    }

    /// The line ended: a `grpc-status` value is read (the first one counts, as for a header
    /// map) under the rules of [`parse_grpc_status`](crate::classify::parse_grpc_status).
    fn end(&mut self, status: &mut Option<Result<u16, Malformed>>) {
        if let Self::Value { code, digits, .. } = *self {
            if status.is_none() {
                *status = Some(if (1..=3).contains(&digits) {
                    Ok(code)
                } else {
                    Err(Malformed)
                });
            }
        }
        *self = Self::Name(0);
    }
}

/// The incremental base64 decoder of `application/grpc-web-text`: standard alphabet, with
/// padding allowed between frames (each frame may be encoded on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Base64 {
    /// The sextets not yet decoded, low bits last.
    bits: u32,
    /// How many sextets `bits` holds (0 to 3).
    n: u8,
}

/// Up to three decoded bytes.
struct Decoded {
    bytes: [u8; 3],
    len: u8,
}

impl Decoded {
    fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Base64 {
    /// One more character; `None` when it cannot be base64 here.
    fn push(&mut self, c: u8) -> Option<Decoded> {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => return self.pad(),
            _ => return None,
        };
        self.bits = (self.bits << 6) | u32::from(sextet);
        self.n += 1;
        if self.n < 4 {
            return Some(Decoded {
                bytes: [0; 3],
                len: 0,
            });
        }
        let [_, a, b, c] = self.bits.to_be_bytes();
        *self = Self { bits: 0, n: 0 };
        Some(Decoded {
            bytes: [a, b, c],
            len: 3,
        })
    }

    /// A `=`: the end of a group of two or three characters (one or two bytes); the second `=`
    /// of `==` finds the group already flushed.
    fn pad(&mut self) -> Option<Decoded> {
        let (bits, n) = (self.bits, self.n);
        *self = Self { bits: 0, n: 0 };
        match n {
            0 => Some(Decoded {
                bytes: [0; 3],
                len: 0,
            }),
            // 12 bits: one byte and 4 zero bits.
            2 => Some(Decoded {
                bytes: [(bits >> 4) as u8, 0, 0],
                len: 1,
            }),
            // 18 bits: two bytes and 2 zero bits.
            3 => Some(Decoded {
                bytes: [(bits >> 10) as u8, (bits >> 2) as u8, 0],
                len: 2,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::op::FailureReason;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![flag];
        f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A message frame, then a trailers frame holding `trailers`.
    fn body(trailers: &str) -> Vec<u8> {
        let mut b = frame(0x00, b"\x0a\x06hello!");
        b.extend(frame(0x80, trailers.as_bytes()));
        b
    }

    /// Standard base64 with padding, as `application/grpc-web-text` servers encode a frame.
    pub(crate) fn base64(bytes: &[u8]) -> Vec<u8> {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                out.push(if i <= chunk.len() {
                    ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]
                } else {
                    b'='
                });
            }
        }
        out
    }

    fn scan(op: AuthOp, encoding: Encoding, chunks: &[&[u8]]) -> (Outcome, Option<u16>) {
        let mut s = GrpcWebScan::new(op, encoding);
        for c in chunks {
            s.feed(c);
        }
        s.at_end()
    }

    fn login(bytes: &[u8]) -> (Outcome, Option<u16>) {
        scan(AuthOp::Login, Encoding::Binary, &[bytes])
    }

    const FAILED: (Outcome, Option<u16>) = (
        Outcome::Failure(FailureReason::InvalidCredentials),
        Some(16),
    );

    #[test]
    fn a_message_then_trailers_split_at_every_byte() {
        let b = body("grpc-status:16\r\ngrpc-message:bad%20password\r\n");
        for i in 0..=b.len() {
            for j in i..=b.len() {
                assert_eq!(
                    scan(
                        AuthOp::Login,
                        Encoding::Binary,
                        &[&b[..i], &b[i..j], &b[j..]]
                    ),
                    FAILED,
                    "split at {i} and {j}"
                );
            }
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(scan(AuthOp::Login, Encoding::Binary, &bytes), FAILED);
    }

    #[test]
    fn the_trailers_frame_follows_the_grpc_table() {
        use FailureReason::*;
        for (trailers, op, want) in [
            (
                "grpc-status:0\r\n",
                AuthOp::Login,
                (Outcome::Success, Some(0)),
            ),
            ("grpc-status: 16 \r\n", AuthOp::Login, FAILED),
            ("Grpc-Status:16", AuthOp::Login, FAILED),
            (
                "grpc-message:x\r\ngrpc-status:16\r\n",
                AuthOp::Login,
                FAILED,
            ),
            (
                "grpc-status:16\r\n",
                AuthOp::TokenValidation,
                (Outcome::Failure(InvalidToken), Some(16)),
            ),
            (
                "grpc-status:6\r\n",
                AuthOp::Registration,
                (Outcome::Failure(Conflict), Some(6)),
            ),
            (
                "grpc-status:8\r\n",
                AuthOp::Login,
                (Outcome::RateLimited, Some(8)),
            ),
            (
                "grpc-status:13\r\n",
                AuthOp::Login,
                (Outcome::Error, Some(13)),
            ),
            // The first status counts, as `HeaderMap::get` reads it.
            ("grpc-status:16\r\ngrpc-status:0\r\n", AuthOp::Login, FAILED),
            // Malformed or missing status: the call failed.
            ("grpc-status:1 6\r\n", AuthOp::Login, (Outcome::Error, None)),
            (
                "grpc-status:1600\r\n",
                AuthOp::Login,
                (Outcome::Error, None),
            ),
            ("grpc-status:x\r\n", AuthOp::Login, (Outcome::Error, None)),
            ("grpc-status:\r\n", AuthOp::Login, (Outcome::Error, None)),
            ("grpc-statuses:0\r\n", AuthOp::Login, (Outcome::Error, None)),
            ("x-grpc-status:0\r\n", AuthOp::Login, (Outcome::Error, None)),
            ("grpc-message:ok\r\n", AuthOp::Login, (Outcome::Error, None)),
            ("", AuthOp::Login, (Outcome::Error, None)),
        ] {
            assert_eq!(
                scan(op, Encoding::Binary, &[&body(trailers)]),
                want,
                "{trailers:?} {op}"
            );
        }
    }

    #[test]
    fn without_a_trailers_frame_the_head_stands() {
        let ok = (Outcome::Success, None);
        assert_eq!(login(b""), ok);
        assert_eq!(login(&frame(0x00, b"hi")), ok);
        // Compressed messages and empty ones are skipped like any other.
        let mut b = frame(0x01, b"zz");
        b.extend(frame(0x00, b""));
        assert_eq!(login(&b), ok);
        b.extend(frame(0x80, b"grpc-status:16"));
        assert_eq!(login(&b), FAILED);
        // Cut inside a prefix or a message.
        assert_eq!(login(&[0x00, 0x00]), ok);
        assert_eq!(login(&frame(0x00, b"hello")[..7]), ok);
    }

    #[test]
    fn malformed_framing_keeps_the_head() {
        let ok = (Outcome::Success, None);
        // A reserved flag bit, compressed trailers: not framing this parser can read.
        assert_eq!(login(&frame(0x02, b"grpc-status:16")), ok);
        assert_eq!(login(&frame(0x81, b"grpc-status:16")), ok);
        // A huge message length: skipped without buffering, the trailers never come.
        let mut huge = vec![0x00, 0xff, 0xff, 0xff, 0xff];
        huge.extend(frame(0x80, b"grpc-status:16"));
        assert_eq!(login(&huge), ok);
        // A huge trailers frame cut short: a complete status line still counts, a partial
        // one does not.
        let mut cut = vec![0x80, 0xff, 0xff, 0xff, 0xff];
        cut.extend_from_slice(b"grpc-status:16\r\n");
        assert_eq!(login(&cut), FAILED);
        assert_eq!(login(&cut[..cut.len() - 2]), (Outcome::Error, None));
        // Anything after the trailers frame is ignored.
        let mut after = body("grpc-status:16");
        after.extend(frame(0x80, b"grpc-status:0"));
        assert_eq!(login(&after), FAILED);
    }

    #[test]
    fn grpc_web_text_is_decoded_on_the_fly() {
        let b = body("grpc-status:16\r\n");
        // Encoded whole, and frame by frame (padding in the middle).
        let whole = base64(&b);
        let (message, trailers) = b.split_at(13);
        let mut apart = base64(message);
        apart.extend(base64(trailers));
        assert!(apart[..20].ends_with(b"=="), "padding between the frames");
        for text in [whole, apart] {
            for i in 0..=text.len() {
                assert_eq!(
                    scan(AuthOp::Login, Encoding::Text, &[&text[..i], &text[i..]]),
                    FAILED,
                    "split at {i}"
                );
            }
        }
        let ok = base64(&body("grpc-status:0"));
        assert_eq!(
            scan(AuthOp::Login, Encoding::Text, &[&ok]),
            (Outcome::Success, Some(0))
        );
        // Whatever follows the trailers frame is ignored, base64 or not.
        let mut trailing = base64(&b);
        trailing.extend_from_slice(b"\r\n!");
        assert_eq!(scan(AuthOp::Login, Encoding::Text, &[&trailing]), FAILED);
        // Not base64 before the trailers frame ended: unreadable.
        let mut cut = base64(&b);
        cut.insert(cut.len() - 4, b'!');
        assert_eq!(
            scan(AuthOp::Login, Encoding::Text, &[&cut]),
            (Outcome::Success, None)
        );
        // The binary bytes are not base64: unreadable, never a wrong status.
        assert_eq!(
            scan(AuthOp::Login, Encoding::Text, &[&b]),
            (Outcome::Success, None)
        );
        // Read as binary, base64 text is a frame with a reserved flag.
        assert_eq!(login(&base64(&b)), (Outcome::Success, None));
    }

    #[test]
    fn a_buffer_in_pieces_is_read_whole() {
        let b = body("grpc-status:16");
        let (x, y) = b.split_at(9);
        let mut s = GrpcWebScan::new(AuthOp::Login, Encoding::Binary);
        s.feed_buf(&x.chain(y));
        assert_eq!(s.at_end(), FAILED);
    }
}
