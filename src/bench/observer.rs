//! Watching Redis from outside the strategy, the same way for every strategy.
//!
//! Writers record each acknowledged change — key, the row's version `v`, and when MySQL
//! committed it — in the [`Ledger`] and send it to the [`Observer`]. The observer
//! subscribes to Redis keyspace notifications for the bench keys and, for every key
//! Redis reports written or deleted, reads the value (batched `MGET`) and notes the first
//! moment it saw each version. A change is *propagated* at the first moment Redis was
//! seen holding its version or a newer one; propagation = that moment − commit.
//!
//! Resolution: one `MGET` round trip after Redis' notification (tens to hundreds of µs),
//! and it is the same for all strategies, because nothing here knows which strategy
//! wrote the key. Seeing Redis go *back* to an older version is counted as out of order.
//! (A version written twice cannot be told apart from outside — the reads of two
//! notifications may both see the later write — so the benchmark takes that count from
//! the applier's version guard instead.)
//!
//! Write-back turns the picture around: the application's write *is* the Redis write,
//! and what trails is MySQL. For it the observer watches MySQL instead ([`Watch::mysql`]):
//! every few ms it reads the version of each row with a change still unseen, and a
//! change is propagated at the first read that finds MySQL holding its version or a newer
//! one. Its resolution is that polling interval plus one query.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::model::change::unix_micros;

/// Recent acknowledged versions kept per key for staleness ages.
const LEDGER_DEPTH: usize = 64;
/// Versions kept per key in the observer's history.
const HISTORY_DEPTH: usize = 256;
/// Keys read per `MGET`.
const MGET_BATCH: usize = 500;
/// What the history records for a key Redis no longer holds (invalidated): a deleted key
/// cannot serve a stale value, so it counts as "at least as new as" any version.
const GONE: u64 = u64::MAX;

/// Acknowledged changes per key, for readers to judge what they read.
pub struct Ledger {
    keys: Vec<Mutex<VecDeque<(u64, u64)>>>,
}

impl Ledger {
    /// A ledger for key ids `1..=keys`.
    pub fn new(keys: u64) -> Ledger {
        Ledger {
            keys: (0..keys).map(|_| Mutex::new(VecDeque::new())).collect(),
        }
    }

    fn slot(&self, id: u64) -> &Mutex<VecDeque<(u64, u64)>> {
        &self.keys[(id - 1) as usize]
    }

    /// Records that version `v` of key `id` was committed at `committed_us`.
    pub fn record(&self, id: u64, v: u64, committed_us: u64) {
        let mut acks = self.slot(id).lock().expect("ledger lock");
        // Racing writers of one row acknowledge out of commit order now and then; keep
        // the deque sorted by version.
        let at = acks.partition_point(|(av, _)| *av < v);
        acks.insert(at, (v, committed_us));
        if acks.len() > LEDGER_DEPTH {
            acks.pop_front();
        }
    }

    /// The newest acknowledged version of `id`.
    pub fn newest(&self, id: u64) -> Option<u64> {
        self.slot(id)
            .lock()
            .expect("ledger lock")
            .back()
            .map(|a| a.0)
    }

    /// How many acknowledged versions of `id` are newer than `v` (of the last
    /// [`LEDGER_DEPTH`] kept per key).
    pub fn acked_above(&self, id: u64, v: u64) -> u64 {
        let acks = self.slot(id).lock().expect("ledger lock");
        acks.iter().filter(|(av, _)| *av > v).count() as u64
    }

    /// The number of keys the ledger holds.
    pub fn keys(&self) -> u64 {
        self.keys.len() as u64
    }

    /// The commit time of the oldest acknowledged version newer than `v`: how long a
    /// reader holding `v` has been stale. When that version left the ledger, the oldest
    /// one kept (an underestimate of the age).
    pub fn stale_since(&self, id: u64, v: u64) -> Option<u64> {
        let acks = self.slot(id).lock().expect("ledger lock");
        acks.iter().find(|(av, _)| *av > v).map(|a| a.1)
    }
}

/// A change a writer saw acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub id: u64,
    pub v: u64,
    pub committed_us: u64,
}

/// A change seen in Redis.
#[derive(Debug, Clone, Copy)]
pub struct Propagated {
    pub committed_us: u64,
    /// First moment Redis was seen holding this version or a newer one.
    pub seen_us: u64,
}

impl Propagated {
    /// Propagation latency in µs. Clamped at 0: a change the tailer applied before the
    /// committing client got its OK back is seen "before" the commit timestamp.
    pub fn micros(&self) -> u64 {
        self.seen_us.saturating_sub(self.committed_us)
    }
}

/// What the observer saw over a run.
#[derive(Debug, Default)]
pub struct Observed {
    pub propagated: Vec<Propagated>,
    /// Acknowledged changes never seen in Redis (the run's losses, when the drain ended
    /// with some).
    pub unseen: Vec<Ack>,
    /// Times Redis was seen holding an older version of a key than it held before.
    pub out_of_order: u64,
    /// Keyspace notifications received.
    pub notifications: u64,
    /// `MGET` round trips made, and their total time in µs (the resolution).
    pub reads: u64,
    pub read_micros: u64,
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    /// Acknowledged changes not yet seen in Redis.
    pub pending: AtomicU64,
    pub propagated: AtomicU64,
    /// Largest propagation (µs) since the progress line last took it.
    pub max_recent_us: AtomicU64,
}

/// Handle to the running observer.
pub struct Observer {
    acks: mpsc::UnboundedSender<Ack>,
    pub live: std::sync::Arc<Live>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<Observed>>,
}

/// Where the observer looks: keys `{prefix}{id}` in the Redis at `redis_url` — or, with
/// `mysql`, the rows themselves.
pub struct Watch {
    pub redis_url: String,
    pub prefix: String,
    pub invalidate: bool,
    /// Watch MySQL instead of Redis: the pool and the quoted `db.table` whose `id` and `v`
    /// columns are read (write-back, where MySQL trails the cache).
    pub mysql: Option<(mysql_async::Pool, String)>,
}

/// How often the MySQL observer reads the rows it waits for.
const MYSQL_POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// Row ids per `SELECT … WHERE id IN (…)` of the MySQL observer.
const MYSQL_BATCH: usize = 500;

impl Observer {
    /// Subscribes (turning keyspace notifications on if needed) and starts watching.
    /// Returns once the subscription is active, so no later write goes unseen.
    pub async fn start(watch: Watch) -> Result<Observer> {
        if watch.mysql.is_some() {
            return Ok(Observer::spawn(|acks, live, stop| {
                observe_mysql(watch, acks, live, stop)
            }));
        }
        let client = redis::Client::open(watch.redis_url.as_str())
            .map_err(|e| Error::redis("observer: opening the Redis client", e))?;
        enable_notifications(&client, &watch.redis_url).await?;
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .map_err(|e| Error::redis("observer: subscribing to keyspace notifications", e))?;
        pubsub
            .psubscribe(format!("__keyspace@*__:{}*", watch.prefix))
            .await
            .map_err(|e| Error::redis("observer: subscribing to keyspace notifications", e))?;
        let reader = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| Error::redis("observer: connecting", e))?;
        Ok(Observer::spawn(|acks, live, stop| {
            observe(pubsub, reader, watch, acks, live, stop)
        }))
    }

    /// Starts the observing task `observe` makes of the ack stream, the live counters and
    /// the stop token.
    fn spawn<F, Fut>(observe: F) -> Observer
    where
        F: FnOnce(mpsc::UnboundedReceiver<Ack>, std::sync::Arc<Live>, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<Observed>> + Send + 'static,
    {
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let live = std::sync::Arc::new(Live::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(observe(ack_rx, live.clone(), stop.clone()));
        Observer {
            acks,
            live,
            stop,
            task,
        }
    }

    /// A sender for writer tasks.
    pub fn sender(&self) -> AckSender {
        AckSender {
            acks: self.acks.clone(),
            live: self.live.clone(),
        }
    }

    /// Stops watching and returns what was seen.
    pub async fn finish(self) -> Result<Observed> {
        self.stop.cancel();
        self.task.await.map_err(|e| Error::Io {
            context: "the benchmark's Redis observer".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?
    }
}

/// What writers hold to report acknowledged changes.
#[derive(Clone)]
pub struct AckSender {
    acks: mpsc::UnboundedSender<Ack>,
    live: std::sync::Arc<Live>,
}

impl AckSender {
    pub fn ack(&self, ack: Ack) {
        self.live.pending.fetch_add(1, Ordering::Relaxed);
        // The receiver lives until the observer finishes, after the writers stopped.
        let _ = self.acks.send(ack);
    }
}

/// Turns on keyspace events for string writes (`$`) and deletes (`g`), keeping whatever
/// else is on. Left on afterwards: turning it off could break another user's setting.
async fn enable_notifications(client: &redis::Client, url: &str) -> Result<()> {
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| Error::redis("observer: connecting", e))?;
    let current: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await
        .map_err(|e| notifications_refused(url, &e))?;
    let mut flags = current.get(1).cloned().unwrap_or_default();
    // `A` is an alias for every class, `$` and `g` included.
    let has = |c: char, flags: &str| flags.contains(c) || (c != 'K' && flags.contains('A'));
    let before = flags.clone();
    for c in ['K', '$', 'g'] {
        if !has(c, &flags) {
            flags.push(c);
        }
    }
    if flags != before {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&flags)
            .query_async(&mut conn)
            .await
            .map_err(|e| notifications_refused(url, &e))?;
    }
    Ok(())
}

fn notifications_refused(url: &str, e: &redis::RedisError) -> Error {
    Error::Refused {
        service: "Redis",
        url: crate::redact::redact_url(url),
        reason: format!(
            "the benchmark watches Redis through keyspace notifications and could not turn them \
             on ({e}); allow CONFIG, or set notify-keyspace-events to include K$g on the server"
        ),
    }
}

/// Per key: what Redis was seen holding, first moment each version was seen.
#[derive(Default)]
struct KeyWatch {
    history: VecDeque<(u64, u64)>,
    /// Acknowledged versions not yet seen, with their commit times.
    waiting: Vec<Ack>,
}

impl KeyWatch {
    /// The first moment a version ≥ `v` was seen, if any.
    fn seen_at_least(&self, v: u64) -> Option<u64> {
        // The history's versions increase (a regression restarts it), so the first
        // entry ≥ v is the earliest moment.
        self.history.iter().find(|(hv, _)| *hv >= v).map(|h| h.1)
    }
}

async fn observe(
    mut pubsub: redis::aio::PubSub,
    mut reader: redis::aio::MultiplexedConnection,
    watch: Watch,
    mut acks: mpsc::UnboundedReceiver<Ack>,
    live: std::sync::Arc<Live>,
    stop: CancellationToken,
) -> Result<Observed> {
    let mut seen = Observed::default();
    let mut keys: HashMap<u64, KeyWatch> = HashMap::new();
    let mut dirty: Vec<u64> = Vec::new();
    let mut messages = pubsub.on_message();
    loop {
        // Wait for something to do.
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            ack = acks.recv() => {
                let Some(ack) = ack else { break };
                on_ack(&mut keys, ack, &mut seen, &live);
            }
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err(Error::Unreachable {
                        service: "Redis",
                        url: crate::redact::redact_url(&watch.redis_url),
                        reason: "the benchmark's observer lost its keyspace notification stream".to_owned(),
                    });
                };
                seen.notifications += 1;
                dirty.extend(notified_id(msg.get_channel_name(), &watch.prefix));
            }
        }
        // Take whatever else is ready without waiting, then read the notified keys once.
        while let Ok(ack) = acks.try_recv() {
            on_ack(&mut keys, ack, &mut seen, &live);
        }
        while let Some(Some(msg)) = messages.next().now_or_never() {
            seen.notifications += 1;
            dirty.extend(notified_id(msg.get_channel_name(), &watch.prefix));
        }
        if dirty.is_empty() {
            continue;
        }
        dirty.sort_unstable();
        dirty.dedup();
        for chunk in dirty.chunks(MGET_BATCH) {
            let names: Vec<String> = chunk
                .iter()
                .map(|id| format!("{}{id}", watch.prefix))
                .collect();
            let started = std::time::Instant::now();
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(&names)
                .query_async(&mut reader)
                .await
                .map_err(|e| Error::redis("observer: reading notified keys", e))?;
            let now = unix_micros(SystemTime::now());
            seen.reads += 1;
            seen.read_micros += started.elapsed().as_micros() as u64;
            for (id, value) in chunk.iter().zip(values) {
                let version = match value {
                    Some(bytes) => match row_version(&bytes) {
                        Some(v) => v,
                        None => continue,
                    },
                    None if watch.invalidate => GONE,
                    // Deleted without invalidate mode: not a version.
                    None => continue,
                };
                on_seen(keys.entry(*id).or_default(), version, now, &mut seen, &live);
            }
        }
        dirty.clear();
    }
    drop(messages);
    for (_, key) in keys {
        seen.unseen.extend(key.waiting);
    }
    Ok(seen)
}

/// Watches MySQL: every [`MYSQL_POLL`], the versions of the rows with acknowledged
/// changes not yet seen there.
async fn observe_mysql(
    watch: Watch,
    mut acks: mpsc::UnboundedReceiver<Ack>,
    live: std::sync::Arc<Live>,
    stop: CancellationToken,
) -> Result<Observed> {
    use mysql_async::prelude::Queryable;
    let (pool, table) = watch.mysql.expect("a MySQL watch");
    let mut seen = Observed::default();
    let mut keys: HashMap<u64, KeyWatch> = HashMap::new();
    let mut tick = tokio::time::interval(MYSQL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            ack = acks.recv() => {
                let Some(ack) = ack else { break };
                on_ack(&mut keys, ack, &mut seen, &live);
                continue;
            }
            _ = tick.tick() => {}
        }
        while let Ok(ack) = acks.try_recv() {
            on_ack(&mut keys, ack, &mut seen, &live);
        }
        let mut waiting: Vec<u64> = keys
            .iter()
            .filter(|(_, k)| !k.waiting.is_empty())
            .map(|(id, _)| *id)
            .collect();
        waiting.sort_unstable();
        for chunk in waiting.chunks(MYSQL_BATCH) {
            let ids: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let started = std::time::Instant::now();
            let mut conn = pool
                .get_conn()
                .await
                .map_err(|e| Error::mysql("observer: connecting to MySQL", e))?;
            let rows: Vec<(u64, u64)> = conn
                .query(format!(
                    "SELECT id, v FROM {table} WHERE id IN ({})",
                    ids.join(",")
                ))
                .await
                .map_err(|e| Error::mysql("observer: reading the rows", e))?;
            let now = unix_micros(SystemTime::now());
            seen.reads += 1;
            seen.read_micros += started.elapsed().as_micros() as u64;
            for (id, v) in rows {
                on_seen(keys.entry(id).or_default(), v, now, &mut seen, &live);
            }
        }
    }
    for (_, key) in keys {
        seen.unseen.extend(key.waiting);
    }
    Ok(seen)
}

/// The row id a keyspace notification is about: `__keyspace@<db>__:{prefix}{id}`.
fn notified_id(channel: &str, prefix: &str) -> Option<u64> {
    let (_, key) = channel.split_once(':')?;
    key.strip_prefix(prefix)?.parse().ok()
}

fn on_ack(keys: &mut HashMap<u64, KeyWatch>, ack: Ack, seen: &mut Observed, live: &Live) {
    let key = keys.entry(ack.id).or_default();
    match key.seen_at_least(ack.v) {
        Some(at) => resolve(ack, at, seen, live),
        None => key.waiting.push(ack),
    }
}

fn on_seen(key: &mut KeyWatch, version: u64, now: u64, seen: &mut Observed, live: &Live) {
    match key.history.back().map(|h| h.0) {
        Some(last) if version == last => {}
        Some(last) if version < last => {
            seen.out_of_order += 1;
            // Redis now holds an older version: earlier sightings no longer vouch for
            // the versions in between.
            key.history.clear();
            key.history.push_back((version, now));
        }
        _ => {
            key.history.push_back((version, now));
            if key.history.len() > HISTORY_DEPTH {
                key.history.pop_front();
            }
        }
    }
    let mut i = 0;
    while i < key.waiting.len() {
        if key.waiting[i].v <= version {
            let ack = key.waiting.swap_remove(i);
            resolve(ack, now, seen, live);
        } else {
            i += 1;
        }
    }
}

fn resolve(ack: Ack, seen_us: u64, seen: &mut Observed, live: &Live) {
    let p = Propagated {
        committed_us: ack.committed_us,
        seen_us,
    };
    live.pending.fetch_sub(1, Ordering::Relaxed);
    live.propagated.fetch_add(1, Ordering::Relaxed);
    live.max_recent_us.fetch_max(p.micros(), Ordering::Relaxed);
    seen.propagated.push(p);
}

/// The bench row's `v` out of its JSON encoding (`{"_cachesync_v":…,"id":…,"v":N,…}`).
pub fn row_version(json: &[u8]) -> Option<u64> {
    let doc: serde_json::Value = serde_json::from_slice(json).ok()?;
    doc.get("v")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(v: u64, committed_us: u64) -> Ack {
        Ack {
            id: 1,
            v,
            committed_us,
        }
    }

    #[test]
    fn a_change_is_propagated_when_its_version_or_a_newer_one_is_seen() {
        let live = Live::default();
        let mut seen = Observed::default();
        let mut keys = HashMap::new();
        on_ack(&mut keys, ack(2, 100), &mut seen, &live);
        on_ack(&mut keys, ack(3, 150), &mut seen, &live);
        // Redis skips from 1 to 3: both changes are there at 400.
        on_seen(keys.get_mut(&1).unwrap(), 3, 400, &mut seen, &live);
        let mut micros: Vec<u64> = seen.propagated.iter().map(Propagated::micros).collect();
        micros.sort();
        assert_eq!(micros, vec![250, 300]);
        // An ack arriving after Redis already showed it resolves at the first sighting.
        on_ack(&mut keys, ack(3, 350), &mut seen, &live);
        assert_eq!(seen.propagated.last().unwrap().micros(), 50);
        assert!(keys[&1].waiting.is_empty());
    }

    #[test]
    fn regressions_are_counted() {
        let live = Live::default();
        let mut seen = Observed::default();
        let mut key = KeyWatch::default();
        on_seen(&mut key, 5, 10, &mut seen, &live);
        on_seen(&mut key, 5, 20, &mut seen, &live);
        on_seen(&mut key, 4, 30, &mut seen, &live);
        assert_eq!(seen.out_of_order, 1);
        // After the regression, version 5 is no longer vouched for.
        assert_eq!(key.seen_at_least(5), None);
        assert_eq!(key.seen_at_least(4), Some(30));
    }

    #[test]
    fn ledger_finds_how_long_a_read_has_been_stale() {
        let ledger = Ledger::new(2);
        ledger.record(2, 3, 300);
        ledger.record(2, 2, 200); // acknowledged out of commit order
        ledger.record(2, 4, 400);
        assert_eq!(ledger.newest(2), Some(4));
        assert_eq!(ledger.stale_since(2, 2), Some(300));
        assert_eq!(ledger.stale_since(2, 4), None);
        assert_eq!(ledger.newest(1), None);
    }

    #[test]
    fn notifications_name_the_row_id_under_the_prefix() {
        let prefix = "cachesync:bench:binlog:item:";
        assert_eq!(
            notified_id("__keyspace@0__:cachesync:bench:binlog:item:42", prefix),
            Some(42)
        );
        assert_eq!(
            notified_id("__keyspace@0__:cachesync:bench:mq:item:42", prefix),
            None
        );
        assert_eq!(
            notified_id("__keyspace@0__:cachesync:bench:binlog:item:x", prefix),
            None
        );
    }

    #[test]
    fn version_is_read_from_the_json_row() {
        assert_eq!(row_version(br#"{"_cachesync_v":9,"id":1,"v":7}"#), Some(7));
        assert_eq!(row_version(b"not json"), None);
    }
}
