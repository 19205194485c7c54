//! A configured table: what the user asked for (`[[tables]]`, validated), what MySQL
//! says it looks like ([`TableSchema`]), and the plan built from both ([`SyncedTable`]):
//! everything needed to turn a row into a Redis key and value, and the table's SQL,
//! without further look-ups.

use std::time::Duration;

use mysql_async::binlog::row::BinlogRow;

use super::cell::{Cell, Format, RowEncoder, VERSION_FIELD};
use super::column::ColumnType;
use super::key::{BoundKey, KeyTemplate};
use crate::error::{Error, Result};

/// What a table's changes do to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write each row image.
    Write,
    /// Delete the key on every change (Meta's memcache approach): readers refill it.
    Invalidate,
}

/// One validated `[[tables]]` entry.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Position in the file, for messages (`tables[1]`).
    pub index: usize,
    pub database: String,
    pub table: String,
    pub key: KeyTemplate,
    pub format: Format,
    pub columns: Option<Vec<String>>,
    pub ttl: Option<Duration>,
    pub ttl_jitter: Duration,
    pub version_column: Option<String>,
    pub mode: Mode,
    pub read: ReadConfig,
}

/// Validated `[tables.read]` settings (`crate::config::table::RawRead` documents each).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadConfig {
    pub enabled: bool,
    /// `None`: no L1 cache.
    pub l1_ttl: Option<Duration>,
    pub l1_capacity: u64,
    /// `None`: misses are not remembered.
    pub negative_ttl: Option<Duration>,
    /// `None`: no Bloom filter.
    pub bloom: Option<BloomConfig>,
    pub single_flight: bool,
    pub lock: bool,
    pub lock_ttl: Duration,
    pub lock_wait: Duration,
    /// `None`: no early refresh.
    pub refresh_ahead: Option<Duration>,
}

/// How a table's Bloom filter is sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BloomConfig {
    pub expected_rows: u64,
    pub fp_rate: f64,
}

impl TableConfig {
    /// `database.table`, as written in the config.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }
}

/// Splits `database.table`, or records a problem for `key`.
pub fn parse_qualified_name(
    key: &str,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<(String, String)> {
    match name.split_once('.') {
        Some((db, table)) if !db.is_empty() && !table.is_empty() && !table.contains('.') => {
            Some((db.to_owned(), table.to_owned()))
        }
        _ => {
            problems.push(format!("{key}: expected \"database.table\", got {name:?}"));
            None
        }
    }
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `Err` holds the declared type when cachesync cannot encode it; such a column may
    /// exist in the table as long as it is not synced.
    pub ty: std::result::Result<ColumnType, String>,
}

/// A table as `information_schema` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub database: String,
    pub table: String,
    /// All columns, in table order.
    pub columns: Vec<Column>,
    /// Indices into `columns`, in key order.
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    /// The primary-key column names, in key order.
    pub fn primary_key_names(&self) -> Vec<&str> {
        self.primary_key
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect()
    }

    pub fn position(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == column)
    }
}

/// A row read from MySQL that cannot be decoded whole.
#[derive(Debug)]
pub struct UndecodableRow {
    /// Its key cells (every other cell NULL), when those decode.
    pub key_row: Option<Vec<Cell>>,
    /// Why: an [`Error::Decode`] naming the column.
    pub error: Error,
}

/// Everything needed to move one configured table's rows into Redis.
#[derive(Debug)]
pub struct SyncedTable {
    pub config: TableConfig,
    pub schema: TableSchema,
    /// Indices into `schema.columns` of the synced columns, in table order. Rows passed
    /// around cachesync hold exactly these cells, in this order.
    pub selected: Vec<usize>,
    /// The synced columns' types, in row order.
    pub types: Vec<ColumnType>,
    pub key: BoundKey,
    pub encoder: RowEncoder,
    /// Position in the row of the configured version column.
    pub version_column: Option<usize>,
    /// Positions in the row of the primary-key columns, in primary-key order (the order
    /// of the `?` in [`TableSql`]'s statements).
    pub key_positions: Vec<usize>,
    /// The table's statements, built once here.
    pub sql: TableSql,
}

/// Every statement cachesync runs against a synced table, built once when the table is
/// planned: identifiers quoted, values only ever as parameters. `?` in a `WHERE` stands
/// for the primary-key values in primary-key order.
#[derive(Debug, Clone)]
pub struct TableSql {
    /// `` `db`.`table` ``.
    pub table: String,
    /// `SELECT <synced columns> FROM <table>` (a scan; its rows are what
    /// [`SyncedTable::decode_sql_row`] reads).
    pub select_all: String,
    /// `select_all WHERE <pk> = ?`: one row by primary key (the read path, verify).
    pub select_by_key: String,
    /// `select_by_key FOR UPDATE`: a writer reads back the row it is about to commit.
    pub select_for_update: String,
    /// `select_by_key LOCK IN SHARE MODE`: a repair keeps writers of the row waiting until
    /// Redis has answered (`LOCK IN SHARE MODE` works on MariaDB and MySQL alike).
    pub select_shared: String,
    /// `DELETE FROM <table> WHERE <pk> = ?`.
    pub delete_by_key: String,
    /// The statements an online snapshot pages through the table with (see
    /// [`ChunkSql`]).
    pub chunks: ChunkSql,
    /// `select_all WHERE (<pk> = ?) OR (<pk> = ?) ...` with [`TableSql::KEYS_PER_LOOKUP`]
    /// keys: many rows by primary key in one statement (a list of index look-ups). One
    /// text for every call, so it is prepared once; a shorter list repeats a key.
    pub select_by_keys: String,
}

/// Keyset pagination in primary-key order, for online snapshots: every statement reads a
/// bounded range of the primary key and never holds a lock. `pk > ?` stands for the
/// lexicographic "after this key" over all primary-key columns, written out as
/// `a > ? OR (a = ? AND b > ?)` so MySQL and MariaDB read it as a range of the clustered
/// index (row constructors like `(a, b) > (?, ?)` are not optimised by every server); its
/// parameters come from [`ChunkSql::after_params`]. `DECIMAL` key values are compared as
/// `CAST(? AS DECIMAL)`, not as the double a string would be converted to.
///
/// A key with an `ENUM`, `SET` or `BIT` column cannot be paged this way: the index (and
/// `ORDER BY`) sorts those by their number while a comparison with the value read back
/// compares text, so a page could skip rows. Such a table is not `paged`: it is read in
/// one chunk (the statements without `WHERE` and `LIMIT`: `rows_first` and
/// `keys_first` then read everything, `rows_upto` too).
#[derive(Debug, Clone)]
pub struct ChunkSql {
    /// `SELECT <synced columns> ... ORDER BY <pk> LIMIT ?`: the first chunk.
    pub rows_first: String,
    /// `SELECT <synced columns> ... WHERE <pk> > ? ORDER BY <pk> LIMIT ?`.
    pub rows_after: String,
    /// `SELECT <pk columns> ... ORDER BY <pk> LIMIT ?`: the keys of the first chunk.
    pub keys_first: String,
    /// `SELECT <pk columns> ... WHERE <pk> > ? ORDER BY <pk> LIMIT ?`.
    pub keys_after: String,
    /// `SELECT <synced columns> ... WHERE <pk> <= ? ORDER BY <pk>`: the rows of the first
    /// chunk's key range.
    pub rows_upto: String,
    /// `SELECT <synced columns> ... WHERE <pk> > ? AND <pk> <= ? ORDER BY <pk>`.
    pub rows_between: String,
    /// Whether the table can be read in pages (see above).
    pub paged: bool,
    /// Primary-key columns in key order.
    key_count: usize,
}

impl ChunkSql {
    fn new(schema: &TableSchema, table: &str, columns: &str) -> ChunkSql {
        let keys: Vec<(String, String)> = schema
            .primary_key
            .iter()
            .map(|&i| {
                let column = &schema.columns[i];
                let placeholder = match &column.ty {
                    Ok(ColumnType::Decimal { scale }) => {
                        format!("CAST(? AS DECIMAL(65,{}))", (*scale).min(30))
                    }
                    _ => "?".to_owned(),
                };
                (quote_ident(&column.name), placeholder)
            })
            .collect();
        let order = keys
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        // a > ? OR (a = ? AND b > ?) ...; the last column takes `last_op`.
        let lexicographic = |strict: &str, last_op: &str| -> String {
            (0..keys.len())
                .map(|i| {
                    let mut terms: Vec<String> = keys[..i]
                        .iter()
                        .map(|(c, p)| format!("{c} = {p}"))
                        .collect();
                    let op = if i + 1 == keys.len() { last_op } else { strict };
                    terms.push(format!("{} {op} {}", keys[i].0, keys[i].1));
                    format!("({})", terms.join(" AND "))
                })
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        let paged = !schema.primary_key.iter().any(|&i| {
            matches!(
                schema.columns[i].ty,
                Ok(ColumnType::Enum(_) | ColumnType::Set(_) | ColumnType::Bit)
            )
        });
        let select = |what: &str| format!("SELECT {what} FROM {table}");
        if !paged {
            let all = select(columns);
            return ChunkSql {
                rows_first: all.clone(),
                rows_after: all.clone(),
                keys_first: select(&order),
                keys_after: select(&order),
                rows_upto: all.clone(),
                rows_between: all,
                paged,
                key_count: keys.len(),
            };
        }
        let after = lexicographic(">", ">");
        let upto = lexicographic("<", "<=");
        ChunkSql {
            paged,
            rows_first: format!("{} ORDER BY {order} LIMIT ?", select(columns)),
            rows_after: format!("{} WHERE {after} ORDER BY {order} LIMIT ?", select(columns)),
            keys_first: format!("{} ORDER BY {order} LIMIT ?", select(&order)),
            keys_after: format!("{} WHERE {after} ORDER BY {order} LIMIT ?", select(&order)),
            rows_upto: format!("{} WHERE {upto} ORDER BY {order}", select(columns)),
            rows_between: format!(
                "{} WHERE ({after}) AND ({upto}) ORDER BY {order}",
                select(columns)
            ),
            key_count: keys.len(),
        }
    }

    /// The parameters of one lexicographic comparison with the primary-key values `key`
    /// (in key order): for each column, the columns before it, then itself.
    pub fn after_params<V: Clone>(&self, key: &[V]) -> Vec<V> {
        debug_assert_eq!(key.len(), self.key_count);
        let mut params = Vec::with_capacity(key.len() * (key.len() + 1) / 2);
        for i in 0..key.len() {
            params.extend_from_slice(&key[..=i]);
        }
        params
    }
}

impl TableSql {
    fn new(schema: &TableSchema, names: &[String]) -> TableSql {
        let table = format!(
            "{}.{}",
            quote_ident(&schema.database),
            quote_ident(&schema.table)
        );
        let columns: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
        let select_all = format!("SELECT {} FROM {table}", columns.join(", "));
        let key_where = schema
            .primary_key_names()
            .iter()
            .map(|c| format!("{} = ?", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let select_by_key = format!("{select_all} WHERE {key_where}");
        let chunks = ChunkSql::new(schema, &table, &columns.join(", "));
        let by_keys = vec![format!("({key_where})"); Self::KEYS_PER_LOOKUP].join(" OR ");
        TableSql {
            chunks,
            select_by_keys: format!("{select_all} WHERE {by_keys}"),
            select_for_update: format!("{select_by_key} FOR UPDATE"),
            select_shared: format!("{select_by_key} LOCK IN SHARE MODE"),
            delete_by_key: format!("DELETE FROM {table} WHERE {key_where}"),
            select_by_key,
            select_all,
            table,
        }
    }
}

impl TableSql {
    /// Keys per [`TableSql::select_by_keys`].
    pub const KEYS_PER_LOOKUP: usize = 50;

    /// `select_all WHERE <c1> = ? AND <c2> = ?`: rows by other columns (a foreign key's,
    /// which InnoDB always indexes); built once by whoever plans such a look-up.
    pub fn select_where(&self, columns: &[String]) -> String {
        let condition = columns
            .iter()
            .map(|c| format!("{} = ?", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!("{} WHERE {condition}", self.select_all)
    }
}

impl SyncedTable {
    /// `database.table`.
    pub fn name(&self) -> String {
        self.config.qualified_name()
    }

    /// The Redis key of a row.
    pub fn key_of(&self, row: &[Cell]) -> String {
        self.key.render(row)
    }

    /// Whether rows `a` and `b` of this table have the same Redis key.
    pub fn same_key(&self, a: &[Cell], b: &[Cell]) -> bool {
        self.key.same_key(a, b)
    }

    /// Whether position `i` of a row is a primary-key column.
    pub fn is_key_position(&self, i: usize) -> bool {
        self.selected
            .get(i)
            .is_some_and(|column| self.schema.primary_key.contains(column))
    }

    /// The row's version from the configured version column, if there is one.
    pub fn version_of(&self, row: &[Cell]) -> Option<u64> {
        match row.get(self.version_column?)? {
            Cell::UInt(v) => Some(*v),
            Cell::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// Decodes a SQL result row holding the synced columns (as [`TableSql`]'s selects
    /// return them).
    pub fn decode_sql_row(&self, row: &mysql_async::Row) -> Result<Vec<Cell>> {
        (0..self.types.len())
            .map(|i| {
                let value = row.as_ref(i).unwrap_or(&mysql_async::Value::NULL);
                super::decode::from_sql(&self.types[i], value).map_err(|reason| Error::Decode {
                    table: self.name(),
                    column: self.encoder.names()[i].clone(),
                    reason,
                })
            })
            .collect()
    }

    /// Decodes a SQL result row holding the synced columns; when a column cannot be
    /// decoded, says which and keeps the row's key cells if those decode, so the row can
    /// still be named (and its key removed, or reported).
    pub fn decode_sql_row_or_key(
        &self,
        row: &mysql_async::Row,
    ) -> std::result::Result<Vec<Cell>, UndecodableRow> {
        self.decode_sql_row(row).map_err(|error| UndecodableRow {
            key_row: self.decode_sql_key(row).ok(),
            error,
        })
    }

    /// The key cells of a SQL result row holding the synced columns (every other cell
    /// NULL): enough to name the row's key and delete it, even when another of its
    /// columns cannot be decoded.
    pub fn decode_sql_key(&self, row: &mysql_async::Row) -> Result<Vec<Cell>> {
        let mut cells = vec![Cell::Null; self.types.len()];
        for &i in &self.key_positions {
            let value = row.as_ref(i).unwrap_or(&mysql_async::Value::NULL);
            cells[i] =
                super::decode::from_sql(&self.types[i], value).map_err(|reason| Error::Decode {
                    table: self.name(),
                    column: self.encoder.names()[i].clone(),
                    reason,
                })?;
        }
        Ok(cells)
    }

    /// The key cells and, when the table has one, the version column's cell of a SQL result
    /// row (every other cell NULL): what a delete needs, so that its tombstone outranks the
    /// row it removes ([`crate::model::change::version_of_change`]). A version that does not decode is
    /// left NULL (the delete is unversioned).
    pub fn decode_sql_key_and_version(&self, row: &mysql_async::Row) -> Result<Vec<Cell>> {
        let mut cells = self.decode_sql_key(row)?;
        if let Some(i) = self.version_column {
            let value = row.as_ref(i).unwrap_or(&mysql_async::Value::NULL);
            if let Ok(cell) = super::decode::from_sql(&self.types[i], value) {
                cells[i] = cell;
            }
        }
        Ok(cells)
    }

    /// The key cells of a binlog row image (every other cell NULL), like
    /// [`SyncedTable::decode_sql_key`]: a before image needs no more, and a row whose
    /// other columns are undecodable can still be named.
    pub fn decode_binlog_key(&self, row: &BinlogRow) -> Result<Vec<Cell>> {
        self.check_binlog_width(row)?;
        let mut cells = vec![Cell::Null; self.types.len()];
        for &i in &self.key_positions {
            cells[i] = self.decode_binlog_cell(row, i)?;
        }
        Ok(cells)
    }

    /// Decodes a binlog row image (all table columns, table order) into the synced cells.
    pub fn decode_binlog_row(&self, row: &BinlogRow) -> Result<Vec<Cell>> {
        self.check_binlog_width(row)?;
        (0..self.types.len())
            .map(|i| self.decode_binlog_cell(row, i))
            .collect()
    }

    fn check_binlog_width(&self, row: &BinlogRow) -> Result<()> {
        if row.len() == self.schema.columns.len() {
            return Ok(());
        }
        Err(Error::Decode {
            table: self.name(),
            column: "*".to_owned(),
            reason: format!(
                "the binlog row has {} columns but the table had {} when cachesync read its schema",
                row.len(),
                self.schema.columns.len()
            ),
        })
    }

    /// Synced cell `i` (row order) of a binlog row image.
    fn decode_binlog_cell(&self, row: &BinlogRow, i: usize) -> Result<Cell> {
        let decode_error = |reason: String| Error::Decode {
            table: self.name(),
            column: self.encoder.names()[i].clone(),
            reason,
        };
        let value = row.as_ref(self.selected[i]).ok_or_else(|| {
            decode_error(
                "missing from the binlog row image (binlog_row_image must be FULL)".to_owned(),
            )
        })?;
        super::decode::from_binlog(&self.types[i], value).map_err(decode_error)
    }

    /// Decodes a row as the `json` encoding stored it (the version member ignored); a
    /// column the document lacks is NULL.
    pub fn decode_stored_json(&self, doc: &[u8]) -> Result<Vec<Cell>> {
        let decode_error = |column: &str, reason: String| Error::Decode {
            table: self.name(),
            column: column.to_owned(),
            reason,
        };
        let object = super::json::RawObject::parse(doc)
            .map_err(|e| decode_error("*", format!("the stored JSON document: {e}")))?;
        self.encoder
            .names()
            .iter()
            .zip(&self.types)
            .map(|(name, ty)| match object.get(name) {
                None => Ok(Cell::Null),
                Some(value) => {
                    super::decode::from_json(ty, value).map_err(|reason| decode_error(name, reason))
                }
            })
            .collect()
    }

    /// Decodes a row as the `hash` encoding stored it (field → text; an absent field is
    /// NULL).
    pub fn decode_stored_hash(
        &self,
        fields: &std::collections::HashMap<Vec<u8>, Vec<u8>>,
    ) -> Result<Vec<Cell>> {
        self.encoder
            .names()
            .iter()
            .zip(&self.types)
            .map(|(name, ty)| match fields.get(name.as_bytes()) {
                None => Ok(Cell::Null),
                Some(text) => {
                    super::decode::from_hash_text(ty, text).map_err(|reason| Error::Decode {
                        table: self.name(),
                        column: name.clone(),
                        reason,
                    })
                }
            })
            .collect()
    }

    /// Builds the plan for `config` from `schema`, or lists what does not fit.
    pub fn plan(
        config: &TableConfig,
        schema: TableSchema,
    ) -> std::result::Result<SyncedTable, Vec<String>> {
        let check = PlanCheck {
            config,
            schema: &schema,
            name: config.qualified_name(),
        };
        let mut problems = Vec::new();
        check.key(&mut problems);
        let selected = check.synced_columns(&mut problems);
        let types = check.types_of(&selected, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let names: Vec<String> = selected
            .iter()
            .map(|&i| schema.columns[i].name.clone())
            .collect();
        let key = config
            .key
            .bind(|c| names.iter().position(|n| n == c))
            .map_err(|c| {
                vec![format!(
                    "{}: placeholder {{{c}}} is not synced",
                    check.at("key")
                )]
            })?;
        let version_column = config
            .version_column
            .as_ref()
            .and_then(|v| names.iter().position(|n| n == v));
        let key_positions = schema
            .primary_key
            .iter()
            .filter_map(|pk| selected.iter().position(|c| c == pk))
            .collect();
        let sql = TableSql::new(&schema, &names);
        Ok(SyncedTable {
            encoder: RowEncoder::new(config.format, names),
            config: config.clone(),
            schema,
            selected,
            types,
            key,
            version_column,
            key_positions,
            sql,
        })
    }
}

/// The checks of [`SyncedTable::plan`], each recording its problems in the config's
/// style (`tables[1].key: ...`).
struct PlanCheck<'a> {
    config: &'a TableConfig,
    schema: &'a TableSchema,
    /// `database.table`.
    name: String,
}

impl PlanCheck<'_> {
    fn at(&self, key: &str) -> String {
        format!("tables[{}].{key}", self.config.index)
    }

    /// The table has a primary key, and the key template uses exactly its columns.
    fn key(&self, problems: &mut Vec<String>) {
        let (schema, name) = (self.schema, &self.name);
        if schema.primary_key.is_empty() {
            problems.push(format!(
                "{}: {name} has no primary key; cachesync needs one to name each row's key",
                self.at("name")
            ));
        }
        let pk_names = schema.primary_key_names();
        let placeholders: Vec<&str> = self.config.key.columns().collect();
        for placeholder in &placeholders {
            if schema.position(placeholder).is_none() {
                problems.push(format!(
                    "{}: placeholder {{{placeholder}}} is not a column of {name}",
                    self.at("key")
                ));
            } else if !pk_names.is_empty() && !pk_names.contains(placeholder) {
                problems.push(format!(
                    "{}: placeholder {{{placeholder}}} is not a primary-key column of {name} (primary key: {})",
                    self.at("key"),
                    pk_names.join(", ")
                ));
            }
        }
        for pk in &pk_names {
            if !placeholders.contains(pk) {
                problems.push(format!(
                    "{}: must use every primary-key column of {name} so rows get distinct keys; add {{{pk}}}",
                    self.at("key")
                ));
            }
        }
    }

    /// The synced columns — the listed ones plus the primary key and the version column —
    /// as indices into the schema, in table order.
    fn synced_columns(&self, problems: &mut Vec<String>) -> Vec<usize> {
        let (config, schema, name) = (self.config, self.schema, &self.name);
        // Synced columns: the listed ones plus the primary key, in table order.
        let mut wanted = vec![config.columns.is_none(); schema.columns.len()];
        for &pk in &schema.primary_key {
            wanted[pk] = true;
        }
        for column in config.columns.iter().flatten() {
            match schema.position(column) {
                Some(i) => wanted[i] = true,
                None => problems.push(format!(
                    "{}: {column} is not a column of {name}",
                    self.at("columns")
                )),
            }
        }
        if let Some(version_column) = &config.version_column {
            match schema.position(version_column) {
                Some(i) => {
                    wanted[i] = true;
                    if let Ok(ty) = &schema.columns[i].ty
                        && !ty.is_integer()
                    {
                        problems.push(format!(
                            "{}: {version_column} of {name} must be an integer column",
                            self.at("version_column")
                        ));
                    }
                }
                None => problems.push(format!(
                    "{}: {version_column} is not a column of {name}",
                    self.at("version_column")
                )),
            }
        }
        (0..schema.columns.len()).filter(|&i| wanted[i]).collect()
    }

    /// The types of the `selected` columns, which must be encodable and must not clash
    /// with cachesync's version field.
    fn types_of(&self, selected: &[usize], problems: &mut Vec<String>) -> Vec<ColumnType> {
        let (config, schema, name) = (self.config, self.schema, &self.name);
        let mut types = Vec::with_capacity(selected.len());
        for &i in selected {
            let column = &schema.columns[i];
            if column.name == VERSION_FIELD {
                problems.push(format!(
                        "{}: column {VERSION_FIELD} of {name} clashes with cachesync's version field; leave it out with tables[{}].columns",
                        self.at("columns"),
                        config.index
                    ));
            }
            match &column.ty {
                    Ok(ty) => types.push(ty.clone()),
                    Err(declared) => problems.push(format!(
                        "{}: column {} of {name} has type {declared}, which cachesync cannot encode; list the columns to sync in tables[{}].columns",
                        self.at("columns"),
                        column.name,
                        config.index
                    )),
                }
        }
        types
    }
}

/// Quotes a MySQL identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }

    fn schema(keys: &[(&str, ColumnType)]) -> TableSchema {
        let mut columns: Vec<Column> = keys
            .iter()
            .map(|(name, ty)| Column {
                name: (*name).to_owned(),
                ty: Ok(ty.clone()),
            })
            .collect();
        columns.push(Column {
            name: "v".to_owned(),
            ty: Ok(ColumnType::Text),
        });
        TableSchema {
            database: "db".to_owned(),
            table: "t".to_owned(),
            primary_key: (0..keys.len()).collect(),
            columns,
        }
    }

    #[test]
    fn chunks_page_through_a_single_column_key() {
        let int = ColumnType::Int {
            unsigned: false,
            bytes: 4,
        };
        let sql = ChunkSql::new(&schema(&[("id", int)]), "`db`.`t`", "`id`, `v`");
        assert_eq!(
            sql.rows_first,
            "SELECT `id`, `v` FROM `db`.`t` ORDER BY `id` LIMIT ?"
        );
        assert_eq!(
            sql.rows_after,
            "SELECT `id`, `v` FROM `db`.`t` WHERE (`id` > ?) ORDER BY `id` LIMIT ?"
        );
        assert_eq!(
            sql.keys_after,
            "SELECT `id` FROM `db`.`t` WHERE (`id` > ?) ORDER BY `id` LIMIT ?"
        );
        assert_eq!(
            sql.rows_between,
            "SELECT `id`, `v` FROM `db`.`t` WHERE ((`id` > ?)) AND ((`id` <= ?)) ORDER BY `id`"
        );
        assert_eq!(sql.after_params(&[7]), vec![7]);
    }

    #[test]
    fn composite_and_decimal_keys_compare_lexicographically_and_exactly() {
        let sql = ChunkSql::new(
            &schema(&[
                ("shop", ColumnType::Text),
                ("amount", ColumnType::Decimal { scale: 2 }),
            ]),
            "`db`.`t`",
            "`shop`, `amount`, `v`",
        );
        assert_eq!(
            sql.rows_after,
            "SELECT `shop`, `amount`, `v` FROM `db`.`t` WHERE (`shop` > ?) OR (`shop` = ? AND \
             `amount` > CAST(? AS DECIMAL(65,2))) ORDER BY `shop`, `amount` LIMIT ?"
        );
        assert_eq!(
            sql.rows_upto,
            "SELECT `shop`, `amount`, `v` FROM `db`.`t` WHERE (`shop` < ?) OR (`shop` = ? AND \
             `amount` <= CAST(? AS DECIMAL(65,2))) ORDER BY `shop`, `amount`"
        );
        assert_eq!(sql.after_params(&["a", "1.5"]), vec!["a", "a", "1.5"]);
        assert!(sql.paged);
    }

    #[test]
    fn enum_keys_are_read_in_one_chunk() {
        let sql = ChunkSql::new(
            &schema(&[("kind", ColumnType::Enum(vec!["b".into(), "a".into()]))]),
            "`db`.`t`",
            "`kind`, `v`",
        );
        assert!(!sql.paged);
        assert_eq!(sql.rows_first, "SELECT `kind`, `v` FROM `db`.`t`");
        assert_eq!(sql.keys_first, "SELECT `kind` FROM `db`.`t`");
        assert_eq!(sql.rows_upto, sql.rows_first);
    }

    #[test]
    fn rows_by_other_columns() {
        let sql = TableSql::new(
            &schema(&[("a", ColumnType::Text)]),
            &["a".to_owned(), "v".to_owned()],
        );
        assert_eq!(
            sql.select_where(&["v".to_owned()]),
            "SELECT `a`, `v` FROM `db`.`t` WHERE `v` = ?"
        );
    }
}
