//! Foreign-key cascades, which the binlog never shows, emulated.
//!
//! # What is missing from the stream
//!
//! InnoDB carries out `ON UPDATE` / `ON DELETE` `CASCADE` and `SET NULL` inside the
//! parent's statement and logs only the parent's row change: the child rows it updates or
//! deletes never appear in the row binlog (MySQL bug #32506; MariaDB alike). Without help,
//! `UPDATE country SET id = 10 WHERE id = 1` leaves every cached `city` of country 1
//! saying `country_id: 1`, silently, until the row's next own change.
//!
//! # What cachesync does
//!
//! [`load`] reads the foreign keys (`information_schema`) whose child table is synced and
//! whose `ON UPDATE` or `ON DELETE` rule is `CASCADE` or `SET NULL` — at start, and again
//! after a DDL statement names a synced table or one of their parents. The tailer hands
//! every row image of such a parent table (synced or not) to [`Graph::on_row`]: a parent
//! row whose referenced columns changed, or that was deleted, becomes a [`Cascade`] that
//! travels in its batch with the version of the parent's event. Once the batch's own
//! changes are in Redis, [`Resolver::resolve`] does what MySQL did to the children:
//!
//! - `ON UPDATE CASCADE`, when the child's Redis key holds no foreign-key column: the
//!   children now hold the new key, so they are re-read from MySQL by the foreign-key
//!   columns (`WHERE fk = new`, on the index InnoDB keeps for every foreign key) and
//!   written.
//! - `ON UPDATE SET NULL`, `ON DELETE SET NULL`, `ON DELETE CASCADE`, and `ON UPDATE
//!   CASCADE` when the key holds a foreign-key column (the cascade moves the row to
//!   another key): MySQL can no longer find the children by the old key, but Redis still
//!   holds them as the stream showed them. They are the child table's keys (a `SCAN` of
//!   its key pattern, narrowed to the old value when the template contains the
//!   foreign-key columns) whose stored foreign-key columns hold the old key. For each,
//!   cachesync knows what MySQL did at the parent's event — the foreign key became the
//!   new key or NULL, or the row went — and re-reads the row by the primary key that left
//!   it with: written when it exists, its key deleted when not, and the old key deleted
//!   when the row moved. (Re-reading by that key, not by the new foreign key, also finds
//!   the right keys when the child changed its own key again afterwards.)
//! - What MySQL did to a child at the parent's event is in turn a parent change for the
//!   relations below it (grandchildren), resolved the same way, down to MySQL's own
//!   limit of 15 levels. Each (relation, old key, new key) is resolved once per batch,
//!   so a cycle (a table that references itself) ends.
//!
//! # Why a later change of a child is never overtaken
//!
//! Let P be the parent event's binlog position. Every change the resolution derives is
//! written with version(P) through the applier's version guard, and:
//!
//! 1. It runs after every change of its batch, and so every change logged before P, is in
//!    Redis: the `SCAN` sees each child row as the stream has shown it, nothing of it
//!    still in flight. A child the stream changed again after P shows that later image,
//!    which already includes the cascade, and needs nothing (if it still matches, the
//!    guard refuses the derived write, point 4).
//! 2. It reads MySQL after P's transaction committed, with a locking read
//!    (`LOCK IN SHARE MODE`). A replica can receive an event a moment before InnoDB's
//!    commit makes it visible (the binlog is written first); the parent's transaction
//!    holds its locks on the child rows until then, so the locking read waits for it and
//!    reads the committed rows, the cascade included. If a lock is held longer than
//!    2 s it belongs to a later transaction (P's own commit takes microseconds): the
//!    look-up then reads without locking, which already shows P.
//! 3. A change of a child row that this read does not show committed after the read. It
//!    is logged after every event the tailer has read, so after P, and arrives later
//!    with a larger version: the guard lets it overwrite the derived write.
//! 4. A change of a child row logged after P that is already in Redis (a later event of
//!    the same batch) keeps its value: the guard refuses version(P), deletes included,
//!    and the image it holds, being later than P, already includes the cascade.
//!
//! So a derived write replaces only values older than P, with MySQL's state at or after P,
//! and everything after it wins. Redis may briefly show a child as it was a little after P
//! before the stream rewrites it with the events in between — the same window a snapshot
//! has — and ends with the row as MySQL has it.
//!
//! *Crashes.* With cascades in a batch, the batch's changes go to Redis in one call and
//! the derived changes with the checkpoint in a second, atomic, call. A crash between them
//! replays the batch from the older checkpoint: its changes rewrite their own versions
//! (counted as replayed) and the resolution runs again over Redis as it then stands,
//! under the same argument.
//!
//! # Limits (said by `cachesync doctor` and the start-up log)
//!
//! - The `SCAN` walks Redis' whole keyspace (`MATCH` filters on the server) and, unless
//!   the key template contains the foreign-key columns, reads every key of the child
//!   table: once per batch and relation with parent deletes or `SET NULL` changes. Cheap
//!   for parents that change rarely (countries, categories); for a parent deleted
//!   thousands of times a second, put the foreign key in the child's key template, or
//!   let continuous verification (`[verify]`) repair instead.
//! - Foreign-key text is matched byte for byte in Redis: under a case-insensitive
//!   collation a child holding `ABC` for a parent key `abc` is not found.
//! - A cascade is followed only through synced tables whose referenced columns are
//!   synced; a chain through an unsynced table is named at start and not followed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::metrics as m;
use crate::model::cell::Cell;
use crate::model::change::{Change, Op};
use crate::model::column::ColumnType;
use crate::model::relation::{FkRule, ForeignKey};
use crate::model::table::{SyncedTable, TableSchema};
use crate::mysql::lookup::{self, ReadMode};
use crate::redis::RedisConn;
use crate::redis::rows::{read_rows, scan_page};

/// `(database, table)`.
type TableKey = (String, String);

/// MySQL refuses a statement whose cascades go deeper than 15 levels, so no hidden
/// cascade is deeper.
const MAX_DEPTH: usize = 15;

/// How long a locking re-read waits for a row lock before it reads without one
/// (`innodb_lock_wait_timeout`, seconds; see the module doc, point 2).
const LOCK_WAIT_S: u32 = 2;

/// One foreign key whose cascades cachesync emulates.
pub struct Relation {
    pub fk: ForeignKey,
    /// The child table's plan.
    pub child: Arc<SyncedTable>,
    /// The referenced columns' positions in the parent's binlog rows (all columns, table
    /// order) and their types, in constraint order.
    parent_columns: Vec<(usize, ColumnType)>,
    /// The foreign-key columns' positions in the child's synced rows, in constraint order.
    child_positions: Vec<usize>,
    /// Whether a foreign-key column is part of the child's Redis key, so an
    /// `ON UPDATE CASCADE` moves the child to another key.
    fk_in_key: bool,
    /// The children by foreign key, locking and not (the fallback of point 2).
    select_children_shared: String,
    select_children: String,
    /// The relations whose parent is this child table, each with its referenced columns'
    /// positions in this child's synced rows: where a child change cascades on.
    below: Vec<(usize, Vec<usize>)>,
}

impl Relation {
    /// What cachesync does about this relation, for `doctor` and the start-up log.
    pub fn what_cachesync_does(&self) -> String {
        let (child, parent) = (self.fk.child_name(), self.fk.parent_name());
        let columns = self.fk.child_columns.join(", ");
        let narrowed = self
            .child_positions
            .iter()
            .all(|p| self.child.key.positions().any(|k| k == *p));
        let mut done = Vec::new();
        match self.fk.on_update {
            FkRule::Cascade if self.fk_in_key => done.push(format!(
                "moves the {child} rows of a changed {parent} key, found in Redis, to their new keys"
            )),
            FkRule::Cascade => done.push(format!(
                "re-reads the {child} rows by ({columns}) when a {parent} key changes"
            )),
            FkRule::SetNull => done.push(format!(
                "finds the {child} rows of a changed {parent} key in Redis and re-reads them"
            )),
            FkRule::Restrict | FkRule::SetDefault => {}
        }
        match self.fk.on_delete {
            FkRule::Cascade => done.push(format!(
                "finds the {child} rows of a deleted {parent} row in Redis and deletes them"
            )),
            FkRule::SetNull => done.push(format!(
                "finds the {child} rows of a deleted {parent} row in Redis and re-reads them"
            )),
            FkRule::Restrict | FkRule::SetDefault => {}
        }
        let scans = matches!(self.fk.on_update, FkRule::SetNull)
            || (self.fk.on_update == FkRule::Cascade && self.fk_in_key)
            || self.fk.on_delete.changes_children();
        let cost = match (scans, narrowed) {
            (false, _) => String::new(),
            (true, true) => " (a SCAN of the keyspace narrowed by the key template)".to_owned(),
            (true, false) => format!(
                " (a SCAN of the keyspace reading every {child} key, once per batch with such \
                 changes; put ({columns}) in its key template to narrow it)"
            ),
        };
        format!("{}{cost}", done.join("; "))
    }
}

/// The relations cachesync emulates, by parent table, with what it cannot follow.
#[derive(Default)]
pub struct Graph {
    pub relations: Vec<Relation>,
    /// Relation indices by parent table.
    by_parent: HashMap<TableKey, Vec<usize>>,
    /// Each watched parent's column names, in table order, as `information_schema` gave
    /// them when the graph was built: rows are decoded by these positions.
    parent_columns: HashMap<TableKey, Vec<String>>,
    /// Cascading foreign keys cachesync cannot follow, each a sentence naming the tables.
    pub notes: Vec<String>,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.relations.iter().map(|r| r.fk.to_string()))
            .finish()
    }
}

/// A parent row change whose cascade MySQL did not log, on its way to [`Resolver`].
pub struct Cascade {
    graph: Arc<Graph>,
    relation: usize,
    /// The referenced columns' values before the change.
    old: Vec<Cell>,
    /// After it; `None` when the parent row was deleted.
    new: Option<Vec<Cell>>,
    /// The version of the parent's event.
    version: u64,
}

impl fmt::Debug for Cascade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cascade")
            .field("fk", &self.graph.relations[self.relation].fk.name)
            .field("old", &self.old)
            .field("new", &self.new)
            .field("version", &self.version)
            .finish()
    }
}

/// Reads the foreign keys of the synced tables' databases and plans the relations whose
/// cascades cachesync emulates (see the module doc).
pub async fn load(
    pool: &mysql_async::Pool,
    mysql_url: &str,
    tables: &[Arc<SyncedTable>],
) -> Result<Graph> {
    let mut conn = crate::mysql::get_conn(pool, mysql_url).await?;
    let mut databases: Vec<String> = tables.iter().map(|t| t.schema.database.clone()).collect();
    databases.sort();
    databases.dedup();
    let fks = crate::mysql::schema::foreign_keys(&mut conn, &databases).await?;
    let mut parents = HashMap::new();
    for fk in fks.iter().filter(|fk| fk.cascades()) {
        if !parents.contains_key(&fk.parent)
            && let Some(schema) =
                crate::mysql::schema::read_table(&mut conn, &fk.parent.0, &fk.parent.1).await?
        {
            parents.insert(fk.parent.clone(), schema);
        }
    }
    Ok(plan(fks, tables, &parents))
}

/// Plans the relations of `fks` whose child is one of `tables` and whose rules cascade;
/// `parents` holds the parent tables' schemas.
pub fn plan(
    fks: Vec<ForeignKey>,
    tables: &[Arc<SyncedTable>],
    parents: &HashMap<TableKey, TableSchema>,
) -> Graph {
    let synced = |key: &TableKey| {
        tables
            .iter()
            .find(|t| t.schema.database == key.0 && t.schema.table == key.1)
    };
    let mut graph = Graph::default();
    let cascading: Vec<&ForeignKey> = fks.iter().filter(|fk| fk.cascades()).collect();
    for fk in &cascading {
        let Some(child) = synced(&fk.child) else {
            // An unsynced table matters only between a cascading parent and a synced
            // grandchild.
            for below in cascading.iter().filter(|b| b.parent == fk.child) {
                if synced(&below.child).is_some() {
                    graph.notes.push(format!(
                        "{fk}: {} is not synced, so cascades from {} through it to {} are not \
                         followed; sync {} too (columns = its primary key is enough) or \
                         enable [verify]",
                        fk.child_name(),
                        fk.parent_name(),
                        below.child_name(),
                        fk.child_name()
                    ));
                }
            }
            continue;
        };
        let names = child.encoder.names();
        let child_positions: Option<Vec<usize>> = fk
            .child_columns
            .iter()
            .map(|c| names.iter().position(|n| n == c))
            .collect();
        let Some(child_positions) = child_positions else {
            graph.notes.push(format!(
                "{fk}: not emulated: the foreign-key columns are not all synced; add them to \
                 tables[{}].columns",
                child.config.index
            ));
            continue;
        };
        let Some(parent) = parents.get(&fk.parent) else {
            graph.notes.push(format!(
                "{fk}: not emulated: cannot read the columns of {}",
                fk.parent_name()
            ));
            continue;
        };
        let parent_columns: Option<Vec<(usize, ColumnType)>> = fk
            .parent_columns
            .iter()
            .map(|c| {
                let i = parent.position(c)?;
                Some((i, parent.columns[i].ty.clone().ok()?))
            })
            .collect();
        let Some(parent_columns) = parent_columns else {
            graph.notes.push(format!(
                "{fk}: not emulated: a referenced column of {} is missing or of a type \
                 cachesync cannot decode",
                fk.parent_name()
            ));
            continue;
        };
        let select_children = child.sql.select_where(&fk.child_columns);
        let fk_in_key = child_positions
            .iter()
            .any(|p| child.key.positions().any(|k| k == *p));
        graph.relations.push(Relation {
            fk_in_key,
            select_children_shared: format!("{select_children} LOCK IN SHARE MODE"),
            select_children,
            fk: (*fk).clone(),
            child: child.clone(),
            parent_columns,
            child_positions,
            below: Vec::new(),
        });
        graph
            .parent_columns
            .entry(fk.parent.clone())
            .or_insert_with(|| parent.columns.iter().map(|c| c.name.clone()).collect());
    }
    for (i, relation) in graph.relations.iter().enumerate() {
        graph
            .by_parent
            .entry(relation.fk.parent.clone())
            .or_default()
            .push(i);
    }
    // Where a child change cascades on: the relations whose parent is that child.
    let mut below = vec![Vec::new(); graph.relations.len()];
    for (i, upper) in graph.relations.iter().enumerate() {
        let names = upper.child.encoder.names();
        for &j in graph.by_parent.get(&upper.fk.child).into_iter().flatten() {
            let lower = &graph.relations[j].fk;
            let positions: Option<Vec<usize>> = lower
                .parent_columns
                .iter()
                .map(|c| names.iter().position(|n| n == c))
                .collect();
            match positions {
                Some(positions) => below[i].push((j, positions)),
                None => graph.notes.push(format!(
                    "{lower}: cascades reaching {} from {} are not followed further: the \
                     referenced columns are not synced in tables[{}].columns",
                    lower.parent_name(),
                    upper.fk.parent_name(),
                    upper.child.config.index
                )),
            }
        }
    }
    for (relation, below) in graph.relations.iter_mut().zip(below) {
        relation.below = below;
    }
    graph
}

impl Graph {
    /// Whether rows of `table` can start a cascade.
    pub fn watches(&self, table: &TableKey) -> bool {
        self.by_parent.contains_key(table)
    }

    /// A watched parent's column names in table order, as the graph decodes its rows.
    pub fn parent_columns(&self, table: &TableKey) -> Option<&[String]> {
        self.parent_columns.get(table).map(Vec::as_slice)
    }

    /// Logs the relations and what cannot be followed (at start and after a reload).
    pub fn log(&self) {
        for relation in &self.relations {
            info!(fk = %relation.fk, "foreign-key cascade emulated: cachesync {}", relation.what_cachesync_does());
        }
        for note in &self.notes {
            warn!("{note}");
        }
    }

    /// The cascades one row image pair of the watched parent `table` starts, appended to
    /// `out`: a parent whose referenced columns changed (under an `ON UPDATE` rule that
    /// changes children), or a deleted parent (under such an `ON DELETE` rule). `version`
    /// is the version of the row's event.
    pub fn on_row(
        self: &Arc<Self>,
        table: &TableKey,
        before: Option<&BinlogRow>,
        after: Option<&BinlogRow>,
        version: u64,
        out: &mut Vec<Cascade>,
    ) -> Result<()> {
        let Some(before) = before else {
            // An insert: no child can reference a row that did not exist.
            return Ok(());
        };
        for &i in self.by_parent.get(table).into_iter().flatten() {
            let relation = &self.relations[i];
            let old = self.referenced(relation, before)?;
            if old.iter().any(|c| matches!(c, Cell::Null)) {
                // A NULL is referenced by nothing.
                continue;
            }
            let new = after
                .map(|row| self.referenced(relation, row))
                .transpose()?;
            if new.as_ref() == Some(&old) || !relation.fk.rule(new.is_none()).changes_children() {
                continue;
            }
            out.push(Cascade {
                graph: self.clone(),
                relation: i,
                old,
                new,
                version,
            });
        }
        Ok(())
    }

    /// The referenced columns' values in a parent row image.
    fn referenced(&self, relation: &Relation, row: &BinlogRow) -> Result<Vec<Cell>> {
        relation
            .parent_columns
            .iter()
            .zip(&relation.fk.parent_columns)
            .map(|((position, ty), name)| {
                let decode_error = |reason: String| Error::Decode {
                    table: relation.fk.parent_name(),
                    column: name.clone(),
                    reason,
                };
                let value = row.as_ref(*position).ok_or_else(|| {
                    decode_error(
                        "missing from the binlog row image (binlog_row_image must be FULL)"
                            .to_owned(),
                    )
                })?;
                crate::model::decode::from_binlog(ty, value).map_err(decode_error)
            })
            .collect()
    }
}

/// One parent change to resolve: a [`Cascade`], or a child change that cascades on.
struct Work {
    graph: Arc<Graph>,
    relation: usize,
    old: Vec<Cell>,
    new: Option<Vec<Cell>>,
    version: u64,
}

impl Work {
    fn relation(&self) -> &Relation {
        &self.graph.relations[self.relation]
    }
}

/// Cells as bytes that compare equal exactly when the cells do (NULL apart from empty
/// text), for matching a child's foreign-key columns against old parent keys.
fn cells_text(cells: &[Cell]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * cells.len());
    for cell in cells {
        out.push(u8::from(!matches!(cell, Cell::Null)));
        let mut text = Vec::new();
        cell.write_text(&mut text);
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(&text);
    }
    out
}

/// Turns [`Cascade`]s into the child changes MySQL made (see the module doc).
#[derive(Clone)]
pub struct Resolver {
    pool: mysql_async::Pool,
    mysql_url: String,
    redis: RedisConn,
    /// The `strategy` label of the metrics.
    strategy: &'static str,
}

impl Resolver {
    pub fn new(
        pool: mysql_async::Pool,
        mysql_url: String,
        redis: RedisConn,
        strategy: &'static str,
    ) -> Resolver {
        Resolver {
            pool,
            mysql_url,
            redis,
            strategy,
        }
    }

    /// The child changes of `cascades`, every level, each carrying the version of the
    /// parent event that started it. The caller applies them after the batch that
    /// carried `cascades`.
    pub async fn resolve(&self, cascades: &[Cascade]) -> Result<Vec<Change>> {
        if cascades.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = crate::mysql::get_conn(&self.pool, &self.mysql_url).await?;
        conn.query_drop(format!(
            "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}"
        ))
        .await
        .map_err(|e| Error::mysql("preparing to re-read cascaded rows", e))?;
        let mut redis = self.redis.clone();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut level: Vec<Work> = cascades
            .iter()
            .map(|c| Work {
                graph: c.graph.clone(),
                relation: c.relation,
                old: c.old.clone(),
                new: c.new.clone(),
                version: c.version,
            })
            .collect();
        let mut depth = 0;
        while !level.is_empty() {
            if depth == MAX_DEPTH {
                warn!(
                    left = level.len(),
                    "foreign-key cascades deeper than {MAX_DEPTH} levels are not followed"
                );
                break;
            }
            depth += 1;
            // Each (relation, old key, new key or deletion) once: a cycle ends. (A parent
            // key can change twice in one batch, 1 → 10 and, inserted again, 1 → 20: both
            // count.)
            level.retain(|w| {
                seen.insert((
                    // The graph's address tells graphs apart (a batch spans a reload).
                    Arc::as_ptr(&w.graph) as usize,
                    w.relation,
                    cells_text(&w.old),
                    w.new.as_deref().map(cells_text),
                ))
            });
            let mut next = Vec::new();
            let mut scans: Vec<Vec<&Work>> = Vec::new();
            for work in &level {
                let relation = work.relation();
                match (&work.new, relation.fk.rule(work.new.is_none())) {
                    (Some(new), FkRule::Cascade) if !relation.fk_in_key => {
                        self.follow_update(&mut conn, work, new, &mut out, &mut next)
                            .await?
                    }
                    _ => match scans.iter_mut().find(|group| {
                        Arc::ptr_eq(&group[0].graph, &work.graph)
                            && group[0].relation == work.relation
                    }) {
                        Some(group) => group.push(work),
                        None => scans.push(vec![work]),
                    },
                }
            }
            for group in scans {
                self.follow_in_redis(&mut conn, &mut redis, &group, &mut out, &mut next)
                    .await?;
            }
            level = next;
        }
        conn.query_drop("SET SESSION innodb_lock_wait_timeout = DEFAULT")
            .await
            .ok();
        self.count(&out);
        Ok(out)
    }

    /// `ON UPDATE CASCADE`: the children hold the new key now; read them by it.
    async fn follow_update(
        &self,
        conn: &mut mysql_async::Conn,
        work: &Work,
        new: &[Cell],
        out: &mut Vec<Change>,
        next: &mut Vec<Work>,
    ) -> Result<()> {
        let relation = work.relation();
        let child = &relation.child;
        let rows = match lookup::by_columns(conn, child, &relation.select_children_shared, new)
            .await
        {
            Err(e) if lookup::is_lock_wait_timeout(&e) => {
                debug!(fk = %relation.fk, "children locked by a later transaction; reading without a lock");
                lookup::by_columns(conn, child, &relation.select_children, new).await?
            }
            rows => rows?,
        };
        for row in rows {
            // What MySQL did at the parent's event: the foreign key went from old to new.
            // (The child's key holds no foreign-key column here, so it did not move.)
            let before = with_columns(&row, &relation.child_positions, Some(&work.old));
            let after = with_columns(&row, &relation.child_positions, Some(new));
            cascade_on(work, &before, Some(&after), next);
            out.push(change(child, Op::Upsert, row, work.version));
        }
        Ok(())
    }

    /// `SET NULL`, `ON DELETE CASCADE`, and `ON UPDATE CASCADE` of a child whose key holds
    /// the foreign key: find the children in Redis by the old key (as the stream showed
    /// them), then re-read each by the primary key MySQL gave it at the parent's event.
    /// `group` holds changes of one relation.
    async fn follow_in_redis(
        &self,
        conn: &mut mysql_async::Conn,
        redis: &mut RedisConn,
        group: &[&Work],
        out: &mut Vec<Change>,
        next: &mut Vec<Work>,
    ) -> Result<()> {
        let relation = group[0].relation();
        let child = &relation.child;
        // Old key → the group's changes of it (usually one; a parent key can change twice
        // in a batch, 1 → 10 and, inserted again, 1 → 20).
        let mut wanted: HashMap<Vec<u8>, Vec<&Work>> = HashMap::new();
        for work in group {
            wanted.entry(cells_text(&work.old)).or_default().push(work);
        }
        let pattern = if let [only] = group {
            child.key.scan_pattern(|position| {
                relation
                    .child_positions
                    .iter()
                    .position(|&p| p == position)
                    .map(|k| &only.old[k])
            })
        } else {
            child.key.scan_pattern(|_| None)
        };
        let what = format!("finding the cascaded rows of {} in Redis", child.name());
        let mut cursor = 0;
        loop {
            let (next_cursor, keys) = scan_page(redis, cursor, &pattern, &what).await?;
            let rows = read_rows(redis, child, &keys).await?;
            for (key, stored) in keys.iter().zip(rows) {
                let Some(stored) = stored else { continue };
                // Another table's key can fit the pattern.
                if &child.key_of(&stored) != key {
                    continue;
                }
                let fk: Vec<Cell> = relation
                    .child_positions
                    .iter()
                    .map(|&p| stored[p].clone())
                    .collect();
                let Some(works) = wanted.get(&cells_text(&fk)) else {
                    continue;
                };
                for work in works {
                    self.follow_one(conn, work, &stored, out, next).await?;
                }
            }
            cursor = next_cursor;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    /// One child row Redis holds, `stored`, that `work`'s cascade changed.
    async fn follow_one(
        &self,
        conn: &mut mysql_async::Conn,
        work: &Work,
        stored: &[Cell],
        out: &mut Vec<Change>,
        next: &mut Vec<Work>,
    ) -> Result<()> {
        let relation = work.relation();
        let child = &relation.child;
        // What MySQL did to the row at the parent's event.
        let after = match (&work.new, relation.fk.rule(work.new.is_none())) {
            (Some(new), FkRule::Cascade) => {
                Some(with_columns(stored, &relation.child_positions, Some(new)))
            }
            (_, FkRule::SetNull) => Some(with_columns(stored, &relation.child_positions, None)),
            _ => None,
        };
        // The row now, under the key it got then.
        let target = after.as_deref().unwrap_or(stored);
        let now = match lookup::by_key(conn, child, target, ReadMode::Shared).await {
            Err(e) if lookup::is_lock_wait_timeout(&e) => {
                debug!(key = %child.key_of(target), "row locked by a later transaction; reading without a lock");
                lookup::by_key(conn, child, target, ReadMode::Plain).await?
            }
            now => now?,
        };
        cascade_on(work, stored, after.as_ref(), next);
        if child.key_of(target) != child.key_of(stored) {
            // The cascade moved the row to another key: the old one goes.
            out.push(change(child, Op::Delete, stored.to_vec(), work.version));
        }
        out.push(match now {
            Some(row) => change(child, Op::Upsert, row, work.version),
            None => change(child, Op::Delete, target.to_vec(), work.version),
        });
        Ok(())
    }

    /// Counts the derived changes per child table.
    fn count(&self, changes: &[Change]) {
        let mut per_table: HashMap<String, u64> = HashMap::new();
        for change in changes {
            *per_table.entry(change.table.name()).or_default() += 1;
        }
        for (table, n) in per_table {
            debug!(table = %table, changes = n, "foreign-key cascade applied");
            metrics::counter!(m::CASCADED_CHANGES, "strategy" => self.strategy, "table" => table)
                .increment(n);
        }
    }
}

/// A child row changed from `before` to `after` (`None`: deleted) by `work`'s cascade:
/// queues the cascades it starts in turn.
fn cascade_on(work: &Work, before: &[Cell], after: Option<&Vec<Cell>>, next: &mut Vec<Work>) {
    for (lower, positions) in &work.relation().below {
        let pick =
            |row: &[Cell]| -> Vec<Cell> { positions.iter().map(|&p| row[p].clone()).collect() };
        let old = pick(before);
        let new = after.map(|row| pick(row));
        let rule = work.graph.relations[*lower].fk.rule(new.is_none());
        if new.as_ref() == Some(&old)
            || old.iter().any(|c| matches!(c, Cell::Null))
            || !rule.changes_children()
        {
            continue;
        }
        next.push(Work {
            graph: work.graph.clone(),
            relation: *lower,
            old,
            new,
            version: work.version,
        });
    }
}

/// `row` with the cells at `positions` replaced by `values` (NULL when `None`).
fn with_columns(row: &[Cell], positions: &[usize], values: Option<&[Cell]>) -> Vec<Cell> {
    let mut out = row.to_vec();
    for (k, &p) in positions.iter().enumerate() {
        out[p] = values.map_or(Cell::Null, |v| v[k].clone());
    }
    out
}

fn change(table: &Arc<SyncedTable>, op: Op, row: Vec<Cell>, version: u64) -> Change {
    Change {
        table: table.clone(),
        op,
        row,
        version: Some(version),
        // Derived, not committed as such: no propagation sample.
        committed_at_us: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_text_tells_null_from_empty_and_keeps_order() {
        assert_ne!(
            cells_text(&[Cell::Null]),
            cells_text(&[Cell::Text(String::new())])
        );
        assert_ne!(
            cells_text(&[Cell::Text("a".into()), Cell::Text("bc".into())]),
            cells_text(&[Cell::Text("ab".into()), Cell::Text("c".into())])
        );
        assert_eq!(cells_text(&[Cell::UInt(7)]), cells_text(&[Cell::UInt(7)]));
    }
}
