//! A Bloom filter of a table's existing rows, kept in Redis so every sidecar instance
//! shares it (penetration guard: a key the filter has never seen is answered "no such
//! row" without MySQL).
//!
//! The filter is a Redis string used as a bit array (`SETBIT`/`GETBIT`), `m` bits and
//! `k` hash positions per row key, sized from `read.bloom_expected_rows` and
//! `read.bloom_fp_rate`. Positions come from FNV-1a and double hashing
//! (`h1 + i·h2 mod m`), fixed functions so every instance computes the same bits.
//!
//! - **Built** from a scan of the table ([`Bloom::build`], via [`crate::mysql::scan`]); until the
//!   build has finished (its `…:ready` key exists) readers do not consult the filter.
//! - **Maintained** by the applier: every synced upsert adds its key before the row is
//!   written, whatever the strategy (in `invalidate` mode every change adds its key).
//! - **Deletes** cannot be removed from a Bloom filter: a deleted row's bits stay set, so
//!   lookups of it fall through to the negative cache and MySQL (never a wrong answer,
//!   only a lost saving). False positives grow with deletes and with rows beyond
//!   `bloom_expected_rows`; rebuild by deleting the filter's keys (`cachesync:bloom:{db.table}:*`)
//!   and restarting the sidecar.
//! - Rows written to MySQL behind cachesync's back (not through a strategy cachesync
//!   runs) are not added and would be answered 404: enable the filter only for tables
//!   whose every write reaches the sync stream.
//!
//! The keys share the hash tag `{database.table}`, so they live in one cluster slot.

use super::connection::RedisConn;

use crate::error::{Error, Result};
use crate::model::table::SyncedTable;
use crate::mysql::scan::TableScan;

/// Rows per scan batch and `SETBIT` pipeline while building.
const BUILD_BATCH: usize = 5_000;

/// Where a table's filter lives and how it hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    /// The bit array. Its name carries `m` and `k`, so resizing builds a new filter
    /// instead of misreading the old one.
    pub key: String,
    /// Exists once the build from a table scan has finished.
    pub ready_key: String,
    /// `m`: bits in the array.
    pub bits: u64,
    /// `k`: positions per row key.
    pub hashes: u32,
}

impl Bloom {
    /// The filter of `table`, when its `read.bloom` is on.
    pub fn of(table: &SyncedTable) -> Option<Bloom> {
        let bloom = table.config.read.bloom?;
        Some(Bloom::sized(
            &table.name(),
            bloom.expected_rows,
            bloom.fp_rate,
        ))
    }

    /// A filter for `expected` rows at false-positive rate `fp_rate`:
    /// `m = -n·ln p / ln²2` bits (at most 2³² — Redis strings end at 512 MB) and
    /// `k = m/n · ln 2` positions.
    pub fn sized(table: &str, expected: u64, fp_rate: f64) -> Bloom {
        let n = expected.max(1) as f64;
        let ln2 = std::f64::consts::LN_2;
        let bits = (-n * fp_rate.ln() / (ln2 * ln2))
            .ceil()
            .clamp(64.0, 4_294_967_296.0) as u64;
        let hashes = ((bits as f64 / n) * ln2).round().clamp(1.0, 30.0) as u32;
        let key = format!("cachesync:bloom:{{{table}}}:{bits}x{hashes}");
        Bloom {
            ready_key: format!("{key}:ready"),
            key,
            bits,
            hashes,
        }
    }

    /// The bit positions of a row key.
    pub fn positions(&self, row_key: &str) -> impl Iterator<Item = u64> + '_ {
        let h1 = fnv1a(row_key.as_bytes());
        let h2 = splitmix64(h1) | 1;
        (0..u64::from(self.hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.bits)
    }

    /// Adds `SETBIT`s for `row_key` to `pipe` (replies ignored).
    pub fn add_to(&self, pipe: &mut redis::Pipeline, row_key: &str) {
        for bit in self.positions(row_key) {
            pipe.cmd("SETBIT").arg(&self.key).arg(bit).arg(1).ignore();
        }
    }

    /// Adds `EXISTS ready` and one `GETBIT` per position to `pipe`: `1 + k` replies that
    /// [`Bloom::says_absent`] reads.
    pub fn check_in(&self, pipe: &mut redis::Pipeline, row_key: &str) {
        pipe.cmd("EXISTS").arg(&self.ready_key);
        for bit in self.positions(row_key) {
            pipe.cmd("GETBIT").arg(&self.key).arg(bit);
        }
    }

    /// Whether the replies of [`Bloom::check_in`] prove the key was never added: the
    /// filter is built and at least one bit is clear.
    pub fn says_absent(replies: &[i64]) -> bool {
        match replies.split_first() {
            Some((ready, bits)) => *ready == 1 && bits.contains(&0),
            None => false,
        }
    }

    /// Builds the filter from a scan of `table` unless it is built already or another
    /// instance is building it; returns the rows added (`None`: nothing to do). Rows
    /// synced while the scan runs are added by the applier, so none is missed.
    pub async fn build(
        &self,
        table: &SyncedTable,
        mysql: &mut mysql_async::Conn,
        redis: &mut RedisConn,
    ) -> Result<Option<u64>> {
        let context = || format!("building the Bloom filter of {}", table.name());
        let building = format!("{}:building", self.key);
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&building)
            .arg(std::process::id())
            .arg("NX")
            .arg("EX")
            .arg(3_600)
            .query_async(redis)
            .await
            .map_err(|e| Error::redis(context(), e))?;
        let ready: bool = redis::cmd("EXISTS")
            .arg(&self.ready_key)
            .query_async(redis)
            .await
            .map_err(|e| Error::redis(context(), e))?;
        if claimed.is_none() || ready {
            if claimed.is_some() {
                let _: redis::RedisResult<()> =
                    redis::cmd("DEL").arg(&building).query_async(redis).await;
            }
            return Ok(None);
        }
        let outcome = async {
            let mut scan = TableScan::open(mysql, table, BUILD_BATCH, "bloom filter").await?;
            while let Some(batch) = scan.next_batch().await? {
                let mut pipe = redis::pipe();
                // An undecodable row exists too: a "no such row" answer would be wrong.
                let undecodable = batch.undecodable.iter().filter_map(|u| u.key_row.as_ref());
                for row in batch.rows.iter().chain(undecodable) {
                    self.add_to(&mut pipe, &table.key_of(row));
                }
                pipe.query_async::<()>(redis)
                    .await
                    .map_err(|e| Error::redis(context(), e))?;
            }
            redis::cmd("SET")
                .arg(&self.ready_key)
                .arg(scan.rows)
                .query_async::<()>(redis)
                .await
                .map_err(|e| Error::redis(context(), e))?;
            Ok(scan.rows)
        }
        .await;
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&building).query_async(redis).await;
        outcome.map(Some)
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: a second, independent-looking hash from the first.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizing_follows_the_textbook_formulas() {
        let b = Bloom::sized("shop.users", 1_000_000, 0.01);
        assert_eq!(b.bits, 9_585_059);
        assert_eq!(b.hashes, 7);
        assert_eq!(b.key, "cachesync:bloom:{shop.users}:9585059x7");
        assert_eq!(b.ready_key, "cachesync:bloom:{shop.users}:9585059x7:ready");
        // Capped at what one Redis string can hold.
        assert_eq!(Bloom::sized("t.t", u64::MAX / 4, 1e-9).bits, 1 << 32);
    }

    #[test]
    fn positions_are_stable_and_spread() {
        let b = Bloom::sized("shop.users", 1_000, 0.01);
        let p: Vec<u64> = b.positions("user:1").collect();
        assert_eq!(p, b.positions("user:1").collect::<Vec<_>>());
        assert_eq!(p.len(), b.hashes as usize);
        assert!(p.iter().all(|&x| x < b.bits));
        assert_ne!(p, b.positions("user:2").collect::<Vec<_>>());
    }

    #[test]
    fn false_positive_rate_is_near_the_target() {
        // A local bit array with the same positions: 10k keys in, 100k others probed.
        let b = Bloom::sized("t.t", 10_000, 0.01);
        let mut bits = vec![false; b.bits as usize];
        for i in 0..10_000 {
            for p in b.positions(&format!("k:{i}")) {
                bits[p as usize] = true;
            }
        }
        let false_positives = (10_000..110_000)
            .filter(|i| b.positions(&format!("k:{i}")).all(|p| bits[p as usize]))
            .count();
        assert!(false_positives < 2_000, "{false_positives} of 100000");
    }

    #[test]
    fn absent_only_when_built_and_a_bit_is_clear() {
        assert!(Bloom::says_absent(&[1, 1, 0, 1]));
        assert!(!Bloom::says_absent(&[1, 1, 1, 1]));
        assert!(!Bloom::says_absent(&[0, 0, 0, 0]), "not built: no verdict");
        assert!(!Bloom::says_absent(&[]));
    }
}
