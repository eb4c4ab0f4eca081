//! Every placeholder of one store generation, compiled for the request path: the entries (indexed
//! by pattern id), one searcher over all placeholders, the placeholder → secret table for bodies,
//! and the indices of the entries that bodies and MCP bearer injection must look at.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use zeroize::Zeroizing;

use super::entry::Entry;
use super::stream::Table;

/// The placeholder searcher could not be built (only possible with pathological pattern sets).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the placeholder searcher: {0}")]
pub struct BuildError(#[from] aho_corasick::BuildError);

/// One search over every placeholder. Leftmost-longest, so a placeholder that is a prefix of
/// another never cuts the longer one.
#[derive(Debug)]
pub struct Searcher {
    automaton: AhoCorasick,
    /// The shortest placeholder's length: a value shorter than that (most header values are)
    /// holds none, settled by one compare instead of the automaton's start-up.
    shortest: usize,
}

impl Searcher {
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        haystack.len() >= self.shortest && self.automaton.is_match(haystack)
    }

    pub fn find_iter<'a, 'h>(&'a self, haystack: &'h [u8]) -> aho_corasick::FindIter<'a, 'h> {
        let searched = if haystack.len() < self.shortest {
            &haystack[..0]
        } else {
            haystack
        };
        self.automaton.find_iter(searched)
    }
}

/// The compiled placeholders; immutable once built.
#[derive(Debug, Default)]
pub struct Placeholders {
    /// Indexed by the searcher's pattern id.
    entries: Vec<Entry>,
    searcher: Option<Searcher>,
    /// Placeholder → secret by entry (pattern id = entry index), for request bodies.
    body_table: Option<Arc<Table>>,
    /// Entries that allow body injection, and MCP entries: so a request pays for those searches
    /// only when such credentials exist.
    body_entries: Vec<usize>,
    mcp_entries: Vec<usize>,
    signing_entries: Vec<usize>,
}

impl Placeholders {
    pub fn compile(entries: Vec<Entry>) -> Result<Self, BuildError> {
        let searcher = if entries.is_empty() {
            None
        } else {
            let patterns = entries.iter().map(|e| e.placeholder.as_bytes());
            Some(Searcher {
                automaton: AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(patterns)?,
                shortest: entries
                    .iter()
                    .map(|e| e.placeholder.len())
                    .min()
                    .unwrap_or(0),
            })
        };
        let body_table = Table::of(
            entries
                .iter()
                .map(|e| {
                    (
                        Zeroizing::new(e.placeholder.as_bytes().to_vec()),
                        Zeroizing::new(e.secret.expose().to_vec()),
                    )
                })
                .collect(),
        )
        .map(Arc::new);
        let indices = |keep: fn(&Entry) -> bool| {
            entries
                .iter()
                .enumerate()
                .filter(|(_, e)| keep(e))
                .map(|(i, _)| i)
                .collect()
        };
        let body_entries = indices(|e| e.injection.body);
        let mcp_entries = indices(|e| e.mcp.is_some());
        let signing_entries = indices(|e| e.signing.is_some());
        Ok(Self {
            signing_entries,
            entries,
            searcher,
            body_table,
            body_entries,
            mcp_entries,
        })
    }

    pub fn searcher(&self) -> Option<&Searcher> {
        self.searcher.as_ref()
    }

    pub fn entry(&self, index: usize) -> &Entry {
        &self.entries[index]
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The placeholder → secret table for request bodies (pattern id = entry index).
    pub fn body_table(&self) -> Option<&Arc<Table>> {
        self.body_table.as_ref()
    }

    /// Entries whose `injection_location.body` is on.
    pub fn body_entries(&self) -> &[usize] {
        &self.body_entries
    }

    /// Entries of credentials that sign (`aws_sigv4`, `hmac_signature`).
    pub fn signing_entries(&self) -> &[usize] {
        &self.signing_entries
    }

    /// Entries of `static_bearer` and `mcp_oauth` credentials.
    pub fn mcp_entries(&self) -> &[usize] {
        &self.mcp_entries
    }
}
