//! Response scrubbing tables (SPEC §8): for one set of credentials, every spelling of every secret
//! mapped to the credential's placeholder spelled the same way.
//!
//! SECURITY: a table holds exactly the secrets to be masked, and every match in it is masked.
//! Whether a credential's secret is masked never depends on which other secrets exist: an equal
//! secret, one that extends it, or one it contains only decides *which* placeholder stands in, and
//! then the request's own credential wins (see [`ScrubTable::scrubber`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use zeroize::Zeroizing;

use super::spell::spellings;
use super::stream::{Pair, StreamReplacer, Table};

/// A compiled scrubbing table for one set of credentials (store entry indices).
pub struct ScrubTable {
    table: Arc<Table>,
    /// Patterns that several entries spell alike: pattern id → every (entry, replacement), in
    /// the order the set gave them.
    shared: Vec<(usize, Vec<Owner>)>,
}

/// A store entry whose secret has a pattern's spelling, and its placeholder spelled alike.
type Owner = (usize, Zeroizing<Vec<u8>>);

// SECURITY: never shows a pattern.
impl std::fmt::Debug for ScrubTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrubTable")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// One credential to mask: its store entry index, secret and placeholder.
pub struct Masked<'a> {
    pub entry: usize,
    pub secret: &'a [u8],
    pub placeholder: &'a [u8],
}

impl ScrubTable {
    /// The table for `masked` (earlier entries win a pattern they share with later ones) plus
    /// `extra` exact pairs (encoded values keyswap rewrote in this request), which come first.
    /// `None` when there is nothing to mask.
    pub fn build<'a>(
        masked: impl IntoIterator<Item = Masked<'a>>,
        extra: Vec<Pair>,
    ) -> Option<ScrubTable> {
        let mut pairs: Vec<Pair> = Vec::new();
        let mut owners: Vec<Vec<Owner>> = Vec::new();
        // Pattern ids by the hash of the pattern (no secret is kept as a key).
        let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
        let find = |pairs: &[Pair], index: &HashMap<u64, Vec<usize>>, pattern: &[u8]| {
            index
                .get(&hash(pattern))
                .and_then(|ids| ids.iter().copied().find(|&id| *pairs[id].0 == *pattern))
        };
        for (pattern, replacement) in extra {
            if find(&pairs, &index, &pattern).is_none() {
                index.entry(hash(&pattern)).or_default().push(pairs.len());
                pairs.push((pattern, replacement));
                owners.push(Vec::new());
            }
        }
        for m in masked {
            for (pattern, replacement) in spellings(m.secret, m.placeholder) {
                match find(&pairs, &index, &pattern) {
                    Some(id) => owners[id].push((m.entry, replacement)),
                    None => {
                        index.entry(hash(&pattern)).or_default().push(pairs.len());
                        owners.push(vec![(m.entry, replacement.clone())]);
                        pairs.push((pattern, replacement));
                    }
                }
            }
        }
        let shared = owners
            .into_iter()
            .enumerate()
            .filter(|(_, o)| o.len() > 1)
            .collect();
        Some(ScrubTable {
            table: Arc::new(Table::of(pairs)?),
            shared,
        })
    }

    /// A scrubber over this table for one response. A pattern that several credentials share is
    /// masked as the first of `used` (the credentials the request carried) that owns it.
    pub fn scrubber(&self, used: &[usize]) -> StreamReplacer {
        let mut scrubber = StreamReplacer::new(self.table.clone(), Vec::new());
        if used.is_empty() {
            return scrubber;
        }
        for (pattern, owners) in &self.shared {
            let preferred = used
                .iter()
                .find_map(|u| owners.iter().find(|(entry, _)| entry == u));
            if let Some((_, replacement)) = preferred {
                scrubber.set_replacement(*pattern, replacement.clone());
            }
        }
        scrubber
    }
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// One tunnel's scrubbing table, kept with the store generation it came from. A tunnel's session
/// and destination never change, so its requests need not look the table up again in the store's
/// shared cache (a hash of the host, and a read lock both cores contend for).
#[derive(Default)]
pub struct Memo(Mutex<Option<(u64, Option<Arc<ScrubTable>>)>>);

impl Memo {
    /// The table kept for `generation`, or the one `lookup` finds (then kept).
    pub fn get_or(
        &self,
        generation: u64,
        lookup: impl FnOnce() -> Option<Arc<ScrubTable>>,
    ) -> Option<Arc<ScrubTable>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((kept, table)) = slot.as_ref()
            && *kept == generation
        {
            return table.clone();
        }
        let table = lookup();
        *slot = Some((generation, table.clone()));
        table
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn scrub(table: &ScrubTable, used: &[usize], input: &str) -> String {
        let mut s = table.scrubber(used);
        let mut out = s.push(Bytes::copy_from_slice(input.as_bytes())).to_vec();
        out.extend_from_slice(&s.finish());
        String::from_utf8(out).unwrap()
    }

    fn masked<'a>(entry: usize, secret: &'a str, placeholder: &'a str) -> Masked<'a> {
        Masked {
            entry,
            secret: secret.as_bytes(),
            placeholder: placeholder.as_bytes(),
        }
    }

    #[test]
    fn a_memo_keeps_a_table_for_its_generation_only() {
        let first =
            Arc::new(ScrubTable::build([masked(0, "tok-one-111", "PH_1")], Vec::new()).unwrap());
        let second =
            Arc::new(ScrubTable::build([masked(0, "tok-two-222", "PH_2")], Vec::new()).unwrap());
        let memo = Memo::default();
        let got = memo.get_or(1, || Some(first.clone())).unwrap();
        assert!(Arc::ptr_eq(&got, &first));
        let kept = memo.get_or(1, || panic!("looked up again in the same generation"));
        assert!(Arc::ptr_eq(&kept.unwrap(), &first));
        // A reload (next generation): looked up again, and the new secret is what is masked.
        let reloaded = memo.get_or(2, || Some(second.clone())).unwrap();
        assert_eq!(scrub(&reloaded, &[], "a tok-two-222 b"), "a PH_2 b");
        assert!(
            memo.get_or(3, || None).is_none(),
            "no table in scope is kept too"
        );
        assert!(memo.get_or(3, || panic!("kept")).is_none());
    }

    #[test]
    fn an_equal_secret_of_another_credential_never_stops_the_masking() {
        let table = ScrubTable::build(
            [
                masked(0, "tok-123456", "PH_ARCHIVED"),
                masked(1, "tok-123456", "PH_USED"),
            ],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(scrub(&table, &[1], "a tok-123456 b"), "a PH_USED b");
        assert_eq!(scrub(&table, &[], "a tok-123456 b"), "a PH_ARCHIVED b");
    }

    #[test]
    fn a_secret_that_extends_or_contains_another_is_masked_whole() {
        let table = ScrubTable::build(
            [
                masked(0, "tok-123456", "PH_A"),
                masked(1, "tok-123456-suffix", "PH_B"),
            ],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(scrub(&table, &[0], "tok-123456-suffix"), "PH_B");
        assert_eq!(scrub(&table, &[0], "tok-123456-suffiy"), "PH_A-suffiy");
        let only_a = ScrubTable::build([masked(0, "tok-123456", "PH_A")], Vec::new()).unwrap();
        assert_eq!(scrub(&only_a, &[0], "tok-123456-suffix"), "PH_A-suffix");
    }

    #[test]
    fn a_match_that_overlaps_another_never_leaves_the_rest_in_clear() {
        let table = ScrubTable::build(
            [
                masked(0, "ghp_R3alS3cretT0ken", "PH_A"),
                masked(1, "zq9-Other-Secret-Value-g", "PH_C"),
            ],
            Vec::new(),
        )
        .unwrap();
        // C ends with the `g` that A starts with.
        assert_eq!(
            scrub(
                &table,
                &[0],
                "v=zq9-Other-Secret-Value-ghp_R3alS3cretT0ken;"
            ),
            "v=PH_CPH_A;"
        );
        // One secret that starts and ends with the same character, written twice overlapping.
        let table = ScrubTable::build([masked(0, "abcdefgha", "PH")], Vec::new()).unwrap();
        assert_eq!(scrub(&table, &[0], "abcdefghabcdefgha!"), "PHPH!");
        // Any chunking gives the same.
        let mut s = table.scrubber(&[]);
        let mut out = Vec::new();
        for piece in ["abcdefgh", "a", "bcdefgh", "a!"] {
            out.extend_from_slice(&s.push(Bytes::from(piece)));
        }
        out.extend_from_slice(&s.finish());
        assert_eq!(out, b"PHPH!");
    }

    #[test]
    fn extra_pairs_come_first() {
        let extra = vec![(
            Zeroizing::new(b"dXNlcjp0b2stMTIzNDU2".to_vec()),
            Zeroizing::new(b"CLIENT-SENT".to_vec()),
        )];
        let table = ScrubTable::build([masked(0, "tok-123456", "PH_A")], extra).unwrap();
        assert_eq!(
            scrub(&table, &[0], "Basic dXNlcjp0b2stMTIzNDU2"),
            "Basic CLIENT-SENT"
        );
    }
}
