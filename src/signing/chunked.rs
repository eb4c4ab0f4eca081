//! An `aws-chunked` body signed chunk by chunk (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD` and its
//! `-TRAILER` form), signed again as it streams: each chunk's signature is checked against the
//! client's chain (signed with the dummy secret every sandbox holds) and replaced by the real
//! key's chain, seeded by keyswap's own signature of the head.
//!
//! Memory is one chunk: a chunk's signature precedes its data and covers all of it, so a chunk is
//! held whole before it is passed on. Everything but the signatures is passed on byte for byte
//! (signatures are 64 hex digits either way), so `Content-Length` still holds.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use ring::hmac;

use super::sigv4::{chunk_string_to_sign, sha256_hex, sign, trailer_string_to_sign};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest chunk held (SDKs send 8 KiB to 8 MiB).
pub const MAX_CHUNK: usize = 16 << 20;
/// The longest chunk header or trailer line.
const MAX_LINE: usize = 4096;
const SIGNATURE_LEN: usize = 64;

/// Why a chunked body cannot be signed again. The messages name what to change.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    #[error(
        "an aws-chunked chunk signature does not chain from the previous one (sign with the AWS_SECRET_ACCESS_KEY `keyswap env` prints)"
    )]
    Chain,
    #[error("the aws-chunked body is malformed: {0}")]
    Malformed(&'static str),
    #[error("an aws-chunked chunk is larger than 16 MiB; send smaller chunks")]
    TooLarge,
}

/// The two chains: the client's (checked) and keyswap's (written).
pub struct Chain {
    pub amz_date: String,
    pub scope: String,
    /// Signs with the dummy secret: what the client's signatures must be.
    pub client_key: hmac::Key,
    pub client_previous: String,
    /// Signs with the real secret.
    pub real_key: hmac::Key,
    pub real_previous: String,
}

impl Chain {
    /// Checks the client's signature of `payload_sha256` and returns keyswap's.
    fn next(
        &mut self,
        client_signature: &[u8],
        payload_sha256: &str,
        trailer: bool,
    ) -> Result<String, ChunkError> {
        let text = |previous: &str| {
            if trailer {
                trailer_string_to_sign(&self.amz_date, &self.scope, previous, payload_sha256)
            } else {
                chunk_string_to_sign(&self.amz_date, &self.scope, previous, payload_sha256)
            }
        };
        let expected = sign(&self.client_key, &text(&self.client_previous));
        // Not secret (the dummy key is public); equality of public values.
        if expected.as_bytes() != client_signature {
            return Err(ChunkError::Chain);
        }
        let ours = sign(&self.real_key, &text(&self.real_previous));
        self.client_previous = expected;
        self.real_previous.clone_from(&ours);
        Ok(ours)
    }
}

enum State {
    /// Expecting `<hex size>;chunk-signature=<sig>\r\n`.
    Header,
    /// Expecting the chunk's data and its CRLF.
    Data {
        size_text: Bytes,
        size: usize,
        signature: Bytes,
    },
    /// After the last chunk of a `-TRAILER` body: trailer lines, then the trailer signature.
    Trailers {
        lines: Vec<Bytes>,
    },
    /// After the trailer signature: the empty line that ends the body.
    Close,
    Done,
    Failed,
}

/// What a parsing step achieved.
enum Step {
    /// Output was produced, or the body is done.
    Ready,
    /// The state moved on: step again.
    Again,
    /// More input is needed.
    More,
}

/// The re-signer without I/O: bytes in ([`Resigner::feed`]), re-signed bytes out
/// ([`Resigner::advance`]). The body wrapper and the fuzz target both drive it.
pub struct Resigner {
    chain: Chain,
    trailer: bool,
    state: State,
    input: BytesMut,
}

impl Resigner {
    pub fn new(chain: Chain, trailer: bool) -> Self {
        Self {
            chain,
            trailer,
            state: State::Header,
            input: BytesMut::new(),
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    /// Bytes held (not yet passed on).
    pub fn held(&self) -> usize {
        self.input.len()
    }

    /// Parses all the input holds, pushing what is ready to `out`. `Ok(true)` once the body is
    /// complete; `eof`: no more input will come (then an incomplete body is an error).
    pub fn advance(&mut self, out: &mut VecDeque<Bytes>, eof: bool) -> Result<bool, ChunkError> {
        loop {
            if matches!(self.state, State::Done) {
                return if self.input.is_empty() {
                    Ok(true)
                } else {
                    Err(bad("bytes after the last chunk"))
                };
            }
            match self.step(out) {
                Ok(Step::Ready | Step::Again) => {}
                Ok(Step::More) if eof => {
                    self.state = State::Failed;
                    return Err(bad("the body ended inside a chunk"));
                }
                Ok(Step::More) => return Ok(false),
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
    }

    /// One parsing step on the buffered input.
    fn step(&mut self, out: &mut VecDeque<Bytes>) -> Result<Step, ChunkError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Header => {
                let Some(line) = self.line()? else {
                    self.state = State::Header;
                    return Ok(Step::More);
                };
                let (size_text, signature) = parse_header(&line)?;
                let size = usize::from_str_radix(
                    std::str::from_utf8(&size_text).map_err(|_| bad("chunk size"))?,
                    16,
                )
                .map_err(|_| bad("chunk size"))?;
                if size > MAX_CHUNK {
                    return Err(ChunkError::TooLarge);
                }
                self.state = State::Data {
                    size_text,
                    size,
                    signature,
                };
                Ok(Step::Again)
            }
            State::Data {
                size_text,
                size,
                signature,
            } => {
                // The final chunk of a `-TRAILER` body has no CRLF after its (empty) data.
                let crlf = if size == 0 && self.trailer { 0 } else { 2 };
                if self.input.len() < size + crlf {
                    self.input.reserve(size + crlf - self.input.len());
                    self.state = State::Data {
                        size_text,
                        size,
                        signature,
                    };
                    return Ok(Step::More);
                }
                let data = self.input.split_to(size).freeze();
                if crlf == 2 {
                    if &self.input[..2] != b"\r\n" {
                        return Err(bad("chunk data is not followed by CRLF"));
                    }
                    self.input.advance(2);
                }
                let ours = self.chain.next(&signature, &sha256_hex(&data), false)?;
                let mut head = BytesMut::with_capacity(size_text.len() + 20 + SIGNATURE_LEN);
                head.extend_from_slice(&size_text);
                head.extend_from_slice(b";chunk-signature=");
                head.extend_from_slice(ours.as_bytes());
                head.extend_from_slice(b"\r\n");
                out.push_back(head.freeze());
                if size > 0 {
                    out.push_back(data);
                    out.push_back(Bytes::from_static(b"\r\n"));
                    self.state = State::Header;
                } else if self.trailer {
                    self.state = State::Trailers { lines: Vec::new() };
                } else {
                    // `0;chunk-signature=…\r\n\r\n`: the CRLF after the empty data ends it.
                    out.push_back(Bytes::from_static(b"\r\n"));
                    self.state = State::Done;
                }
                Ok(Step::Ready)
            }
            State::Trailers { mut lines } => {
                let Some(line) = self.line()? else {
                    self.state = State::Trailers { lines };
                    return Ok(Step::More);
                };
                let Some(signature) = line.strip_prefix(b"x-amz-trailer-signature:") else {
                    if lines.len() >= 16 || !line.contains(&b':') {
                        return Err(bad("trailer line"));
                    }
                    lines.push(line);
                    self.state = State::Trailers { lines };
                    return Ok(Step::Again);
                };
                // Signed as `name:value\n` lines in name order; passed on in the client's order.
                let mut sorted: Vec<&Bytes> = lines.iter().collect();
                sorted.sort();
                let mut canonical = Vec::new();
                for l in sorted {
                    canonical.extend_from_slice(l);
                    canonical.push(b'\n');
                }
                let ours = self.chain.next(signature, &sha256_hex(&canonical), true)?;
                for l in lines {
                    out.push_back(l);
                    out.push_back(Bytes::from_static(b"\r\n"));
                }
                out.push_back(Bytes::from(format!("x-amz-trailer-signature:{ours}\r\n")));
                self.state = State::Close;
                Ok(Step::Ready)
            }
            State::Close => {
                if self.input.len() < 2 {
                    self.state = State::Close;
                    return Ok(Step::More);
                }
                if &self.input[..2] != b"\r\n" {
                    return Err(bad("the trailers do not end with an empty line"));
                }
                self.input.advance(2);
                out.push_back(Bytes::from_static(b"\r\n"));
                self.state = State::Done;
                Ok(Step::Ready)
            }
            State::Done => {
                self.state = State::Done;
                Ok(Step::Ready)
            }
            State::Failed => Err(bad("the body failed earlier")),
        }
    }

    /// The next CRLF-terminated line of the input (without CRLF), if whole.
    fn line(&mut self) -> Result<Option<Bytes>, ChunkError> {
        match memchr::memmem::find(&self.input, b"\r\n") {
            Some(end) if end <= MAX_LINE => {
                let line = self.input.split_to(end).freeze();
                self.input.advance(2);
                Ok(Some(line))
            }
            Some(_) => Err(bad("line too long")),
            None if self.input.len() > MAX_LINE => Err(bad("line too long")),
            None => Ok(None),
        }
    }
}

fn bad(what: &'static str) -> ChunkError {
    ChunkError::Malformed(what)
}

/// `<hex size>;chunk-signature=<64 hex>` → (size text, signature).
fn parse_header(line: &Bytes) -> Result<(Bytes, Bytes), ChunkError> {
    let semi = memchr::memchr(b';', line).ok_or(bad("chunk header without chunk-signature"))?;
    let size = line.slice(..semi);
    let signature = line
        .slice(semi + 1..)
        .strip_prefix(b"chunk-signature=")
        .map(|s| line.slice_ref(s))
        .ok_or(bad("chunk header without chunk-signature"))?;
    let hex_size = !size.is_empty() && size.len() <= 16 && size.iter().all(u8::is_ascii_hexdigit);
    if !hex_size || signature.len() != SIGNATURE_LEN {
        return Err(bad("chunk header"));
    }
    Ok((size, signature))
}

/// The body, signed again on the fly.
pub struct Resigned<B> {
    inner: B,
    resigner: Resigner,
    output: VecDeque<Bytes>,
    inner_done: bool,
    done: bool,
}

impl<B> Resigned<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    pub fn new(inner: B, chain: Chain, trailer: bool) -> Self {
        Self {
            inner,
            resigner: Resigner::new(chain, trailer),
            output: VecDeque::new(),
            inner_done: false,
            done: false,
        }
    }

    /// Reads until the first chunk has been checked (or the body ends): so that a body whose
    /// chain is wrong from the start is refused before anything is forwarded.
    pub async fn first_chunk(&mut self) -> Result<(), BoxError> {
        std::future::poll_fn(|cx| {
            while self.output.is_empty() && !self.done {
                ready!(self.fill(cx))?;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Moves the re-signer on: output, the end, or one more frame read.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.resigner.advance(&mut self.output, self.inner_done)? {
            self.done = true;
            return Poll::Ready(Ok(()));
        }
        if !self.output.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.resigner.feed(&data);
                }
            }
            Some(Err(e)) => return Poll::Ready(Err(e)),
            None => self.inner_done = true,
        }
        Poll::Ready(Ok(()))
    }
}

impl<B> Body for Resigned<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(bytes) = this.output.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Err(e) = ready!(this.fill(cx)) {
                this.done = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.output.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // The same number of bytes as came in (signatures are swapped, not resized): what is
        // still to be read, plus what is held.
        let held =
            (self.resigner.held() + self.output.iter().map(Bytes::len).sum::<usize>()) as u64;
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
