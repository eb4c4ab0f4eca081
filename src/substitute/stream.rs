//! Replacement in a stream of chunks: request bodies (placeholder → secret) and response bodies
//! (secret → placeholder). A match split across chunks is still found.
//!
//! Only bytes that could still begin a match are held back between chunks: the longest suffix of
//! what has arrived that is a proper prefix of some pattern. Everything before it is settled, because
//! no pattern starting there can reach past the data already seen; so the output equals one-shot
//! replacement of the whole stream, whatever the chunking, and a server-sent event is never delayed
//! unless its last bytes look like the start of a pattern.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::finder::{Finder, Found};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame};
use zeroize::Zeroizing;

/// A pattern and what replaces it; both may be secrets, so both are wiped on drop.
pub type Pair = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

/// Every proper prefix of every pattern: what may be held back at the end of a chunk.
pub struct Prefixes {
    set: HashSet<Box<[u8]>>,
    longest: usize,
    /// The first bytes of the patterns: a suffix starting with any other byte is no prefix, and
    /// is ruled out without hashing it (most chunk ends are).
    first: [bool; 256],
}

impl Default for Prefixes {
    fn default() -> Self {
        Self {
            set: HashSet::new(),
            longest: 0,
            first: [false; 256],
        }
    }
}

impl Prefixes {
    pub fn of<'p>(patterns: impl IntoIterator<Item = &'p [u8]>) -> Prefixes {
        let mut out = Prefixes::default();
        for p in patterns {
            for k in 1..p.len() {
                out.set.insert(p[..k].into());
            }
            if let Some(&b) = p.first() {
                out.first[usize::from(b)] = true;
            }
            out.longest = out.longest.max(p.len().saturating_sub(1));
        }
        out
    }

    /// Length of the longest suffix of `data` that is a proper prefix of a pattern.
    fn held(&self, data: &[u8]) -> usize {
        (1..=self.longest.min(data.len()))
            .rev()
            .find(|&k| {
                let suffix = &data[data.len() - k..];
                self.first[usize::from(suffix[0])] && self.set.contains(suffix)
            })
            .unwrap_or(0)
    }
}

/// A compiled replacement table, built once and shared: the searcher, what replaces each pattern,
/// and the prefixes that may be held back.
pub struct Table {
    pub searcher: Finder,
    pub replacements: Vec<Zeroizing<Vec<u8>>>,
    pub prefixes: Prefixes,
}

// SECURITY: patterns and replacements may be secrets; Debug shows only their number.
impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("patterns", &self.replacements.len())
            .finish_non_exhaustive()
    }
}

impl Table {
    /// From (pattern, replacement) pairs; `None` when there are none or they cannot be compiled.
    pub fn of(pairs: Vec<Pair>) -> Option<Table> {
        if pairs.is_empty() {
            return None;
        }
        let patterns: Vec<&[u8]> = pairs.iter().map(|(p, _)| p.as_slice()).collect();
        let searcher = Finder::new(&patterns)?;
        let prefixes = Prefixes::of(pairs.iter().map(|(p, _)| p.as_slice()));
        let replacements = pairs.into_iter().map(|(_, r)| r).collect();
        Some(Table {
            searcher,
            replacements,
            prefixes,
        })
    }
}

/// Streaming leftmost-longest replacement over a shared [`Table`]. A pattern not `enabled` is left
/// as it is (it is still consumed whole, so it never hides a shorter match inside it): that is
/// right for placeholders (a longer placeholder the session may not use is not a shorter one),
/// and never used for scrubbing, whose tables hold only what must be masked.
pub struct StreamReplacer {
    table: Arc<Table>,
    /// Empty: every pattern is enabled.
    enabled: Vec<bool>,
    /// Replacements that differ for this stream (a pattern several credentials share is masked as
    /// the one the request used).
    overrides: Vec<(usize, Zeroizing<Vec<u8>>)>,
    carry: Vec<u8>,
    replaced: usize,
    /// Pattern ids that were replaced at least once.
    hits: Vec<usize>,
}

impl StreamReplacer {
    /// Replaces the patterns of `table` whose `enabled` flag is set.
    pub fn new(table: Arc<Table>, enabled: Vec<bool>) -> Self {
        Self {
            table,
            enabled,
            overrides: Vec::new(),
            carry: Vec::new(),
            replaced: 0,
            hits: Vec::new(),
        }
    }

    /// A replacer that replaces every pair: for small per-request sets.
    pub fn from_pairs(pairs: Vec<Pair>) -> Option<Self> {
        let table = Table::of(pairs)?;
        Some(Self::new(Arc::new(table), Vec::new()))
    }

    /// Pattern `pattern` is replaced by `replacement` in this stream instead of the table's.
    pub fn set_replacement(&mut self, pattern: usize, replacement: Zeroizing<Vec<u8>>) {
        self.overrides.push((pattern, replacement));
    }

    /// How many matches were replaced so far.
    pub fn replaced(&self) -> usize {
        self.replaced
    }

    /// Pattern ids replaced at least once so far.
    pub fn hits(&self) -> &[usize] {
        &self.hits
    }

    /// Replaces in one complete value (a header), independent of any stream state.
    /// Returns `None` when nothing was replaced.
    pub fn replace_once(&mut self, data: &[u8]) -> Option<Bytes> {
        if !self.table.searcher.is_match(data) {
            return None;
        }
        let before = self.replaced;
        let (out, _) = self.replace(data, data.len());
        (self.replaced > before).then_some(out)
    }

    /// A whole body, in place of `push` then `finish`: the same bytes, uncopied, when nothing
    /// matches.
    pub fn whole(&mut self, data: Bytes) -> Bytes {
        self.replace_once(&data).unwrap_or(data)
    }

    /// Feeds a chunk; returns what is settled. The chunk itself is returned when nothing matches.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty()
            && self.table.prefixes.held(&chunk) == 0
            && !self.table.searcher.is_match(chunk.as_ref())
        {
            return chunk;
        }
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(&chunk);
        let settled_until = data.len() - self.table.prefixes.held(&data);
        let (out, consumed) = self.replace(&data, settled_until);
        self.carry = data[consumed..].to_vec();
        out
    }

    /// Ends the stream: everything held back is settled.
    pub fn finish(&mut self) -> Bytes {
        let data = std::mem::take(&mut self.carry);
        self.replace(&data, data.len()).0
    }

    /// Replaces matches that start before `settled_until`; returns the output and how much of
    /// `data` it covers.
    ///
    /// SECURITY: matches may overlap (one secret ending with the characters another starts
    /// with). Every overlapping group is replaced as a whole — each match in it not contained in
    /// a longer one gives its replacement — so no match hides part of another and leaves the
    /// rest of it in clear. A group that reaches past `settled_until` waits for more data.
    fn replace(&mut self, data: &[u8], settled_until: usize) -> (Bytes, usize) {
        let matches = self.table.searcher.overlapping(data);
        let mut out = BytesMut::with_capacity(data.len());
        let mut copied = 0;
        let mut limit = settled_until;
        let mut i = 0;
        while let Some(first) = matches.get(i) {
            if first.start >= limit {
                break;
            }
            let mut end = first.end;
            let mut j = i + 1;
            while let Some(m) = matches.get(j).filter(|m| m.start < end) {
                end = end.max(m.end);
                j += 1;
            }
            if end > settled_until {
                limit = first.start;
                break;
            }
            out.extend_from_slice(&data[copied..first.start]);
            let mut covered = first.start;
            for m in &matches[i..j] {
                if m.end <= covered {
                    continue; // inside a longer match of the group
                }
                self.emit(&mut out, m, &data[covered.max(m.start)..m.end]);
                covered = m.end;
            }
            copied = end;
            i = j;
        }
        let end = limit.max(copied);
        out.extend_from_slice(&data[copied..end]);
        (out.freeze(), end)
    }

    /// Writes what stands for match `m` (`rest`: its text not already covered by the group).
    fn emit(&mut self, out: &mut BytesMut, m: &Found, rest: &[u8]) {
        let pattern = m.pattern;
        if !self.enabled.get(pattern).is_none_or(|&on| on) {
            out.extend_from_slice(rest);
            return;
        }
        let replacement = self
            .overrides
            .iter()
            .find(|(p, _)| *p == pattern)
            .map_or(&self.table.replacements[pattern], |(_, r)| r);
        out.extend_from_slice(replacement);
        self.replaced += 1;
        if !self.hits.contains(&pattern) {
            self.hits.push(pattern);
        }
    }
}

/// Masks every header value and name in `headers` (a response head, or trailers). A name whose
/// masked form is not a valid name is dropped with its values.
pub fn scrub_headers(replacer: &mut StreamReplacer, headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        if let Some(masked) = replacer.replace_once(value.as_bytes())
            && let Ok(masked) = HeaderValue::from_maybe_shared(masked)
        {
            *value = masked;
        }
    }
    let searcher = &replacer.table.searcher;
    if !headers
        .keys()
        .any(|name| searcher.is_match(name.as_str().as_bytes()))
    {
        return;
    }
    let mut name: Option<HeaderName> = None;
    for (next, value) in std::mem::take(headers) {
        if let Some(next) = next {
            name = match replacer.replace_once(next.as_str().as_bytes()) {
                Some(masked) => HeaderName::from_bytes(&masked).ok(),
                None => Some(next),
            };
        }
        if let Some(name) = &name {
            headers.append(name.clone(), value);
        }
    }
}

/// Called once when a streamed body ends, with the pattern ids that were replaced in it.
pub type OnEnd = Box<dyn FnOnce(&[usize]) + Send + Sync>;

/// A body whose data frames pass through a [`StreamReplacer`]; trailers pass unchanged.
pub struct ReplacingBody<B> {
    inner: B,
    replacer: StreamReplacer,
    ended: bool,
    trailers: Option<HeaderMap>,
    on_end: Option<OnEnd>,
}

impl<B> ReplacingBody<B> {
    pub fn new(inner: B, replacer: StreamReplacer) -> Self {
        Self {
            inner,
            replacer,
            ended: false,
            trailers: None,
            on_end: None,
        }
    }

    /// Runs `f` with the replaced pattern ids once the body has ended (what was found in a
    /// streamed body is only known then).
    pub fn on_end(mut self, f: OnEnd) -> Self {
        self.on_end = Some(f);
        self
    }

    fn end(&mut self) -> Bytes {
        self.ended = true;
        let out = self.replacer.finish();
        if let Some(f) = self.on_end.take() {
            f(self.replacer.hits());
        }
        out
    }
}

impl<B> Body for ReplacingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.replacer.push(data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok().map(|mut trailers| {
                            scrub_headers(&mut this.replacer, &mut trailers);
                            trailers
                        });
                        let out = this.end();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let out = this.end();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn replacer(pairs: &[(&str, &str)]) -> StreamReplacer {
        let pairs = pairs
            .iter()
            .map(|(p, r)| {
                (
                    Zeroizing::new(p.as_bytes().to_vec()),
                    Zeroizing::new(r.as_bytes().to_vec()),
                )
            })
            .collect();
        StreamReplacer::from_pairs(pairs).unwrap()
    }

    fn run(pairs: &[(&str, &str)], chunks: &[&[u8]]) -> Vec<u8> {
        let mut r = replacer(pairs);
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&r.push(Bytes::copy_from_slice(c)));
        }
        out.extend_from_slice(&r.finish());
        out
    }

    const PAIRS: &[(&str, &str)] = &[
        ("ks-ph-vcrd_a", "SECRET-A"),
        ("ks-ph-vcrd_a_long", "LONG"),
        ("abc", "X"),
        ("cde", "Y"),
    ];

    /// A small deterministic generator, so failures reproduce.
    pub(crate) struct Lcg(pub(crate) u64);
    impl Lcg {
        pub(crate) fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n
        }
    }

    #[test]
    fn any_chunking_gives_the_one_shot_result() {
        let mut rng = Lcg(7);
        let alphabet: &[&[u8]] = &[
            b"ks-ph-vcrd_a",
            b"_long",
            b"ks-ph-",
            b"abc",
            b"cde",
            b"ab",
            b"c",
            b"x",
            b"\n\n",
            b"k",
        ];
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..rng.next(12) {
                input.extend_from_slice(alphabet[rng.next(alphabet.len())]);
            }
            let one_shot = run(PAIRS, &[&input]);
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = 1 + rng.next(rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(
                run(PAIRS, &chunks),
                one_shot,
                "input {:?}",
                String::from_utf8_lossy(&input)
            );
            let bytewise: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(run(PAIRS, &bytewise), one_shot);
        }
    }

    #[test]
    fn split_placeholder_is_found_and_longest_wins() {
        assert_eq!(
            run(PAIRS, &[b"{\"t\":\"ks-ph-vc", b"rd_a\"}"]),
            b"{\"t\":\"SECRET-A\"}"
        );
        assert_eq!(run(PAIRS, &[b"ks-ph-vcrd_a", b"_long!"]), b"LONG!");
        assert_eq!(run(PAIRS, &[b"ks-ph-vcrd_a", b"_lo"]), b"SECRET-A_lo");
    }

    #[test]
    fn nothing_is_held_back_unless_it_could_start_a_match() {
        let mut r = replacer(PAIRS);
        assert_eq!(
            r.push(Bytes::from_static(b"data: hello\n\n")),
            Bytes::from_static(b"data: hello\n\n")
        );
        assert_eq!(
            r.push(Bytes::from_static(b"data: ks-ph")),
            Bytes::from_static(b"data: ")
        );
        assert_eq!(r.finish(), Bytes::from_static(b"ks-ph"));
    }

    #[tokio::test]
    async fn trailer_names_and_values_are_scrubbed() {
        use http_body_util::BodyExt as _;
        let mut trailers = HeaderMap::new();
        trailers.insert("x-echo", HeaderValue::from_static("is abc"));
        trailers.insert("x-abc-name", HeaderValue::from_static("1"));
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"c!"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let out = ReplacingBody::new(body, replacer(&[("abc", "x")]))
            .collect()
            .await
            .unwrap();
        let trailers = out.trailers().cloned().unwrap();
        assert_eq!(out.to_bytes(), Bytes::from_static(b"x!"));
        assert_eq!(trailers["x-echo"], "is x");
        assert_eq!(trailers["x-x-name"], "1");
        assert!(!trailers.contains_key("x-abc-name"));
    }

    #[test]
    fn a_disabled_pattern_keeps_the_match() {
        let z = |s: &str| Zeroizing::new(s.as_bytes().to_vec());
        let table = Table::of(vec![(z("abc"), z("X")), (z("b"), z("B"))]).unwrap();
        let mut r = StreamReplacer::new(Arc::new(table), vec![false, true]);
        assert_eq!(
            r.push(Bytes::from_static(b"abc b")),
            Bytes::from_static(b"abc B")
        );
        assert_eq!(r.replaced(), 1);
    }
}
