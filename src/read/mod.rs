//! The cache-aside read path: `GET` a row of a configured table by primary key through
//! the sidecar API, with guards against the three classic ways a cache fails under load.
//!
//! A read goes L1 (optional, in-process, short TTL) → Redis → MySQL:
//!
//! 1. **L1** ([`moka`], `read.l1_ttl_ms`): answers (rows and "no such row") kept in this
//!    process only; how stale a read may be across instances is this TTL.
//! 2. **Redis**, one pipelined round trip: the row key, its *read marker*
//!    ([`crate::redis::keyspace::fill_key`]), its remaining TTL and, with a Bloom filter, the
//!    filter's bits. A present row is the answer (the `_cachesync_v` bookkeeping left out).
//!    A marker holding `absent` is a remembered miss (negative caching, penetration
//!    guard); a Bloom filter that has never seen the key answers "no such row" without
//!    MySQL ([`crate::redis::bloom`]).
//! 3. **MySQL**, one primary-key `SELECT` (the synced columns, decoded and encoded as the
//!    sync stream does), then a **fill** of Redis through the applier's script
//!    ([`Applier::fill`]).
//!
//! # Why a fill never overwrites a newer synced value
//!
//! Before the `SELECT`, the reader takes a *lease*: `SET <marker> lease:<token> [NX] PX
//! lock_ttl_ms`. Every synced change the applier writes — upsert or delete, versioned
//! or not, any strategy — deletes the marker in the same script call. The fill writes
//! only while the marker still holds the token (and, for a plain fill, only into a
//! missing key). So a change that reaches Redis after the `SELECT` began voids the fill,
//! and one that reached Redis before the lease was taken was committed before the
//! `SELECT` and is part of what it read. This holds whatever the strategy's version
//! domain (binlog positions, outbox ids, a version column), which is why fills are
//! written unversioned: the next synced change always replaces them. For the same
//! reason a tombstone needs no separate check: the delete that wrote it deleted the
//! marker too. An early refresh replaces a present value and keeps the version that value
//! carries (the row it read is at least that new), so a late older change is still
//! refused afterwards.
//!
//! # Breakdown (one hot key expires, many readers)
//!
//! - **single-flight** (`read.single_flight`): concurrent misses of one key in this
//!   process share one Redis probe and one MySQL read ([`flight`]);
//! - **distributed mutex** (`read.lock`): the lease is taken with `NX`, so across
//!   instances one refills; the others poll Redis for up to `read.lock_wait_ms` and take
//!   the filled value (or the remembered miss), then read MySQL themselves without
//!   filling. A lease that is not used is released by compare-and-delete.
//!
//! # Avalanche (many keys expire together)
//!
//! Fills use the table's `ttl` plus `ttl_jitter` at random, like synced writes. With
//! `read.refresh_ahead_ms`, a read of a key that expires within that window refreshes
//! it in the background (one instance, under the same lease), so hot keys do not expire.

pub mod flight;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use serde_json::value::RawValue;
use tracing::{debug, warn};

use self::flight::Flights;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::model::cell::{Cell, Encoded, Format, RowEncoder};
use crate::model::column::ColumnType;
use crate::model::table::{ReadConfig, SyncedTable};
use crate::mysql::schema::Replanner;
use crate::redis::RedisConn;
use crate::redis::applier::{Applier, FillOp};
use crate::redis::bloom::Bloom;
use crate::redis::keyspace::{fill_key, split_version};

/// How often a reader waiting for another instance's refill looks at Redis again.
const LOCK_POLL: Duration = Duration::from_millis(5);

/// Takes the refill lease of a missing row atomically with checking that it is still
/// missing (no window where another reader's fill has landed but the lease is free).
/// KEYS: the row key, its read marker. ARGV: token, TTL in ms, `1` for exclusive (the
/// mutex) or `0`. Returns 1 taken, 0 held by another reader, 2 the row is there now,
/// 3 the row is remembered absent.
const ACQUIRE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
local marker = redis.call('GET', KEYS[2])
if marker == 'absent' then return 3 end
if marker and ARGV[3] == '1' then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Compare-and-delete: releases a lease only if it is still ours.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The row as a JSON object, column → value, in the `json` encoding (without
    /// cachesync's version field).
    Found(Arc<[u8]>),
    /// No such row.
    Absent,
}

/// Why a read was not answered.
#[derive(Debug, Clone)]
pub enum ReadError {
    /// The table is not configured (404).
    UnknownTable(String),
    /// The table's `read.enabled` is false (404).
    Disabled(String),
    /// The primary key in the request is incomplete or does not fit the columns (400).
    BadKey(String),
    /// MySQL or Redis failed; shared by every request of a single flight.
    Failed(Arc<Error>),
}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        ReadError::Failed(Arc::new(e))
    }
}

/// A called-back pause between a refill's MySQL read and its Redis fill; tests use it
/// to make the race with a synced write deterministic.
#[doc(hidden)]
pub type FillHook = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;

/// The read path of every configured table. Cheap to share (`Arc`).
pub struct ReadPath {
    pool: mysql_async::Pool,
    mysql_url: String,
    applier: Applier,
    redis: RedisConn,
    /// By `database.table`; a reader is replaced when a DDL changed its table.
    tables: RwLock<HashMap<String, Arc<TableReader>>>,
    /// Re-plans a table after a read that suggested a DDL.
    replanner: Replanner,
    /// A test's pause between a refill's MySQL read and its fill; `hooked` says whether
    /// there is one, so a fill without takes no lock.
    fill_hook: Mutex<Option<FillHook>>,
    hooked: AtomicBool,
}

/// One table's read plan and in-process state.
struct TableReader {
    table: Arc<SyncedTable>,
    name: String,
    read: ReadConfig,
    l1: Option<moka::future::Cache<String, Answer>>,
    flights: Flights<std::result::Result<Answer, ReadError>>,
    bloom: Option<Bloom>,
    /// Positions in the row of the primary-key columns, in key order, with their names.
    key_columns: Vec<(usize, String)>,
    /// Encodes answers (`json`, whatever the table's Redis format).
    json: RowEncoder,
}

/// A parsed primary key.
#[derive(Debug, Clone)]
pub struct RowKey {
    /// The row's Redis key.
    pub key: String,
    /// The primary-key values as `SELECT` parameters, in key order.
    params: Vec<Value>,
}

impl ReadPath {
    /// The read path of `tables`, reading MySQL through `pool` (at `mysql_url`, for
    /// messages) and filling Redis through `applier`.
    pub fn new(
        pool: mysql_async::Pool,
        mysql_url: &str,
        applier: Applier,
        tables: &[Arc<SyncedTable>],
    ) -> Arc<ReadPath> {
        let tables = tables
            .iter()
            .map(|t| (t.name(), Arc::new(TableReader::new(t.clone()))))
            .collect();
        Arc::new(ReadPath {
            mysql_url: mysql_url.to_owned(),
            redis: applier.connection(),
            applier,
            tables: RwLock::new(tables),
            replanner: Replanner::new(pool.clone(), mysql_url),
            pool,
            fill_hook: Mutex::new(None),
            hooked: AtomicBool::new(false),
        })
    }

    /// Builds the Bloom filter of every table that has one and is not built yet (see
    /// [`Bloom::build`]); returns `(table, rows added)` for the filters built here.
    pub async fn build_bloom_filters(&self) -> Result<Vec<(String, u64)>> {
        let mut built = Vec::new();
        let readers: Vec<Arc<TableReader>> = self
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for reader in &readers {
            let Some(bloom) = &reader.bloom else { continue };
            let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
            let mut redis = self.redis.clone();
            if let Some(rows) = bloom.build(&reader.table, &mut conn, &mut redis).await? {
                built.push((reader.name.clone(), rows));
            }
        }
        Ok(built)
    }

    /// Pauses every refill between its MySQL read and its Redis fill on `hook` (called
    /// with the row key). Test-only.
    #[doc(hidden)]
    pub fn set_fill_hook(&self, hook: Option<FillHook>) {
        let mut slot = self.fill_hook.lock().unwrap_or_else(|e| e.into_inner());
        self.hooked.store(hook.is_some(), Ordering::Release);
        *slot = hook;
    }

    /// Parses the primary key of a row of `table` from `column → text` pairs (the query
    /// string of a `GET`).
    pub fn row_key(
        &self,
        table: &str,
        pairs: &[(String, String)],
    ) -> std::result::Result<RowKey, ReadError> {
        self.reader(table)?.row_key(pairs)
    }

    /// Reads the row of `table` whose primary key `pairs` gives (see the module doc).
    pub async fn get(
        self: &Arc<Self>,
        table: &str,
        pairs: &[(String, String)],
    ) -> std::result::Result<Answer, ReadError> {
        let started = Instant::now();
        let reader = self.reader(table)?;
        let key = reader.row_key(pairs)?;
        let mut answer = self.lookup(&reader, key).await;
        // MySQL no longer knows a planned column, or a value no longer decodes as
        // planned: a DDL since the plan. Re-plan and read once more.
        if let Err(ReadError::Failed(e)) = &answer
            && e.suggests_schema_change()
            && let Some(fresh) = self.refresh(&reader).await
        {
            let key = fresh.row_key(pairs)?;
            answer = self.lookup(&fresh, key).await;
        }
        metrics::histogram!(m::READ_DURATION, "table" => reader.name.clone())
            .record(started.elapsed().as_secs_f64());
        answer
    }

    /// Replaces the plan of a table (re-planned after a DDL, by the write API or
    /// the read path's own refresh): later reads select and encode the new columns. Its L1 and
    /// single-flight state start afresh; its Bloom filter stays (it holds keys).
    pub fn replace_table(&self, table: Arc<SyncedTable>) {
        let reader = Arc::new(TableReader::new(table));
        self.tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reader.name.clone(), reader);
    }

    /// Reads `reader`'s table schema again; the new reader when a DDL changed it (see
    /// [`Replanner`] for the rate limit).
    async fn refresh(&self, reader: &Arc<TableReader>) -> Option<Arc<TableReader>> {
        let plan = self.replanner.replan(&reader.table).await?;
        self.replace_table(Arc::new(plan));
        self.reader(&reader.name).ok()
    }

    fn reader(&self, table: &str) -> std::result::Result<Arc<TableReader>, ReadError> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let reader = tables.get(table).ok_or_else(|| {
            let mut known: Vec<&str> = tables.keys().map(String::as_str).collect();
            known.sort_unstable();
            ReadError::UnknownTable(format!(
                "unknown table {table}; configured tables: {}",
                known.join(", ")
            ))
        })?;
        if !reader.read.enabled {
            return Err(ReadError::Disabled(format!(
                "reads of {table} are off (tables[{}].read.enabled = false)",
                reader.table.config.index
            )));
        }
        Ok(reader.clone())
    }

    async fn lookup(
        self: &Arc<Self>,
        reader: &Arc<TableReader>,
        key: RowKey,
    ) -> std::result::Result<Answer, ReadError> {
        let table = || reader.name.clone();
        if let Some(l1) = &reader.l1 {
            if let Some(answer) = l1.get(&key.key).await {
                metrics::counter!(m::READ_HITS, "table" => table(), "level" => "l1").increment(1);
                return Ok(answer);
            }
            metrics::counter!(m::READ_MISSES, "table" => table(), "level" => "l1").increment(1);
        }
        let answer = if reader.read.single_flight {
            let this = self.clone();
            let shared_reader = reader.clone();
            let shared_key = key.clone();
            let work = async move { this.resolve(&shared_reader, &shared_key).await };
            let (answer, leader) = reader
                .flights
                .run(&key.key, work, |reason| {
                    Err(ReadError::Failed(Arc::new(Error::Io {
                        context: "reading a row".to_owned(),
                        source: std::io::Error::other(reason),
                    })))
                })
                .await;
            if !leader {
                metrics::counter!(m::READ_COALESCED, "table" => table()).increment(1);
            }
            answer?
        } else {
            self.resolve(reader, &key).await?
        };
        if let Some(l1) = &reader.l1 {
            l1.insert(key.key, answer.clone()).await;
        }
        Ok(answer)
    }

    /// Redis, then (on a miss) MySQL and a fill.
    async fn resolve(
        self: &Arc<Self>,
        reader: &Arc<TableReader>,
        key: &RowKey,
    ) -> std::result::Result<Answer, ReadError> {
        let probe = self.probe(reader, key).await?;
        if let Some(found) = probe.row {
            metrics::counter!(m::READ_HITS, "table" => reader.name.clone(), "level" => "redis")
                .increment(1);
            if let Some(window) = reader.read.refresh_ahead
                && probe.pttl_ms > 0
                && (probe.pttl_ms as u128) < window.as_millis()
            {
                self.refresh_ahead(reader, key);
            }
            return Ok(found);
        }
        metrics::counter!(m::READ_MISSES, "table" => reader.name.clone(), "level" => "redis")
            .increment(1);
        if let Some(answer) = self.known_absent(reader, &probe) {
            return Ok(answer);
        }
        self.refill(reader, key).await
    }

    /// A remembered miss or a Bloom rejection, counted.
    fn known_absent(&self, reader: &TableReader, probe: &Probe) -> Option<Answer> {
        if probe.marker_absent {
            metrics::counter!(m::READ_HITS, "table" => reader.name.clone(), "level" => "negative")
                .increment(1);
            return Some(Answer::Absent);
        }
        if probe.bloom_absent {
            metrics::counter!(m::READ_BLOOM_REJECTIONS, "table" => reader.name.clone())
                .increment(1);
            return Some(Answer::Absent);
        }
        None
    }

    /// One round trip: the row, its read marker, its TTL and the Bloom bits.
    async fn probe(&self, reader: &TableReader, key: &RowKey) -> Result<Probe> {
        let marker = fill_key(&key.key);
        let mut pipe = redis::pipe();
        match reader.table.config.format {
            Format::Json => pipe.cmd("GET").arg(&key.key),
            Format::Hash => pipe.cmd("HGETALL").arg(&key.key),
        };
        pipe.cmd("GET").arg(marker.as_deref().unwrap_or(&key.key));
        pipe.cmd("PTTL").arg(&key.key);
        if let Some(bloom) = &reader.bloom {
            bloom.check_in(&mut pipe, &key.key);
        }
        let mut conn = self.redis.clone();
        let replies: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("reading key {} of {}", key.key, reader.name), e))?;
        let mut replies = replies.into_iter();
        let row = replies.next().unwrap_or(redis::Value::Nil);
        let marker_value = replies.next().unwrap_or(redis::Value::Nil);
        let pttl_ms: i64 = replies
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or(-2);
        let bits: Vec<i64> = replies
            .filter_map(|v| redis::from_redis_value(v).ok())
            .collect();
        let row = match reader.table.config.format {
            Format::Json => match row {
                redis::Value::BulkString(doc) => Some(split_version(&doc).1),
                _ => None,
            },
            Format::Hash => {
                let fields: HashMap<Vec<u8>, Vec<u8>> =
                    redis::from_redis_value(row).unwrap_or_default();
                (!fields.is_empty()).then(|| reader.hash_to_json(&fields))
            }
        };
        let marker_absent = marker.is_some()
            && matches!(&marker_value, redis::Value::BulkString(v) if v == b"absent");
        Ok(Probe {
            row: row.map(|doc| Answer::Found(doc.into())),
            marker_absent,
            pttl_ms,
            bloom_absent: reader.bloom.is_some() && Bloom::says_absent(&bits),
        })
    }

    /// Takes the lease (waiting for another instance's refill when the mutex is on),
    /// reads MySQL and fills.
    async fn refill(
        self: &Arc<Self>,
        reader: &Arc<TableReader>,
        key: &RowKey,
    ) -> std::result::Result<Answer, ReadError> {
        let Some(marker) = fill_key(&key.key) else {
            // No marker can share the key's slot: read without filling.
            return Ok(self.read_and_fill(reader, key, None).await?);
        };
        let token = new_token();
        let deadline = Instant::now() + reader.read.lock_wait;
        let mut waited = false;
        loop {
            match self.acquire(reader, key, &marker, &token).await? {
                Lease::Taken => return Ok(self.read_and_fill(reader, key, Some(&token)).await?),
                Lease::Settled => {
                    // Filled (or remembered absent) since the probe: read it.
                    let probe = self.probe(reader, key).await?;
                    if let Some(found) = probe.row {
                        metrics::counter!(m::READ_HITS, "table" => reader.name.clone(), "level" => "redis")
                            .increment(1);
                        return Ok(found);
                    }
                    if let Some(answer) = self.known_absent(reader, &probe) {
                        return Ok(answer);
                    }
                    // Gone again (expired in between): try again.
                    continue;
                }
                Lease::Held => {}
            }
            if !waited {
                waited = true;
                metrics::counter!(m::READ_LOCK_WAITS, "table" => reader.name.clone()).increment(1);
            }
            if Instant::now() >= deadline {
                debug!(key = %key.key, "refill mutex wait over; reading MySQL without filling");
                return Ok(self.read_and_fill(reader, key, None).await?);
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// [`ACQUIRE_LUA`]: the refill lease of a missing row (exclusive when the mutex is on).
    async fn acquire(
        &self,
        reader: &TableReader,
        key: &RowKey,
        marker: &str,
        token: &str,
    ) -> Result<Lease> {
        let mut conn = self.redis.clone();
        let outcome: i64 = redis::Script::new(ACQUIRE_LUA)
            .key(&key.key)
            .key(marker)
            .arg(token)
            .arg(reader.read.lock_ttl.as_millis() as u64)
            .arg(if reader.read.lock { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("taking the refill lease {marker}"), e))?;
        Ok(match outcome {
            1 => Lease::Taken,
            0 => Lease::Held,
            _ => Lease::Settled,
        })
    }

    /// `SET marker token NX PX lock_ttl` (an early refresh's lease): whether it is ours.
    async fn take_lease(&self, reader: &TableReader, marker: &str, token: &str) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(marker).arg(token).arg("NX");
        cmd.arg("PX").arg(reader.read.lock_ttl.as_millis() as u64);
        let mut conn = self.redis.clone();
        let set: Option<String> = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("taking the refill lease {marker}"), e))?;
        Ok(set.is_some())
    }

    /// Releases a lease that is still ours (compare-and-delete).
    async fn release(&self, marker: &str, token: &str) {
        let mut conn = self.redis.clone();
        let released: redis::RedisResult<i64> = redis::Script::new(RELEASE_LUA)
            .key(marker)
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = released {
            warn!(key = marker, error = %e, "could not release a refill lease; it expires by itself");
        }
    }

    /// Reads the row from MySQL and, holding the lease `token`, fills Redis with it (or
    /// with the "absent" marker).
    async fn read_and_fill(
        &self,
        reader: &TableReader,
        key: &RowKey,
        token: Option<&str>,
    ) -> Result<Answer> {
        let marker = fill_key(&key.key);
        let cells = match self.select(reader, key).await {
            Ok(cells) => cells,
            Err(e) => {
                if let (Some(marker), Some(token)) = (&marker, token) {
                    self.release(marker, token).await;
                }
                return Err(e);
            }
        };
        let hook = self.hooked.load(Ordering::Acquire).then(|| {
            self.fill_hook
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        });
        if let Some(hook) = hook.flatten() {
            hook(key.key.clone()).await;
        }
        let (Some(marker), Some(token)) = (marker, token) else {
            return Ok(reader.answer(cells.as_deref()));
        };
        let table = &reader.table;
        let filled = match &cells {
            // A row whose canonical key differs from the requested one (a collation that
            // ignores case, say) is answered but not cached under the requested key.
            Some(row) if table.key_of(row) == key.key => Some(
                self.applier
                    .fill(table, &key.key, FillOp::Fill, token, Some(row))
                    .await,
            ),
            None => match reader.read.negative_ttl {
                Some(ttl) => Some(
                    self.applier
                        .fill(table, &key.key, FillOp::Absent(ttl), token, None)
                        .await,
                ),
                None => None,
            },
            Some(_) => None,
        };
        match filled {
            Some(Ok(written)) => {
                let outcome = if written { "written" } else { "lost" };
                metrics::counter!(m::READ_FILLS, "table" => reader.name.clone(), "outcome" => outcome)
                    .increment(1);
            }
            Some(Err(e)) => {
                // The answer from MySQL is still right; the cache stays empty.
                warn!(key = %key.key, error = %e, "could not fill Redis after a MySQL read");
                self.release(&marker, token).await;
            }
            None => self.release(&marker, token).await,
        }
        Ok(reader.answer(cells.as_deref()))
    }

    /// The one primary-key `SELECT` of a miss.
    async fn select(&self, reader: &TableReader, key: &RowKey) -> Result<Option<Vec<Cell>>> {
        metrics::counter!(m::READ_DB_QUERIES, "table" => reader.name.clone()).increment(1);
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        let row: Option<mysql_async::Row> = conn
            .exec_first(reader.table.sql.select_by_key.as_str(), key.params.clone())
            .await
            .map_err(|e| Error::mysql(format!("reading {} of {}", key.key, reader.name), e))?;
        row.map(|row| reader.table.decode_sql_row(&row)).transpose()
    }

    /// Refreshes a key about to expire in the background, under a lease taken with `NX`
    /// so one reader among all instances does it.
    fn refresh_ahead(self: &Arc<Self>, reader: &Arc<TableReader>, key: &RowKey) {
        let this = self.clone();
        let reader = reader.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let Some(marker) = fill_key(&key.key) else {
                return;
            };
            let token = new_token();
            match this.take_lease(&reader, &marker, &token).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    debug!(key = %key.key, error = %e, "early refresh skipped");
                    return;
                }
            }
            metrics::counter!(m::READ_REFRESHES, "table" => reader.name.clone()).increment(1);
            let refreshed = match this.select(&reader, &key).await {
                Ok(Some(row)) if reader.table.key_of(&row) == key.key => {
                    this.applier
                        .fill(&reader.table, &key.key, FillOp::Refresh, &token, Some(&row))
                        .await
                }
                Ok(_) => Ok(false),
                Err(e) => Err(e),
            };
            match refreshed {
                Ok(true) => {}
                Ok(false) => this.release(&marker, &token).await,
                Err(e) => {
                    debug!(key = %key.key, error = %e, "early refresh failed");
                    this.release(&marker, &token).await;
                }
            }
        });
    }
}

/// What taking a refill lease found.
enum Lease {
    /// Ours: read MySQL and fill.
    Taken,
    /// Another reader is refilling (the mutex is on).
    Held,
    /// The row was filled, or remembered absent, since the probe.
    Settled,
}

/// What one Redis round trip told about a key.
struct Probe {
    row: Option<Answer>,
    /// The read marker says the row does not exist.
    marker_absent: bool,
    /// Milliseconds the row key has left (-1: no expiry, -2: missing).
    pttl_ms: i64,
    /// The Bloom filter is built and has never seen the key.
    bloom_absent: bool,
}

impl TableReader {
    fn new(table: Arc<SyncedTable>) -> TableReader {
        let read = table.config.read.clone();
        let l1 = read.l1_ttl.map(|ttl| {
            moka::future::Cache::builder()
                .max_capacity(read.l1_capacity)
                .time_to_live(ttl)
                .build()
        });
        let names = table.encoder.names();
        let key_columns: Vec<(usize, String)> = table
            .key_positions
            .iter()
            .map(|&position| (position, names[position].clone()))
            .collect();
        TableReader {
            name: table.name(),
            bloom: Bloom::of(&table),
            json: RowEncoder::new(Format::Json, names.to_vec()),
            read,
            l1,
            flights: Flights::default(),
            key_columns,
            table,
        }
    }

    fn row_key(&self, pairs: &[(String, String)]) -> std::result::Result<RowKey, ReadError> {
        let bad = |message: String| ReadError::BadKey(message);
        let key_names = || {
            self.key_columns
                .iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut cells = vec![Cell::Null; self.table.types.len()];
        let mut params = Vec::with_capacity(self.key_columns.len());
        for (column, _) in pairs {
            if !self.key_columns.iter().any(|(_, n)| n == column) {
                return Err(bad(format!(
                    "{column} is not a primary-key column of {} (primary key: {})",
                    self.name,
                    key_names()
                )));
            }
        }
        for (position, column) in &self.key_columns {
            let mut given = pairs.iter().filter(|(c, _)| c == column);
            let (Some((_, text)), None) = (given.next(), given.next()) else {
                return Err(bad(format!(
                    "give primary-key column {column} of {} exactly once in the query (primary key: {})",
                    self.name,
                    key_names()
                )));
            };
            let (cell, value) =
                key_value(&self.table.types[*position], text).map_err(|reason| {
                    bad(format!(
                        "primary-key column {column} of {}: {reason}",
                        self.name
                    ))
                })?;
            cells[*position] = cell;
            params.push(value);
        }
        Ok(RowKey {
            key: self.table.key_of(&cells),
            params,
        })
    }

    /// The answer for a row read from MySQL.
    fn answer(&self, cells: Option<&[Cell]>) -> Answer {
        match cells {
            None => Answer::Absent,
            Some(cells) => match self.json.encode(cells, None) {
                Encoded::Json(doc) => Answer::Found(doc.into()),
                Encoded::Hash(_) => unreachable!("the answer encoder is json"),
            },
        }
    }

    /// A `hash` row as the `json` encoding of the same row: numbers and JSON columns
    /// verbatim, binary columns base64, other text as strings, absent fields `null`.
    fn hash_to_json(&self, fields: &HashMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
        use base64::Engine as _;
        let mut out = Vec::with_capacity(64 * fields.len());
        out.push(b'{');
        for (i, (name, ty)) in self.json.names().iter().zip(&self.table.types).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, name);
            out.push(b':');
            let Some(text) = fields.get(name.as_bytes()) else {
                out.extend_from_slice(b"null");
                continue;
            };
            let verbatim = match ty {
                ColumnType::Int { .. }
                | ColumnType::Year
                | ColumnType::Bit
                | ColumnType::Float
                | ColumnType::Double => serde_json::from_slice::<serde_json::Number>(text).is_ok(),
                ColumnType::Json => serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok(),
                _ => false,
            };
            if verbatim {
                out.extend_from_slice(text);
            } else if matches!(ty, ColumnType::Binary { .. }) {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                let _ = serde_json::to_writer(&mut out, &encoded);
            } else {
                let _ = serde_json::to_writer(&mut out, &String::from_utf8_lossy(text));
            }
        }
        out.push(b'}');
        out
    }
}

/// A primary-key value from its query-string text: the key cell (rendered into the Redis
/// key) and the `SELECT` parameter. Integers must be integers; binary columns take
/// standard base64, as the API's bodies do; other types are taken as text.
fn key_value(ty: &ColumnType, text: &str) -> std::result::Result<(Cell, Value), String> {
    let raw = match ty {
        ColumnType::Int { .. } | ColumnType::Year | ColumnType::Bit => {
            let _: serde_json::Number = text
                .parse()
                .map_err(|_| format!("expected an integer, got {text:?}"))?;
            RawValue::from_string(text.to_owned())
        }
        ColumnType::Float | ColumnType::Double => {
            let _: serde_json::Number = text
                .parse()
                .map_err(|_| format!("expected a number, got {text:?}"))?;
            RawValue::from_string(text.to_owned())
        }
        _ => serde_json::value::to_raw_value(text),
    }
    .map_err(|e| format!("cannot use {text:?} as a key: {e}"))?;
    let value = crate::model::params::sql_value(ty, &raw)?;
    let cell = match (&value, ty) {
        (Value::Int(v), _) => Cell::Int(*v),
        (Value::UInt(v), _) => Cell::UInt(*v),
        (Value::Double(v), ColumnType::Float) => Cell::Float(*v as f32),
        (Value::Double(v), _) => Cell::Double(*v),
        // Already zero-padded to a BINARY(n) column's width by `sql_value`.
        (Value::Bytes(bytes), ColumnType::Binary { .. }) => Cell::Bytes(bytes.clone()),
        (Value::Bytes(bytes), _) => Cell::Text(String::from_utf8_lossy(bytes).into_owned()),
        _ => return Err(format!("cannot use {text:?} as a key")),
    };
    Ok((cell, value))
}

/// A fresh lease token.
fn new_token() -> String {
    format!("lease:{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_follow_the_column_type() {
        let int = ColumnType::Int {
            unsigned: true,
            bytes: 8,
        };
        assert_eq!(
            key_value(&int, "18446744073709551615").unwrap(),
            (Cell::UInt(u64::MAX), Value::UInt(u64::MAX))
        );
        assert_eq!(key_value(&int, "7").unwrap().0, Cell::Int(7));
        assert!(
            key_value(&int, "7x")
                .unwrap_err()
                .contains("expected an integer")
        );
        assert!(key_value(&int, "-1").unwrap_err().contains("out of range"));
        assert_eq!(
            key_value(&ColumnType::Text, "a b").unwrap().0,
            Cell::Text("a b".to_owned())
        );
        assert_eq!(
            key_value(&ColumnType::Binary { pad_to: Some(4) }, "AAH/")
                .unwrap()
                .0,
            Cell::Bytes(vec![0, 1, 255, 0])
        );
        assert!(
            key_value(&ColumnType::Binary { pad_to: None }, "!")
                .unwrap_err()
                .contains("base64")
        );
    }
}
