//! Search for many long patterns at once, every match reported, overlapping ones included (SPEC §8
//! scrubbing tables).
//!
//! A scrubbing table holds every spelling of every secret in scope: hundreds or thousands of
//! patterns, none shorter than a few bytes, searched in every byte of every response. An
//! Aho-Corasick automaton of that size no longer has a useful prefilter and outgrows the cache,
//! and scans at a few hundred MB/s. [`Sampled`] uses the patterns' length instead: when every
//! pattern is at least `m` bytes long, every occurrence covers one of the text positions
//! `from, from + k, from + 2k, …` with `k = m − W + 1`, at an offset of at most `m − W` into the
//! pattern. So only every k-th window of W bytes is looked at — in a bit set of all the patterns'
//! windows at those offsets — and the few that hit are verified. Shorter pattern sets use
//! Aho-Corasick, which is what it is best at.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use aho_corasick::{AhoCorasick, MatchKind};
use zeroize::Zeroizing;

/// The window looked up at each sampled position.
const W: usize = 8;
/// The most positions skipped between two looks.
const MAX_STRIDE: usize = 16;

/// One occurrence of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub pattern: usize,
}

/// A multi-pattern searcher.
pub struct Finder {
    /// The shortest pattern's length: a shorter haystack holds none, whatever its bytes. Most
    /// response header values (`Content-Length: 5`, a date) are shorter than any secret, and
    /// answering them here costs a compare instead of an automaton's start-up.
    shortest: usize,
    search: Search,
}

enum Search {
    Automaton(AhoCorasick),
    Sampled(Sampled),
}

impl Finder {
    /// The searcher for `patterns` (at least one; empty patterns are not allowed).
    pub fn new(patterns: &[&[u8]]) -> Option<Finder> {
        let shortest = patterns.iter().map(|p| p.len()).min()?;
        let search = if shortest >= W && patterns.len() > Sampled::MIN_PATTERNS {
            Search::Sampled(Sampled::new(patterns, shortest))
        } else {
            Search::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(patterns)
                    .ok()?,
            )
        };
        Some(Finder { shortest, search })
    }

    pub fn is_match(&self, haystack: &[u8]) -> bool {
        if haystack.len() < self.shortest {
            return false;
        }
        match &self.search {
            Search::Automaton(ac) => ac.is_match(haystack),
            Search::Sampled(s) => s.any(haystack),
        }
    }

    /// Every match, overlapping ones included, by start (then longest first, then pattern).
    pub fn overlapping(&self, haystack: &[u8]) -> Vec<Found> {
        if haystack.len() < self.shortest {
            return Vec::new();
        }
        let mut found: Vec<Found> = match &self.search {
            Search::Automaton(ac) => ac
                .find_overlapping_iter(haystack)
                .map(|m| Found {
                    start: m.start(),
                    end: m.end(),
                    pattern: m.pattern().as_usize(),
                })
                .collect(),
            Search::Sampled(s) => s.all(haystack),
        };
        found.sort_unstable_by_key(|f| (f.start, std::cmp::Reverse(f.end), f.pattern));
        found
    }
}

/// Search by sampled windows (see the module documentation).
pub struct Sampled {
    patterns: Vec<Zeroizing<Vec<u8>>>,
    stride: usize,
    /// One bit per hashed window value: a clear bit rules a position out without a lookup.
    bits: Vec<u64>,
    mask: usize,
    /// Window value → (pattern, offset of the window in it).
    windows: HashMap<u64, Vec<(u32, u32)>, BuildHasherDefault<WindowHasher>>,
}

impl Sampled {
    /// Below this many patterns Aho-Corasick's prefilters do better.
    const MIN_PATTERNS: usize = 32;

    fn new(patterns: &[&[u8]], shortest: usize) -> Sampled {
        // Longer strides would index more windows per pattern for little more speed.
        let stride = (shortest - W + 1).min(MAX_STRIDE);
        let entries = patterns.len() * stride;
        let nbits = (entries * 64).next_power_of_two().clamp(1 << 12, 1 << 22);
        let mut sampled = Sampled {
            patterns: patterns
                .iter()
                .map(|p| Zeroizing::new(p.to_vec()))
                .collect(),
            stride,
            bits: vec![0; nbits / 64],
            mask: nbits - 1,
            windows: HashMap::default(),
        };
        for (id, p) in patterns.iter().enumerate() {
            for offset in 0..stride {
                let window = read(p, offset);
                let h = sampled.slot(window);
                sampled.bits[h >> 6] |= 1 << (h & 63);
                let (id, offset) = (to_u32(id), to_u32(offset));
                let list = sampled.windows.entry(window).or_default();
                if !list.contains(&(id, offset)) {
                    list.push((id, offset));
                }
            }
        }
        sampled
    }

    fn slot(&self, window: u64) -> usize {
        // Fibonacci hashing: the high bits of the product mix every byte of the window.
        (window.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & self.mask
    }

    /// Whether any pattern occurs.
    fn any(&self, haystack: &[u8]) -> bool {
        self.scan(haystack, |_| true)
    }

    /// Every match: each is seen at exactly one sampled position (the first at or after its
    /// start), so none is reported twice.
    fn all(&self, haystack: &[u8]) -> Vec<Found> {
        let mut found = Vec::new();
        self.scan(haystack, |f| {
            found.push(f);
            false
        });
        found
    }

    /// Calls `seen` with each match until it returns true; returns whether it did.
    fn scan(&self, haystack: &[u8], mut seen: impl FnMut(Found) -> bool) -> bool {
        let mut t = 0;
        while t + W <= haystack.len() {
            let window = read(haystack, t);
            let h = self.slot(window);
            if self.bits[h >> 6] & (1 << (h & 63)) != 0
                && let Some(candidates) = self.windows.get(&window)
            {
                for &(id, offset) in candidates {
                    let Some(start) = t.checked_sub(offset as usize) else {
                        continue;
                    };
                    let pattern = &self.patterns[id as usize];
                    let end = start + pattern.len();
                    if haystack.get(start..end) == Some(pattern.as_slice())
                        && seen(Found {
                            start,
                            end,
                            pattern: id as usize,
                        })
                    {
                        return true;
                    }
                }
            }
            t += self.stride;
        }
        false
    }
}

fn read(bytes: &[u8], at: usize) -> u64 {
    let mut window = [0u8; W];
    window.copy_from_slice(&bytes[at..at + W]);
    u64::from_le_bytes(window)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The window values are already well mixed by [`Sampled::slot`]'s multiplication; hashing them
/// again with SipHash would cost more than the lookup.
#[derive(Default)]
pub struct WindowHasher(u64);

impl Hasher for WindowHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substitute::stream::tests::Lcg;

    #[test]
    fn sampled_search_finds_what_the_automaton_finds_on_random_overlapping_patterns() {
        let mut rng = Lcg(3);
        for round in 0..300 {
            // A small alphabet, so patterns overlap, extend and contain one another.
            let alphabet = b"abc";
            let count = 33 + rng.next(40);
            let patterns: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    let len = 8 + rng.next(12);
                    (0..len).map(|_| alphabet[rng.next(3)]).collect()
                })
                .collect();
            let refs: Vec<&[u8]> = patterns.iter().map(Vec::as_slice).collect();
            let shortest = refs.iter().map(|p| p.len()).min().unwrap();
            let sampled = Finder {
                shortest,
                search: Search::Sampled(Sampled::new(&refs, shortest)),
            };
            // Ungated: the length gate must never hide a match the automaton finds.
            let automaton = Finder {
                shortest: 0,
                search: Search::Automaton(
                    AhoCorasick::builder()
                        .match_kind(MatchKind::Standard)
                        .build(&refs)
                        .unwrap(),
                ),
            };
            let mut text = Vec::new();
            for _ in 0..rng.next(20) {
                if rng.next(3) == 0 {
                    text.extend_from_slice(&patterns[rng.next(count)]);
                } else {
                    text.push(alphabet[rng.next(3)]);
                }
            }
            assert_eq!(
                sampled.overlapping(&text),
                automaton.overlapping(&text),
                "round {round}"
            );
            assert_eq!(
                sampled.is_match(&text),
                automaton.is_match(&text),
                "round {round}"
            );
        }
    }

    #[test]
    fn only_sets_of_many_long_patterns_are_sampled() {
        let long: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("secret-number-{i:03}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = long.iter().map(Vec::as_slice).collect();
        let search = |refs: &[&[u8]]| Finder::new(refs).map(|f| f.search);
        assert!(matches!(search(&refs), Some(Search::Sampled(_))));
        assert!(matches!(search(&refs[..3]), Some(Search::Automaton(_))));
        let mut short = refs.clone();
        short.push(b"short");
        assert!(matches!(search(&short), Some(Search::Automaton(_))));
        // A haystack shorter than every pattern is answered by its length alone.
        let finder = Finder::new(&short).unwrap();
        assert!(finder.is_match(b"short") && !finder.is_match(b"shor"));
        let finder = Finder::new(&refs).unwrap();
        let text = b"x secret-number-007 y secret-number-039";
        let found: Vec<usize> = finder.overlapping(text).iter().map(|f| f.pattern).collect();
        assert_eq!(found, [7, 39]);
    }
}
