//! An HTTP/2 front that lets every gRPC client in, whatever `:authority` it sends.
//!
//! Over a unix socket, clients send all kinds of `:authority`: `localhost` (tonic, recent
//! grpc-go), the raw socket path (the 2015 grpc-go of containerd's `ctr`, grpc-java), or the
//! percent-encoded path (grpc Python since 1.57). hyper's h2 resets a stream whose authority
//! does not parse as a URI authority with `PROTOCOL_ERROR` (an unmerged upstream fix,
//! hyperium/h2#487), which would lock most real clients out.
//!
//! [`AuthorityFront`] wraps the accepted socket and rewrites the client-to-server byte
//! stream before h2 reads it: every header block is HPACK-decoded with one decoder per
//! connection (header blocks reference the client's dynamic table, so every block must be
//! seen, in order) and re-encoded as literals without indexing, with an invalid
//! `:authority` replaced by `localhost`. h2's decoder table therefore stays empty and in
//! step. All other frames (DATA, SETTINGS, PING, WINDOW_UPDATE, ...) pass through untouched,
//! as they arrive, so flow control is unaffected. The server-to-client direction is not
//! touched at all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest frame we emit: h2's default SETTINGS_MAX_FRAME_SIZE, which the server keeps.
const MAX_FRAME_SIZE: usize = 16_384;
/// h2's default SETTINGS_HEADER_TABLE_SIZE: what the client may size its table to.
const HEADER_TABLE_SIZE: usize = 4096;
/// A header block larger than this closes the connection.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrontError {
    #[error("a header frame of {0} bytes exceeds the maximum frame size")]
    FrameTooLarge(usize),
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    #[error("a {found:#x} frame interrupted a header block on stream {stream}")]
    InterruptedHeaderBlock { stream: u32, found: u8 },
    #[error("malformed HEADERS frame (padding or priority longer than the frame)")]
    MalformedHeaders,
    #[error("undecodable header block: {0:?}")]
    Hpack(loona_hpack::decoder::DecoderError),
}

/// Where the rewriter is in the client's byte stream.
#[derive(Debug)]
enum Position {
    /// Reading the connection preface; `usize` bytes of it seen. A client that sends
    /// anything else is passed through untouched, for h2 to reject.
    Preface(usize),
    /// Collecting a frame header.
    FrameHeader,
    /// Passing this many more bytes of a non-header frame through.
    Passthrough(usize),
    /// Collecting this many more bytes of a HEADERS/CONTINUATION payload.
    HeaderPayload(usize),
    /// Not HTTP/2: everything passes through.
    Opaque,
}

/// A header block being collected across HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    /// END_STREAM of the HEADERS frame.
    end_stream: bool,
    /// The five priority bytes of the HEADERS frame, if it had them.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server rewriting state machine of one connection.
pub(crate) struct Rewriter {
    position: Position,
    header: Vec<u8>,
    /// The frame whose payload is being collected: (type, flags, stream).
    frame: (u8, u8, u32),
    payload: Vec<u8>,
    block: Option<OpenBlock>,
    decoder: Decoder<'static>,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Self {
            position: Position::Preface(0),
            header: Vec::with_capacity(FRAME_HEADER_LEN),
            frame: (0, 0, 0),
            payload: Vec::new(),
            block: None,
            decoder,
        }
    }
}

impl Rewriter {
    /// Consumes bytes the client sent and appends what the server should read to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FrontError> {
        while !input.is_empty() {
            match self.position {
                Position::Opaque => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                Position::Preface(seen) => {
                    let take = input.len().min(PREFACE.len() - seen);
                    let (chunk, rest) = input.split_at(take);
                    out.extend_from_slice(chunk);
                    input = rest;
                    self.position = if chunk != &PREFACE[seen..seen + take] {
                        Position::Opaque
                    } else if seen + take == PREFACE.len() {
                        Position::FrameHeader
                    } else {
                        Position::Preface(seen + take)
                    };
                }
                Position::FrameHeader => {
                    let take = input.len().min(FRAME_HEADER_LEN - self.header.len());
                    self.header.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.header.len() == FRAME_HEADER_LEN {
                        self.start_frame(out)?;
                    }
                }
                Position::Passthrough(left) => {
                    let take = input.len().min(left);
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.position = if take == left {
                        Position::FrameHeader
                    } else {
                        Position::Passthrough(left - take)
                    };
                }
                Position::HeaderPayload(left) => {
                    let take = input.len().min(left);
                    self.payload.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if take == left {
                        self.position = Position::FrameHeader;
                        self.finish_header_frame(out)?;
                    } else {
                        self.position = Position::HeaderPayload(left - take);
                    }
                }
            }
        }
        Ok(())
    }

    /// A frame header is complete: decide what to do with the payload.
    fn start_frame(&mut self, out: &mut Vec<u8>) -> Result<(), FrontError> {
        let h = &self.header;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if let Some(block) = &self.block
            && (kind != CONTINUATION || stream != block.stream)
        {
            return Err(FrontError::InterruptedHeaderBlock {
                stream: block.stream,
                found: kind,
            });
        }
        if kind == HEADERS || kind == CONTINUATION {
            if len > MAX_FRAME_SIZE {
                return Err(FrontError::FrameTooLarge(len));
            }
            self.frame = (kind, flags, stream);
            self.payload.clear();
            self.header.clear();
            self.position = Position::HeaderPayload(len);
            if len == 0 {
                self.position = Position::FrameHeader;
                self.finish_header_frame(out)?;
            }
        } else {
            out.extend_from_slice(&self.header);
            self.header.clear();
            self.position = if len == 0 {
                Position::FrameHeader
            } else {
                Position::Passthrough(len)
            };
        }
        Ok(())
    }

    /// A HEADERS or CONTINUATION payload is complete.
    fn finish_header_frame(&mut self, out: &mut Vec<u8>) -> Result<(), FrontError> {
        let (kind, flags, stream) = self.frame;
        let payload = std::mem::take(&mut self.payload);
        let block = if kind == HEADERS {
            let mut body = payload.as_slice();
            let mut pad = 0;
            if flags & PADDED != 0 {
                let (&len, rest) = body.split_first().ok_or(FrontError::MalformedHeaders)?;
                pad = usize::from(len);
                body = rest;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let bytes = body.get(..5).ok_or(FrontError::MalformedHeaders)?;
                priority = Some([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]]);
                body = &body[5..];
            }
            let fragment = body
                .get(
                    ..body
                        .len()
                        .checked_sub(pad)
                        .ok_or(FrontError::MalformedHeaders)?,
                )
                .ok_or(FrontError::MalformedHeaders)?;
            self.block.insert(OpenBlock {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: fragment.to_vec(),
            })
        } else {
            // start_frame checked that this continues the open block.
            let block = self
                .block
                .as_mut()
                .ok_or(FrontError::InterruptedHeaderBlock {
                    stream,
                    found: CONTINUATION,
                })?;
            block.fragment.extend_from_slice(&payload);
            block
        };
        if block.fragment.len() > MAX_HEADER_BLOCK {
            return Err(FrontError::HeaderBlockTooLarge);
        }
        if flags & END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            let encoded = self.reencode(&block.fragment)?;
            emit_header_block(&block, &encoded, out);
        }
        Ok(())
    }

    /// Decodes a header block and encodes it again without the dynamic table, fixing an
    /// `:authority` h2 would refuse.
    fn reencode(&mut self, fragment: &[u8]) -> Result<Vec<u8>, FrontError> {
        let mut encoded = Vec::with_capacity(fragment.len() * 2 + 32);
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                let value: &[u8] = if &*name == b":authority" && !is_valid_authority(&value) {
                    b"localhost"
                } else {
                    &value
                };
                encode_literal(&name, value, &mut encoded);
            })
            .map_err(FrontError::Hpack)?;
        Ok(encoded)
    }
}

/// Whether h2 accepts `value` as an `:authority` (the test it applies itself).
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A "literal header field without indexing — new name" (RFC 7541 §6.2.2), no Huffman.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    encode_length(name.len(), out);
    out.extend_from_slice(name);
    encode_length(value.len(), out);
    out.extend_from_slice(value);
}

/// A string length with a 7-bit prefix and the Huffman bit clear.
fn encode_length(len: usize, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = loona_hpack::encoder::encode_integer_into(len, 7, 0, out);
}

/// Writes `encoded` as HEADERS (with the original END_STREAM and priority) plus as many
/// CONTINUATION frames as the frame size requires.
fn emit_header_block(block: &OpenBlock, encoded: &[u8], out: &mut Vec<u8>) {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first_room = MAX_FRAME_SIZE - priority_len;
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    write_frame_header(
        first.len() + priority_len,
        HEADERS,
        flags,
        block.stream,
        out,
    );
    if let Some(priority) = block.priority {
        out.extend_from_slice(&priority);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, remaining) = rest.split_at(rest.len().min(MAX_FRAME_SIZE));
        rest = remaining;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame_header(chunk.len(), CONTINUATION, flags, block.stream, out);
        out.extend_from_slice(chunk);
    }
}

fn write_frame_header(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    // Frames we emit are at most MAX_FRAME_SIZE long, which fits in 24 bits.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// An accepted connection whose client-to-server bytes go through a [`Rewriter`].
#[derive(Debug)]
pub(crate) struct AuthorityFront<S> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet read by the server, from `pending_at`.
    pending: Vec<u8>,
    pending_at: usize,
    scratch: Box<[u8]>,
}

impl<S> AuthorityFront<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::default(),
            pending: Vec::new(),
            pending_at: 0,
            scratch: vec![0; MAX_FRAME_SIZE + FRAME_HEADER_LEN].into_boxed_slice(),
        }
    }

    /// The wrapped connection.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFront<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pending_at < this.pending.len() {
                let available = &this.pending[this.pending_at..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.pending_at += n;
                if this.pending_at == this.pending.len() {
                    this.pending.clear();
                    this.pending_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut scratch))?;
            let read = scratch.filled();
            if read.is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.rewriter
                .feed(read, &mut this.pending)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFront<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a server-bound byte stream into frames: (type, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            frames.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        frames
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame_header(payload.len(), kind, flags, stream, &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// Header blocks the way a client encodes them, with incremental indexing so later
    /// blocks can refer to earlier ones.
    fn client_block(
        encoder: &mut loona_hpack::Encoder<'_>,
        authority: &str,
        path: &str,
    ) -> Vec<u8> {
        encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
        ])
    }

    /// Decodes every header block the server would see, with a fresh decoder (as h2's
    /// table never gets an entry from us).
    fn server_view(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut fragment = Vec::new();
        for (kind, flags, _, payload) in frames(bytes) {
            if kind == HEADERS || kind == CONTINUATION {
                let start = if kind == HEADERS && flags & PRIORITY != 0 {
                    5
                } else {
                    0
                };
                fragment.extend_from_slice(&payload[start..]);
                if flags & END_HEADERS != 0 {
                    let mut headers = Vec::new();
                    decoder
                        .decode_with_cb(&fragment, |n, v| {
                            headers.push((
                                String::from_utf8_lossy(&n).into_owned(),
                                String::from_utf8_lossy(&v).into_owned(),
                            ));
                        })
                        .unwrap();
                    blocks.push(headers);
                    fragment.clear();
                }
            }
        }
        blocks
    }

    fn authority(headers: &[(String, String)]) -> &str {
        &headers.iter().find(|(n, _)| n == ":authority").unwrap().1
    }

    fn rewrite_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            rewriter.feed(piece, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn invalid_authorities_become_localhost_and_valid_ones_stay() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        for (stream, authority) in [
            (1, "/run/wharf/wharf.sock"),
            (3, "run%2Fwharf%2Fwharf.sock"),
            (5, "localhost"),
        ] {
            input.extend(frame(
                HEADERS,
                END_HEADERS,
                stream,
                &client_block(&mut encoder, authority, "/types.API/State"),
            ));
            input.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        for chunk in [1, 7, 4096] {
            let out = rewrite_in_chunks(&input, chunk);
            let blocks = server_view(&out);
            assert_eq!(blocks.len(), 3);
            for block in &blocks {
                assert_eq!(authority(block), "localhost", "chunk {chunk}");
                assert!(block.contains(&(":path".into(), "/types.API/State".into())));
            }
            let data: Vec<_> = frames(&out).into_iter().filter(|f| f.0 == 0).collect();
            assert_eq!(data.len(), 3, "DATA frames pass through");
            assert!(
                data.iter()
                    .all(|f| f.1 == END_STREAM && f.3 == [0, 0, 0, 0, 0])
            );
        }
    }

    #[test]
    fn blocks_that_use_the_clients_dynamic_table_still_decode() {
        // As grpcio does: the first block adds `:authority` to the dynamic table ("literal
        // with incremental indexing", 0x40), the second refers to it as index 62 (0xbe).
        let mut first = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
        first.push(0x40);
        for part in [&b":authority"[..], b"/tmp/x.sock"] {
            encode_length(part.len(), &mut first);
            first.extend_from_slice(part);
        }
        let second = vec![0x83, 0x86, 0xbe];
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &first));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        let blocks = server_view(&rewrite_in_chunks(&input, 3));
        assert_eq!(blocks[0], blocks[1]);
        assert_eq!(authority(&blocks[1]), "localhost");
        assert!(blocks[1].contains(&(":method".into(), "POST".into())));
    }

    #[test]
    fn padding_priority_and_continuation_are_handled() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = client_block(&mut encoder, "/raw/path.sock", "/types.API/Events");
        let (head, tail) = block.split_at(block.len() / 2);
        let mut payload = vec![3]; // pad length
        payload.extend([0x80, 0, 0, 1, 16]); // priority: exclusive, depends on 1, weight 16
        payload.extend_from_slice(head);
        payload.extend([0, 0, 0]); // padding
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, tail));
        let out = rewrite_in_chunks(&input, 5);
        let frames = frames(&out);
        assert_eq!(frames.len(), 1, "re-emitted as one HEADERS frame");
        let (kind, flags, stream, payload) = &frames[0];
        assert_eq!((*kind, *stream), (HEADERS, 3));
        assert_eq!(*flags, PRIORITY | END_STREAM | END_HEADERS);
        assert_eq!(&payload[..5], &[0x80, 0, 0, 1, 16]);
        assert_eq!(authority(&server_view(&out)[0]), "localhost");
    }

    #[test]
    fn large_blocks_are_split_into_continuation_frames() {
        let mut encoder = loona_hpack::Encoder::new();
        let big = "v".repeat(40_000);
        let block = encoder.encode([
            (&b":authority"[..], &b"/x.sock"[..]),
            (b"x-big", big.as_bytes()),
        ]);
        let mut input = PREFACE.to_vec();
        let chunks: Vec<_> = block.chunks(MAX_FRAME_SIZE).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let flags = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            input.extend(frame(kind, flags, 1, chunk));
        }
        let out = rewrite_in_chunks(&input, 10_000);
        assert!(frames(&out).iter().all(|f| f.3.len() <= MAX_FRAME_SIZE));
        let view = server_view(&out);
        assert!(view[0].contains(&("x-big".into(), big)));
        assert_eq!(authority(&view[0]), "localhost");
    }

    #[test]
    fn a_frame_inside_a_header_block_is_a_protocol_error() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = client_block(&mut encoder, "localhost", "/p");
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block)); // no END_HEADERS
        input.extend(frame(0x0, 0, 1, b"data"));
        let mut out = Vec::new();
        assert!(Rewriter::default().feed(&input, &mut out).is_err());
    }

    #[test]
    fn garbage_hpack_and_oversized_frames_are_errors() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert!(Rewriter::default().feed(&input, &mut Vec::new()).is_err());
        let mut input = PREFACE.to_vec();
        write_frame_header(MAX_FRAME_SIZE + 1, HEADERS, 0, 1, &mut input);
        assert!(Rewriter::default().feed(&input, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_client_that_does_not_speak_http2_passes_through() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut out = Vec::new();
        Rewriter::default().feed(input, &mut out).unwrap();
        assert_eq!(out, input);
    }
}
