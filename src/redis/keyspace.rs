//! Every key layout cachesync writes in Redis, and the version field's shape, in one
//! place: a row's companion keys (tombstone, read marker) that share its Redis Cluster
//! slot, the bound of a dead-letter list, and reading `_cachesync_v` out of a stored JSON
//! document. The apply script
//! (`apply.lua`) follows the same layout.

use crate::model::cell::VERSION_FIELD;

/// Suffix of tombstone keys.
pub const TOMBSTONE_SUFFIX: &str = ":cachesync:tombstone";

/// Suffix of read-marker keys (the read path's fill lease or "no such row" marker).
pub const FILL_SUFFIX: &str = ":cachesync:fill";

/// Most entries a dead-letter list (`binlog.dead_letter_key`) keeps: the newest, so a
/// table full of poison rows cannot grow Redis without bound.
pub const DEAD_LETTER_CAP: usize = 10_000;

/// The tombstone key of a row key, in the same Redis Cluster slot.
///
/// A key with a hash tag (`{...}`) keeps it when a suffix is appended. A key without one
/// is hashed whole, so it becomes the tag of the tombstone key: `{user:1}:cachesync:tombstone`.
/// That is impossible only for a key that contains `}` but no hash tag; such rows get no
/// tombstone (`None`) and their deletes are unguarded.
pub fn tombstone_key(key: &str) -> Option<String> {
    if has_hash_tag(key) {
        Some(format!("{key}{TOMBSTONE_SUFFIX}"))
    } else if !key.contains('}') {
        Some(format!("{{{key}}}{TOMBSTONE_SUFFIX}"))
    } else {
        None
    }
}

/// The read-marker key of a row key, in the same Redis Cluster slot (named like
/// [`tombstone_key`]): `{user:1}:cachesync:fill`. It holds the read path's fill lease
/// (`lease:<token>`) or `absent` for a row known not to exist, and every synced change of
/// the row deletes it (see [`super::applier::APPLY_LUA`]). `None` when no key can share the slot; such
/// rows are read from MySQL without being filled.
pub fn fill_key(key: &str) -> Option<String> {
    if has_hash_tag(key) {
        Some(format!("{key}{FILL_SUFFIX}"))
    } else if !key.contains('}') {
        Some(format!("{{{key}}}{FILL_SUFFIX}"))
    } else {
        None
    }
}

/// Whether Redis Cluster hashes only part of `key`: a `{` followed later by a `}` with
/// at least one byte between them.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// Whether `key` is one of cachesync's companion keys (a tombstone or a read marker)
/// rather than a row.
pub fn is_companion(key: &str) -> bool {
    key.ends_with(TOMBSTONE_SUFFIX) || key.ends_with(FILL_SUFFIX)
}

/// Splits a stored JSON row `{"_cachesync_v":N,...}` into `N` and the row without it
/// (`{...}`); a document without the version comes back whole.
pub fn split_version(doc: &[u8]) -> (Option<u64>, Vec<u8>) {
    let prefix = format!("{{\"{VERSION_FIELD}\":");
    let Some(rest) = doc.strip_prefix(prefix.as_bytes()) else {
        return (None, doc.to_vec());
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let version = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|d| d.parse().ok());
    let rest = &rest[digits..];
    let mut body = vec![b'{'];
    body.extend_from_slice(rest.strip_prefix(b",").unwrap_or(rest));
    (version, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_share_the_row_key_slot() {
        assert_eq!(
            tombstone_key("user:1").as_deref(),
            Some("{user:1}:cachesync:tombstone")
        );
        assert_eq!(
            tombstone_key("{shop}:user:1").as_deref(),
            Some("{shop}:user:1:cachesync:tombstone")
        );
        // An empty tag hashes the whole key; it contains '}' so no tombstone can share it.
        assert_eq!(tombstone_key("a{}b"), None);
        assert_eq!(tombstone_key("a}b"), None);
        assert_eq!(
            tombstone_key("a{b").as_deref(),
            Some("{a{b}:cachesync:tombstone")
        );
    }

    #[test]
    fn splits_the_version_off_a_json_row() {
        assert_eq!(
            split_version(br#"{"_cachesync_v":42,"id":1,"name":"a"}"#),
            (Some(42), br#"{"id":1,"name":"a"}"#.to_vec())
        );
        assert_eq!(
            split_version(br#"{"_cachesync_v":7}"#),
            (Some(7), b"{}".to_vec())
        );
        assert_eq!(
            split_version(br#"{"id":1}"#),
            (None, br#"{"id":1}"#.to_vec())
        );
    }
}
