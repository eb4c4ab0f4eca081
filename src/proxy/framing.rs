//! Strict HTTP/1 message framing, checked on the raw bytes before hyper sees them.
//!
//! hyper is lenient where a proxy must not be: it accepts `Content-Length` together with
//! `Transfer-Encoding` (dropping the length), and answers its own 400/431 without saying why. So
//! every byte a client sends on an HTTP/1 connection passes through [`Framing`] first: a request
//! head is released to hyper only once it is complete and well formed, bodies are followed to find
//! where the next head starts, and the first ambiguity refuses the connection (RFC 9112 §6.3: a
//! server that cannot frame a message must close). The rules are those of the strictest proxies:
//! one unambiguous length, `chunked` as the only transfer coding, no obs-fold, no NUL or bare CR,
//! no whitespace where the grammar has none.

use memchr::memmem;

/// Where the connection is: the proxy listener (absolute-form and CONNECT) or inside a tunnel
/// (origin-form to the tunnel's host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Listener,
    Tunnel,
}

/// Why a request was refused, and with which status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the bytes are not one unambiguous HTTP/1 request.
    Malformed(&'static str),
    /// 431: more than `max_headers` fields or `max_header_bytes` bytes.
    TooLarge,
}

/// The longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// The framing state of one client connection.
#[derive(Debug)]
pub struct Framing {
    mode: Mode,
    max_headers: usize,
    max_header_bytes: usize,
    state: State,
    /// How much of an unfinished head has been searched already: a head that arrives a byte at a
    /// time is searched once, not once per byte.
    scanned: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a complete request head.
    Head,
    /// `n` more body bytes, then `next`.
    Fixed(u64, Next),
    /// A chunk-size line.
    ChunkSize(Next),
    /// `n` more bytes of chunk data, then CRLF.
    ChunkData(u64, Next),
    /// The CRLF after chunk data.
    ChunkEnd(Next),
    /// Trailer fields after the last chunk, up to an empty line.
    Trailers(Next),
    /// No longer HTTP/1 (a CONNECT tunnel or a protocol upgrade): bytes pass unchecked.
    Opaque,
}

/// What follows the body of the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Head,
    /// The request asked for an upgrade: what follows may be another protocol.
    Opaque,
}

impl Framing {
    pub fn new(mode: Mode, max_headers: usize, max_header_bytes: usize) -> Self {
        Self {
            mode,
            max_headers,
            max_header_bytes,
            state: State::Head,
            scanned: 0,
        }
    }

    /// Whether the connection is between messages or inside a request head (for the header
    /// deadline).
    pub fn in_head(&self) -> bool {
        self.state == State::Head
    }

    /// Whether a request body is being received (for the body pace).
    pub fn in_body(&self) -> bool {
        !matches!(self.state, State::Head | State::Opaque)
    }

    /// How many body bytes can be read straight through without looking at them: the rest of a
    /// fixed-length body or of a chunk's data.
    pub fn pass_through(&self) -> Option<u64> {
        match self.state {
            State::Fixed(n, _) | State::ChunkData(n, _) if n > 0 => Some(n),
            State::Opaque => Some(u64::MAX),
            _ => None,
        }
    }

    /// Records `n` bytes that went through under [`pass_through`](Self::pass_through).
    pub fn passed(&mut self, n: usize) {
        let n = n as u64;
        self.state = match self.state {
            State::Fixed(left, next) => after_fixed(left - n.min(left), next),
            State::ChunkData(left, next) if left > n => State::ChunkData(left - n, next),
            State::ChunkData(_, next) => State::ChunkEnd(next),
            other => other,
        };
    }

    /// Examines `input` (bytes not yet released) and returns how many of them form complete,
    /// valid message parts that may be released now. Bytes beyond that are held until more arrive.
    #[cfg(test)]
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, Refusal> {
        match self.scan(input) {
            (n, None) => Ok(n),
            (_, Some(refusal)) => Err(refusal),
        }
    }

    /// Like `advance`, but a refusal comes with what may still be released: the requests
    /// before the bad one. The bad request itself is held back whole when its head arrived in
    /// this same input (so a body that breaks its framing early is never forwarded at all).
    pub fn scan(&mut self, input: &[u8]) -> (usize, Option<Refusal>) {
        let (mut at, mut message) = (0, 0);
        match self.scan_from(input, &mut at, &mut message) {
            Ok(()) => (at, None),
            Err(refusal) => (message, Some(refusal)),
        }
    }

    fn scan_from(
        &mut self,
        input: &[u8],
        at: &mut usize,
        message: &mut usize,
    ) -> Result<(), Refusal> {
        loop {
            if self.state == State::Head {
                *message = *at;
            }
            let rest = &input[*at..];
            let used = match self.state {
                State::Opaque => rest.len(),
                State::Head => match self.head(rest)? {
                    Some(n) => n,
                    None => return Ok(()),
                },
                State::Fixed(left, next) => {
                    let n = left.min(rest.len() as u64);
                    self.state = after_fixed(left - n, next);
                    n as usize
                }
                State::ChunkSize(next) => match line(rest, MAX_CHUNK_LINE)? {
                    Some(end) => {
                        let size = chunk_size(&rest[..end])?;
                        self.state = if size == 0 {
                            State::Trailers(next)
                        } else {
                            State::ChunkData(size, next)
                        };
                        end + 2
                    }
                    None => return Ok(()),
                },
                State::ChunkData(left, next) => {
                    let n = left.min(rest.len() as u64);
                    self.state = if n == left {
                        State::ChunkEnd(next)
                    } else {
                        State::ChunkData(left - n, next)
                    };
                    n as usize
                }
                State::ChunkEnd(next) => match rest {
                    [b'\r', b'\n', ..] => {
                        self.state = State::ChunkSize(next);
                        2
                    }
                    [] | [b'\r'] => return Ok(()),
                    _ => return Err(Refusal::Malformed("chunk data is longer than its size")),
                },
                State::Trailers(next) => match line(rest, self.max_header_bytes)? {
                    Some(0) => {
                        self.state = next.state();
                        2
                    }
                    Some(end) => {
                        field(&rest[..end])?;
                        end + 2
                    }
                    None => return Ok(()),
                },
            };
            *at += used;
            if *at == input.len() {
                return Ok(());
            }
        }
    }

    /// A complete head at the start of `input`: checks it and sets the body state. `None` while
    /// incomplete (or while the first chunk-size line of a chunked body is still to come: a head
    /// is released with proof that its body starts well).
    fn head(&mut self, input: &[u8]) -> Result<Option<usize>, Refusal> {
        // Empty lines before a request line are ignored (RFC 9112 §2.2), as hyper does.
        if self.scanned == 0 && input.starts_with(b"\r\n") {
            return Ok(Some(2));
        }
        let from = self.scanned.saturating_sub(3);
        let Some(end) = head_end().find(&input[from..]).map(|i| i + from) else {
            if input.len() > self.max_header_bytes {
                return Err(Refusal::TooLarge);
            }
            // A bare LF anywhere in an unfinished head is already fatal; say so without waiting.
            let start = self.scanned.saturating_sub(1);
            let bare = memchr::memchr_iter(b'\n', &input[start..])
                .map(|i| i + start)
                .any(|i| i == 0 || input[i - 1] != b'\r');
            if bare {
                return Err(Refusal::Malformed("a line ends without CR"));
            }
            self.scanned = input.len();
            return Ok(None);
        };
        self.scanned = 0;
        let len = end + 4;
        if len > self.max_header_bytes {
            return Err(Refusal::TooLarge);
        }
        // Up to the last line's CR: every line then ends in CR once split at LF.
        let head = Head::parse(&input[..end + 1], self.mode, self.max_headers)?;
        let next = if head.opaque_after {
            Next::Opaque
        } else {
            Next::Head
        };
        self.state = match head.body {
            Body::None => next.state(),
            Body::Length(n) => after_fixed(n, next),
            Body::Chunked => {
                if !head.expects_continue {
                    match line(&input[len..], MAX_CHUNK_LINE)? {
                        Some(line_end) => {
                            chunk_size(&input[len..len + line_end])?;
                        }
                        None => return Ok(None),
                    }
                }
                State::ChunkSize(next)
            }
        };
        Ok(Some(len))
    }
}

impl Next {
    fn state(self) -> State {
        match self {
            Next::Head => State::Head,
            Next::Opaque => State::Opaque,
        }
    }
}

fn after_fixed(left: u64, next: Next) -> State {
    if left == 0 {
        next.state()
    } else {
        State::Fixed(left, next)
    }
}

/// How a request's body is framed.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
}

/// The facts of a checked request head that framing needs.
#[derive(Debug)]
struct Head {
    body: Body,
    expects_continue: bool,
    /// CONNECT or an upgrade request: the bytes after it may not be HTTP/1.
    opaque_after: bool,
}

impl Head {
    fn parse(head: &[u8], mode: Mode, max_headers: usize) -> Result<Head, Refusal> {
        let mut lines = memchr_lines(head);
        let request_line = lines.next().unwrap_or_default();
        let (method, version) = request_line_parts(strip_cr(request_line)?, mode)?;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut transfer_encodings = 0;
        let (mut hosts, mut count) = (0, 0);
        let (mut expects_continue, mut upgrade, mut connection_upgrade) = (false, false, false);
        for raw in lines {
            let (name, value) = field(strip_cr(raw)?)?;
            count += 1;
            if count > max_headers {
                return Err(Refusal::TooLarge);
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Refusal::Malformed("Content-Length headers differ"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encodings += 1;
                chunked = value.eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"host") {
                hosts += 1;
            } else if name.eq_ignore_ascii_case(b"expect") {
                expects_continue = value.eq_ignore_ascii_case(b"100-continue");
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                // keyswap never forwards h2c: after such a request the connection stays HTTP/1.
                upgrade = !value.eq_ignore_ascii_case(b"h2c");
            } else if name.eq_ignore_ascii_case(b"connection") {
                connection_upgrade |= value
                    .split(|&b| b == b',')
                    .any(|t| trim_ows(t).eq_ignore_ascii_case(b"upgrade"));
            }
        }
        if hosts > 1 {
            return Err(Refusal::Malformed("more than one Host header"));
        }
        let body = match (transfer_encodings, length) {
            (0, None) => Body::None,
            (0, Some(n)) => Body::Length(n),
            (_, Some(_)) => {
                return Err(Refusal::Malformed(
                    "Content-Length and Transfer-Encoding together",
                ));
            }
            _ if version == b"HTTP/1.0" => {
                return Err(Refusal::Malformed("Transfer-Encoding on HTTP/1.0"));
            }
            (1, None) if chunked => Body::Chunked,
            _ => {
                return Err(Refusal::Malformed(
                    "Transfer-Encoding must be exactly `chunked`",
                ));
            }
        };
        Ok(Head {
            body,
            expects_continue,
            opaque_after: method == b"CONNECT" || (upgrade && connection_upgrade),
        })
    }
}

/// `method SP request-target SP HTTP-version`, each part checked; returns the method and version.
fn request_line_parts(line: &[u8], mode: Mode) -> Result<(&[u8], &[u8]), Refusal> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed(
            "the request line is not `METHOD target HTTP/1.1`",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Refusal::Malformed("the method is not a token"));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(Refusal::Malformed(
            "only HTTP/1.1 and HTTP/1.0 are spoken here",
        ));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(Refusal::Malformed(
            "the request target contains whitespace or control characters",
        ));
    }
    if method == b"CONNECT" {
        if mode == Mode::Tunnel {
            return Err(Refusal::Malformed("CONNECT inside a tunnel"));
        }
        if !is_authority_with_port(target) {
            return Err(Refusal::Malformed("CONNECT needs a host:port target"));
        }
    }
    Ok((method, version))
}

/// `host:port` (or `[v6]:port`) with a port of 1–65535, and nothing else: no scheme, path or
/// user information.
fn is_authority_with_port(target: &[u8]) -> bool {
    let Some(colon) = target.iter().rposition(|&b| b == b':') else {
        return false;
    };
    let (host, port) = (&target[..colon], &target[colon + 1..]);
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(port)
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| p > 0);
    let host_ok = match host {
        [b'[', inner @ .., b']'] => inner
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        _ => {
            !host.is_empty()
                && host
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    port_ok && host_ok
}

/// One field line: `name: value` with a token name (no whitespace before the colon) and a value
/// of visible characters, spaces and tabs. A line starting with whitespace is obs-fold.
fn field(line: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Refusal::Malformed(
            "obs-fold (a header continued on the next line)",
        ));
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(Refusal::Malformed("a header line has no colon"));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Refusal::Malformed(
            "a header name is empty or has whitespace or other characters not allowed",
        ));
    }
    if !value.iter().all(|&b| is_value_byte(b)) {
        return Err(Refusal::Malformed(
            "a header value contains NUL, CR or another control character",
        ));
    }
    Ok((name, trim_ows(value)))
}

/// `Content-Length`: digits only (no sign, no hex), within 64 bits; a list must repeat one value.
fn content_length(value: &[u8]) -> Result<u64, Refusal> {
    // hyper refuses lists (even `2, 2`) with its own 400: refuse them here, with ours.
    if value.contains(&b',') {
        return Err(Refusal::Malformed("Content-Length is a list"));
    }
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || part.len() > 20 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Refusal::Malformed("Content-Length is not a decimal number"));
        }
        let n = std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(Refusal::Malformed("Content-Length is too large"))?;
        if found.is_some_and(|f| f != n) {
            return Err(Refusal::Malformed("Content-Length lists differing values"));
        }
        found = Some(n);
    }
    found.ok_or(Refusal::Malformed("Content-Length is empty"))
}

/// A chunk-size line without its CRLF: hex digits (at most 16), then optional extensions.
fn chunk_size(line: &[u8]) -> Result<u64, Refusal> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Refusal::Malformed("bad chunk size"));
    }
    let extensions = trim_ows(&line[digits..]);
    if !(extensions.is_empty() || extensions[0] == b';')
        || !extensions.iter().all(|&b| is_value_byte(b))
    {
        return Err(Refusal::Malformed("bad chunk size"));
    }
    let hex = std::str::from_utf8(&line[..digits]).unwrap_or("");
    u64::from_str_radix(hex, 16).map_err(|_| Refusal::Malformed("bad chunk size"))
}

/// The end of the CRLF-terminated line at the start of `input`, or `None` while it is incomplete.
fn line(input: &[u8], max: usize) -> Result<Option<usize>, Refusal> {
    match memchr::memchr(b'\n', input) {
        Some(0) => Err(Refusal::Malformed("a line ends without CR")),
        Some(lf) if input[lf - 1] != b'\r' => Err(Refusal::Malformed("a line ends without CR")),
        Some(lf) => {
            if memchr::memchr(b'\r', &input[..lf - 1]).is_some() {
                return Err(Refusal::Malformed("a bare CR inside a line"));
            }
            Ok(Some(lf - 1))
        }
        None if input.len() > max => Err(Refusal::TooLarge),
        None => Ok(None),
    }
}

/// A head line without its trailing CR; a CR anywhere else is a bare CR.
fn strip_cr(line: &[u8]) -> Result<&[u8], Refusal> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(Refusal::Malformed("a line ends without CR"));
    };
    if memchr::memchr(b'\r', line).is_some() {
        return Err(Refusal::Malformed("a bare CR inside a line"));
    }
    Ok(line)
}

/// `input` split at each LF (the LF left out), found with memchr.
fn memchr_lines(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', input);
    std::iter::from_fn(move || {
        if start > input.len() {
            return None;
        }
        let end = ends.next().unwrap_or(input.len());
        let line = &input[start..end];
        start = end + 1;
        Some(line)
    })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The searcher for a head's end, built once: `memmem::find` would build one per call, which
/// costs more than searching a typical head.
fn head_end() -> &'static memmem::Finder<'static> {
    static FINDER: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));
    &FINDER
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A field value byte: visible characters, obs-text, space and tab (RFC 9110 §5.5).
fn is_value_byte(b: u8) -> bool {
    VALUE[usize::from(b)]
}

/// Lookup tables: every request's head passes through these checks, byte by byte.
const TCHAR: [bool; 256] = tables().0;
const VALUE: [bool; 256] = tables().1;

const fn tables() -> ([bool; 256], [bool; 256]) {
    let (mut tchar, mut value) = ([false; 256], [false; 256]);
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        tchar[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        value[i] = b == b'\t' || (b >= 0x20 && b != 0x7f);
        i += 1;
    }
    (tchar, value)
}

#[cfg(test)]
mod tests;
