//! Every key layout cachesync writes in Redis, and the version field's shape, in one
//! place: a row's companion keys (tombstone, read marker) that share its Redis Cluster
//! slot, the bound of a dead-letter list, reading `_cachesync_v` out of a stored JSON
//! document, and the keys a deployment keeps for itself ([`DeploymentKeys`]). The apply
//! script (`apply.lua`) follows the same layout.

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
    companion_key(key, TOMBSTONE_SUFFIX)
}

/// The read-marker key of a row key, in the same Redis Cluster slot (named like
/// [`tombstone_key`]): `{user:1}:cachesync:fill`. It holds the read path's fill lease
/// (`lease:<token>`) or `absent` for a row known not to exist, and every synced change of
/// the row deletes it (see [`super::applier::APPLY_LUA`]). `None` when no key can share the slot; such
/// rows are read from MySQL without being filled.
pub fn fill_key(key: &str) -> Option<String> {
    companion_key(key, FILL_SUFFIX)
}

/// `key` + `suffix` in `key`'s cluster slot: `{key}suffix` unless `key` has a hash tag
/// of its own. Built with one allocation: the applier makes two per row change.
fn companion_key(key: &str, suffix: &str) -> Option<String> {
    let tagged = has_hash_tag(key);
    if !tagged && key.contains('}') {
        return None;
    }
    let mut out = String::with_capacity(key.len() + suffix.len() + 2);
    if tagged {
        out.push_str(key);
    } else {
        out.push('{');
        out.push_str(key);
        out.push('}');
    }
    out.push_str(suffix);
    Some(out)
}

/// Whether Redis Cluster hashes only part of `key`: a `{` followed later by a `}` with
/// at least one byte between them.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// The checkpoint key every binlog deployment shared before keys were named per
/// deployment; a checkpoint still there is not adopted silently (see
/// `docs/operations.md`, *Checkpoint key migration*).
pub const LEGACY_CHECKPOINT_KEY: &str = "cachesync:checkpoint:binlog";

/// The keys one deployment (the config's `name`) keeps for itself, all with the hash tag
/// `{<name>}` so they share one Redis Cluster slot and one script can update them
/// together: `cachesync:{<name>}:checkpoint` and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentKeys {
    /// The deployment's name.
    pub name: String,
    /// (binlog) the position up to which changes are in Redis; `binlog.checkpoint_key`
    /// when the config sets one.
    pub checkpoint: String,
    /// (dual-write, mq) a hash that exists while Redis holds this deployment's data: its
    /// disappearance is how data loss is noticed (see [`crate::snapshot::watch`]).
    pub marker: String,
    /// The online snapshots not finished yet: table → where the next chunk starts (see
    /// [`crate::snapshot`]). Gone when none is running.
    pub snapshots: String,
    /// (binlog) the list of row changes that could not be decoded;
    /// `binlog.dead_letter_key` when the config sets one.
    pub dead_letter: String,
}

impl DeploymentKeys {
    /// The keys of deployment `name`, with the binlog checkpoint at `checkpoint` when the
    /// config names one.
    pub fn new(name: &str, checkpoint: Option<&str>, dead_letter: Option<&str>) -> DeploymentKeys {
        let key = |what: &str| DeploymentKeys::key(name, what);
        DeploymentKeys {
            name: name.to_owned(),
            checkpoint: checkpoint.map_or_else(|| key("checkpoint"), str::to_owned),
            marker: key("marker"),
            snapshots: key("snapshots"),
            dead_letter: dead_letter.map_or_else(|| key("dead-letter"), str::to_owned),
        }
    }

    /// The key `what` of deployment `name`: `cachesync:{<name>}:<what>`.
    pub fn key(name: &str, what: &str) -> String {
        format!("cachesync:{{{name}}}:{what}")
    }

    /// Whether the checkpoint key is the per-deployment default (not set in the config).
    pub fn default_checkpoint(&self) -> bool {
        self.checkpoint == DeploymentKeys::key(&self.name, "checkpoint")
    }
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
    fn deployment_keys_share_one_slot() {
        let keys = DeploymentKeys::new("shop", None, None);
        assert_eq!(keys.checkpoint, "cachesync:{shop}:checkpoint");
        assert_eq!(keys.marker, "cachesync:{shop}:marker");
        assert_eq!(keys.snapshots, "cachesync:{shop}:snapshots");
        assert!(keys.default_checkpoint());
        let set = DeploymentKeys::new("shop", Some(LEGACY_CHECKPOINT_KEY), None);
        assert_eq!(set.checkpoint, LEGACY_CHECKPOINT_KEY);
        assert!(!set.default_checkpoint());
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
