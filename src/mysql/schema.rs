//! Reading what the configured tables look like from `information_schema`, and
//! checking every configured table against it.
//!
//! [`load_tables`] reads `information_schema` once at start-up, checks every configured
//! table against it (exists, has a primary key, key placeholders are primary-key columns,
//! listed columns exist and have types cachesync can encode) and reports *all* problems in
//! the config's style (`tables[1].key: placeholder {idd} is not a column of shop.users`).
//! [`foreign_keys`] reads the foreign keys between tables, which the binlog strategy
//! needs because cascaded changes are not logged.

use std::sync::Arc;

use mysql_async::prelude::Queryable;

use crate::error::{Error, Result};
use crate::model::column::{ColumnFacts, ColumnType};
use crate::model::relation::{FkRule, ForeignKey};
use crate::model::table::{Column, SyncedTable, TableConfig, TableSchema};

/// One row of the `information_schema.COLUMNS` query in [`read_table`].
type ColumnRow = (
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    String,
);

/// Reads one table's description; `Ok(None)` when it does not exist.
pub async fn read_table(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &str,
) -> Result<Option<TableSchema>> {
    let context = || format!("reading the columns of {database}.{table}");
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_SCALE, DATETIME_PRECISION, \
                    CHARACTER_OCTET_LENGTH, COLUMN_KEY \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(|e| Error::mysql(context(), e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let json_checked = if rows.iter().any(|r| r.1 == "longtext") {
        mariadb_json_columns(conn, database, table).await
    } else {
        Vec::new()
    };
    let columns = rows
        .iter()
        .map(
            |(name, data_type, column_type, scale, precision, octets, _)| {
                let facts = ColumnFacts {
                    data_type: data_type.to_ascii_lowercase(),
                    column_type: column_type.to_ascii_lowercase(),
                    numeric_scale: *scale,
                    datetime_precision: *precision,
                    octet_length: *octets,
                    has_json_check: json_checked.contains(name),
                };
                Column {
                    name: name.clone(),
                    ty: ColumnType::from_facts(&facts),
                }
            },
        )
        .collect::<Vec<_>>();
    let pk_names: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(|e| Error::mysql(context(), e))?;
    let primary_key = pk_names
        .iter()
        .filter_map(|n| columns.iter().position(|c| &c.name == n))
        .collect();
    Ok(Some(TableSchema {
        database: database.to_owned(),
        table: table.to_owned(),
        columns,
        primary_key,
    }))
}

/// Columns of `database.table` that MariaDB declared with its JSON alias. MySQL has a
/// real JSON type and a differently shaped CHECK_CONSTRAINTS table, so a failing query
/// simply means "none".
async fn mariadb_json_columns(
    conn: &mut mysql_async::Conn,
    database: &str,
    table: &str,
) -> Vec<String> {
    let clauses: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await
        .unwrap_or_default();
    clauses
        .iter()
        .filter_map(|clause| {
            let inner = clause.trim().strip_prefix("json_valid(`")?;
            let name = inner.strip_suffix("`)")?;
            Some(name.replace("``", "`"))
        })
        .collect()
}

/// What a table looks like now compared with its plan (see [`replan`]).
pub enum Replanned {
    /// Same columns, types and primary key: the plan stands.
    Unchanged,
    /// A DDL changed it: the new plan, for the same `[[tables]]` entry.
    Changed(Box<SyncedTable>),
    /// The table is gone.
    Gone,
}

/// Plans `table` again from what `information_schema` says now, with its `[[tables]]`
/// entry: what a long-running reader or writer does after a DDL instead of failing (or
/// silently dropping a new column) until a restart. `Err` when the table no longer fits
/// its entry (a key column dropped, a type cachesync cannot encode), naming what.
pub async fn replan(conn: &mut mysql_async::Conn, table: &SyncedTable) -> Result<Replanned> {
    let Some(schema) = read_table(conn, &table.schema.database, &table.schema.table).await? else {
        return Ok(Replanned::Gone);
    };
    if schema == table.schema {
        return Ok(Replanned::Unchanged);
    }
    SyncedTable::plan(&table.config, schema)
        .map(|plan| Replanned::Changed(Box::new(plan)))
        .map_err(Error::Config)
}

/// Re-plans tables on demand after something suggested a DDL changed them (a column the
/// plan does not know, MySQL's "unknown column", a value that no longer decodes) — for
/// the long-running readers and writers that cannot wait for a restart: the write API,
/// the read path, the mq consumer. A table found unchanged is not looked at again for a
/// second, so a client sending a column that does not exist cannot make every request
/// query `information_schema`.
pub struct Replanner {
    pool: mysql_async::Pool,
    mysql_url: String,
    unchanged_at: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Replanner {
    /// How soon a table found unchanged is looked at again.
    pub const UNCHANGED_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

    pub fn new(pool: mysql_async::Pool, mysql_url: &str) -> Replanner {
        Replanner {
            pool,
            mysql_url: mysql_url.to_owned(),
            unchanged_at: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The new plan of `table` when a DDL changed it; `None` when it is unchanged, gone,
    /// looked at less than [`Replanner::UNCHANGED_RECHECK`] ago, or no longer fits its
    /// `[[tables]]` entry (logged: the caller keeps the plan it has).
    pub async fn replan(&self, table: &SyncedTable) -> Option<SyncedTable> {
        let name = table.name();
        {
            let unchanged = self.unchanged_at.lock().unwrap_or_else(|e| e.into_inner());
            if unchanged
                .get(&name)
                .is_some_and(|at| at.elapsed() < Self::UNCHANGED_RECHECK)
            {
                return None;
            }
        }
        let replanned = async {
            let mut conn = super::get_conn(&self.pool, &self.mysql_url).await?;
            replan(&mut conn, table).await
        };
        match replanned.await {
            Ok(Replanned::Changed(plan)) => {
                tracing::info!(
                    table = %name,
                    columns = plan.encoder.names().join(","),
                    "schema re-read after a DDL"
                );
                Some(*plan)
            }
            Ok(Replanned::Unchanged | Replanned::Gone) => {
                self.unchanged_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, std::time::Instant::now());
                None
            }
            Err(e) => {
                tracing::warn!(
                    table = %name,
                    error = %e,
                    "could not re-plan the table after a DDL; keeping its plan"
                );
                None
            }
        }
    }
}

/// One row of the foreign-key query in [`foreign_keys`].
type FkRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

/// The foreign keys whose referencing or referenced table is in one of `databases`, each
/// with its columns in constraint order.
pub async fn foreign_keys(
    conn: &mut mysql_async::Conn,
    databases: &[String],
) -> Result<Vec<ForeignKey>> {
    if databases.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; databases.len()].join(", ");
    let sql = format!(
        "SELECT k.CONSTRAINT_NAME, k.TABLE_SCHEMA, k.TABLE_NAME, k.COLUMN_NAME, \
                k.REFERENCED_TABLE_SCHEMA, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, \
                r.UPDATE_RULE, r.DELETE_RULE \
         FROM information_schema.KEY_COLUMN_USAGE k \
         JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
           ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
          AND r.TABLE_NAME = k.TABLE_NAME \
         WHERE k.REFERENCED_TABLE_NAME IS NOT NULL \
           AND (k.TABLE_SCHEMA IN ({marks}) OR k.REFERENCED_TABLE_SCHEMA IN ({marks})) \
         ORDER BY k.TABLE_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION"
    );
    let params: Vec<&String> = databases.iter().chain(databases).collect();
    let rows: Vec<FkRow> = conn
        .exec(sql, params)
        .await
        .map_err(|e| Error::mysql("reading the foreign keys (information_schema)", e))?;
    let mut keys: Vec<ForeignKey> = Vec::new();
    for (name, db, table, column, ref_db, ref_table, ref_column, on_update, on_delete) in rows {
        let child = (db, table);
        match keys.last_mut() {
            Some(fk) if fk.name == name && fk.child == child => {
                fk.child_columns.push(column);
                fk.parent_columns.push(ref_column);
            }
            _ => keys.push(ForeignKey {
                name,
                child,
                child_columns: vec![column],
                parent: (ref_db, ref_table),
                parent_columns: vec![ref_column],
                on_update: FkRule::parse(&on_update),
                on_delete: FkRule::parse(&on_delete),
            }),
        }
    }
    Ok(keys)
}

/// MySQL's estimate of `table`'s row count (for progress logs), if it has one.
pub async fn estimated_rows(conn: &mut mysql_async::Conn, table: &SyncedTable) -> Option<u64> {
    conn.exec_first(
        "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (&table.schema.database, &table.schema.table),
    )
    .await
    .ok()
    .flatten()
}

/// Checks every configured table against MySQL and plans it. All problems of all tables
/// come back together.
pub async fn load_tables(
    configured: &[TableConfig],
    pool: &mysql_async::Pool,
    mysql_url: &str,
) -> Result<Vec<Arc<SyncedTable>>> {
    let mut conn = super::get_conn(pool, mysql_url).await?;
    let mut problems = Vec::new();
    let mut tables = Vec::new();
    for table in configured {
        match read_table(&mut conn, &table.database, &table.table).await? {
            None => problems.push(format!(
                "tables[{}].name: table {} does not exist in MySQL at {}",
                table.index,
                table.qualified_name(),
                crate::redact::redact_url(mysql_url)
            )),
            Some(schema) => match SyncedTable::plan(table, schema) {
                Ok(planned) => tables.push(Arc::new(planned)),
                Err(mut p) => problems.append(&mut p),
            },
        }
    }
    if problems.is_empty() {
        Ok(tables)
    } else {
        Err(Error::Config(problems))
    }
}
