//! Placeholder replacement in a request's headers and query string, as functions of the compiled
//! [`Placeholders`] and a [`Target`] (destination and the session's vaults): no store, session or
//! config is needed, so the fuzz targets drive them from values built in place.
//!
//! The decision for each placeholder found is made by [`decide`] on the destination alone. When
//! no placeholder is present nothing is allocated: each value is scanned once by the searcher.

use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};

use smallvec::SmallVec;
use zeroize::Zeroizing;

use crate::vault::is_url_safe;

pub use entry::{Entry, Location, McpScope, OauthState, Outcome, Signing, Target, VaultFilter};
pub use placeholders::{BuildError, Placeholders};

/// What a response must not carry back: the secrets of credentials substituted into the request
/// (raw and percent-encoded), and encoded values keyswap rewrote.
#[derive(Default)]
pub struct Scrub {
    /// Inline: a request uses one or two credentials, and this runs on every request.
    entries: SmallVec<[usize; 4]>,
    extra: Vec<stream::Pair>,
}

impl Scrub {
    pub fn add_entry(&mut self, entry: usize) {
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    /// Everything `report` substituted or rewrote.
    pub fn add_report(&mut self, report: &Report) {
        for &(i, outcome) in &report.seen {
            if outcome == Outcome::Substituted {
                self.add_entry(i);
            }
        }
        self.extra.extend(report.rewritten.iter().cloned());
    }

    /// The entries substituted, and the values rewritten, in this request: what the scrubber of
    /// its answer must mask first.
    pub fn into_parts(self) -> (SmallVec<[usize; 4]>, Vec<stream::Pair>) {
        (self.entries, self.extra)
    }
}

/// Per-request record of placeholder outcomes, by store entry. Empty (and unallocated) when the
/// request carried no placeholder.
#[derive(Default)]
pub struct Report {
    /// Inline, like `substituted_at`: a placeholder-carrying request allocates nothing for them.
    seen: SmallVec<[(usize, Outcome); 4]>,
    /// Where each substitution happened (for metrics).
    substituted_at: SmallVec<[(usize, Location); 4]>,
    /// Encoded values keyswap rewrote (`base64(user:secret)` → `base64(user:placeholder)`), so a
    /// response echoing them can be masked back to what the client sent.
    rewritten: Vec<stream::Pair>,
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The rewritten values encode secrets: never shown.
        f.debug_struct("Report")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl Report {
    pub fn record_substituted(&mut self, entry: usize, location: Location) {
        self.record(entry, Outcome::Substituted);
        if !self.substituted_at.contains(&(entry, location)) {
            self.substituted_at.push((entry, location));
        }
    }

    /// `(entry index, location)` of every substitution.
    pub fn substitutions(&self) -> &[(usize, Location)] {
        &self.substituted_at
    }

    fn record(&mut self, entry: usize, outcome: Outcome) {
        if !self.seen.contains(&(entry, outcome)) {
            self.seen.push((entry, outcome));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn any(&self, outcome: Outcome) -> bool {
        self.seen.iter().any(|&(_, o)| o == outcome)
    }

    /// `(entry index, outcome)` pairs in the order first seen.
    pub fn outcomes(&self) -> &[(usize, Outcome)] {
        &self.seen
    }

    /// `vcrd_a=substituted vcrd_b=out_of_scope`: credential ids and outcomes, never a value.
    pub fn display<'a>(&'a self, entries: &'a [Entry]) -> impl fmt::Display + 'a {
        ReportDisplay {
            report: self,
            entries,
        }
    }
}

struct ReportDisplay<'a> {
    report: &'a Report,
    entries: &'a [Entry],
}

impl fmt::Display for ReportDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(entry, outcome)) in self.report.seen.iter().enumerate() {
            if i > 0 {
                f.write_char(' ')?;
            }
            write!(
                f,
                "{}={}",
                self.entries[entry].credential_id,
                outcome.as_str()
            )?;
        }
        Ok(())
    }
}

/// Whether the placeholder of `entry`, found in `location`, may be replaced on `target`.
pub fn decide(entry: &Entry, target: Target<'_>, location: Location) -> Outcome {
    let enabled = match location {
        Location::Header => entry.injection.header,
        Location::Query => entry.injection.query,
        Location::Body => entry.injection.body,
    };
    if entry.archived {
        Outcome::Archived
    } else if !entry.networking.allows(target.host)
        || !entry.mcp.as_ref().is_none_or(|m| m.covers(target))
    {
        Outcome::OutOfScope
    } else if entry.signing.is_some() {
        Outcome::ToSign
    } else if !enabled {
        Outcome::LocationDisabled
    } else if !target.secrets_allowed {
        Outcome::PlaintextUpstream
    } else {
        Outcome::Substituted
    }
}

/// MCP credentials (`static_bearer`, `mcp_oauth`): a request to the credential's URL that carries no
/// `Authorization` gets `Bearer <token>` (one carrying the placeholder is handled by [`headers`]).
/// The credential with the longest matching path prefix wins.
pub fn bearer(
    placeholders: &Placeholders,
    target: Target<'_>,
    headers: &mut HeaderMap,
    report: &mut Report,
) {
    if headers.contains_key(AUTHORIZATION) {
        return;
    }
    let Some(index) = mcp_credential(placeholders, target, headers) else {
        return;
    };
    let entry = placeholders.entry(index);
    let mut value = Zeroizing::new(b"Bearer ".to_vec());
    value.extend_from_slice(entry.secret.expose());
    if let Ok(mut value) = HeaderValue::from_bytes(&value) {
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
        report.record_substituted(index, Location::Header);
    }
}

/// The MCP credential that authorizes this request: with no `Authorization`, the one whose URL
/// covers the target with the longest path prefix; otherwise the one whose placeholder it carries.
pub fn mcp_credential(
    placeholders: &Placeholders,
    target: Target<'_>,
    headers: &HeaderMap,
) -> Option<usize> {
    if placeholders.mcp_entries().is_empty() {
        return None;
    }
    let authorization = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    placeholders
        .mcp_entries()
        .iter()
        .copied()
        .filter(|&i| {
            let e = placeholders.entry(i);
            target.vaults.allows(e)
                && decide(e, target, Location::Header) == Outcome::Substituted
                && authorization
                    .is_none_or(|a| memchr::memmem::find(a, e.placeholder.as_bytes()).is_some())
        })
        .max_by_key(|&i| {
            let e = placeholders.entry(i);
            e.mcp.as_ref().map_or(0, |m| m.path_prefix.len())
        })
}

/// Replaces placeholders in every header value (and inside `Authorization: Basic` credentials).
pub fn headers(
    placeholders: &Placeholders,
    target: Target<'_>,
    headers: &mut HeaderMap,
    report: &mut Report,
) {
    let Some(searcher) = placeholders.searcher() else {
        return;
    };
    for (name, value) in headers.iter_mut() {
        if never_substituted(name) {
            if searcher.is_match(value.as_bytes()) {
                record_disabled(placeholders, target, value.as_bytes(), report);
            }
            continue;
        }
        if name == AUTHORIZATION
            && let Some(new) = basic_auth(placeholders, target, value.as_bytes(), report)
        {
            *value = new;
            continue;
        }
        // One scan: `replace` finds nothing in most values and then allocates nothing.
        let Some(bytes) = replace(
            placeholders,
            target,
            Location::Header,
            value.as_bytes(),
            report,
            push_raw,
        )
        .map(zeroize::Zeroizing::new) else {
            continue;
        };
        if let Ok(mut new) = HeaderValue::from_bytes(&bytes) {
            // SECURITY: sensitive values are never indexed by HPACK and never shown in Debug output.
            new.set_sensitive(true);
            *value = new;
        }
    }
}

/// SECURITY: headers that servers log, reflect or forward as a matter of course (SPEC §8): a
/// placeholder there stays a placeholder, whatever its credential allows.
fn never_substituted(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "host" | "user-agent" | "referer" | "origin" | "via" | "forwarded"
    ) || name.starts_with("x-forwarded-")
}

/// Records `location_disabled` for every placeholder of the session's credentials in `value`.
fn record_disabled(
    placeholders: &Placeholders,
    target: Target<'_>,
    value: &[u8],
    report: &mut Report,
) {
    let Some(searcher) = placeholders.searcher() else {
        return;
    };
    for m in searcher.find_iter(value) {
        let index = m.pattern().as_usize();
        if target.vaults.allows(placeholders.entry(index)) {
            report.record(index, Outcome::LocationDisabled);
        }
    }
}

/// `Authorization: Basic base64(user:password)`: substitutes inside the decoded pair and re-encodes.
/// Returns `None` when the value is not Basic or nothing was substituted.
fn basic_auth(
    placeholders: &Placeholders,
    target: Target<'_>,
    value: &[u8],
    report: &mut Report,
) -> Option<HeaderValue> {
    const SCHEME: &[u8] = b"basic ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let encoded = value[SCHEME.len()..].trim_ascii();
    // Decode on the stack: the common no-placeholder case must not allocate.
    let mut buf = [0u8; 768];
    let decoded: &[u8] = match BASE64.decode_slice(encoded, &mut buf) {
        Ok(n) => &buf[..n],
        Err(_) => return None,
    };
    if !placeholders.searcher()?.is_match(decoded) {
        return None;
    }
    let replaced = Zeroizing::new(replace(
        placeholders,
        target,
        Location::Header,
        decoded,
        report,
        push_raw,
    )?);
    let mut out = Zeroizing::new(String::from("Basic "));
    BASE64.encode_string(replaced.as_slice(), &mut out);
    report.rewritten.push((
        Zeroizing::new(out.as_bytes()[6..].to_vec()),
        Zeroizing::new(encoded.to_vec()),
    ));
    let mut header = HeaderValue::from_bytes(out.as_bytes()).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// Replaces placeholders in the query string; returns the new URI, or `None` if nothing changed.
pub fn query(
    placeholders: &Placeholders,
    target: Target<'_>,
    uri: &Uri,
    report: &mut Report,
) -> Option<Uri> {
    let searcher = placeholders.searcher()?;
    let query = uri.query()?;
    if !searcher.is_match(query.as_bytes()) {
        return None;
    }
    let replaced = replace(
        placeholders,
        target,
        Location::Query,
        query.as_bytes(),
        report,
        push_percent_encoded,
    )?;
    let mut path_and_query = uri.path().as_bytes().to_vec();
    path_and_query.push(b'?');
    path_and_query.extend_from_slice(&replaced);
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::from_maybe_shared(bytes::Bytes::from(path_and_query)).ok()?);
    Uri::from_parts(parts).ok()
}

/// Replaces each placeholder in `haystack` that [`decide`] allows, recording every one found.
/// Returns `None` when nothing was substituted (the caller keeps the original value).
fn replace(
    placeholders: &Placeholders,
    target: Target<'_>,
    location: Location,
    haystack: &[u8],
    report: &mut Report,
    push_secret: fn(&mut Vec<u8>, &[u8]),
) -> Option<Vec<u8>> {
    let searcher = placeholders.searcher()?;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for m in searcher.find_iter(haystack) {
        let index = m.pattern().as_usize();
        let entry = placeholders.entry(index);
        if !target.vaults.allows(entry) {
            continue;
        }
        let outcome = decide(entry, target, location);
        if outcome == Outcome::Substituted {
            report.record_substituted(index, location);
        } else {
            report.record(index, outcome);
        }
        if outcome != Outcome::Substituted {
            continue;
        }
        let buf =
            out.get_or_insert_with(|| Vec::with_capacity(haystack.len() + entry.secret.len()));
        buf.extend_from_slice(&haystack[copied..m.start()]);
        push_secret(buf, entry.secret.expose());
        copied = m.end();
    }
    let mut out = out?;
    out.extend_from_slice(&haystack[copied..]);
    Some(out)
}

fn push_raw(out: &mut Vec<u8>, secret: &[u8]) {
    out.extend_from_slice(secret);
}

/// A secret placed in a query string must not break it apart (`&`, `=`, `#`…).
fn push_percent_encoded(out: &mut Vec<u8>, secret: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in secret {
        if is_url_safe(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

pub mod entry;
pub mod finder;
pub mod placeholders;
pub mod scrub;
pub mod spell;
pub mod stream;

#[cfg(test)]
mod tests;
