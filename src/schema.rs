//! What the configured tables look like in MySQL, and the per-table plan built from it.
//!
//! [`load_tables`] reads `information_schema` once at start-up, checks every configured
//! table against it (exists, has a primary key, key placeholders are primary-key columns,
//! listed columns exist and have types cachesync can encode) and reports *all* problems in
//! the config's style (`tables[1].key: placeholder {idd} is not a column of shop.users`).
//! The result is one [`SyncedTable`] per entry: everything needed to turn a row into a
//! Redis key and value without further look-ups.

use std::sync::Arc;

use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;

use crate::config::{Config, TableConfig, VERSION_FIELD};
use crate::error::{Error, Result};
use crate::keys::BoundKey;
use crate::row::{Cell, RowEncoder};

/// A column's declared type, as far as encoding cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// TINYINT (1 byte) … BIGINT (8 bytes).
    Int {
        unsigned: bool,
        bytes: u8,
    },
    Decimal {
        scale: u32,
    },
    Float,
    Double,
    Date,
    DateTime {
        fsp: u8,
    },
    /// Shown in UTC.
    Timestamp {
        fsp: u8,
    },
    Time {
        fsp: u8,
    },
    Year,
    /// CHAR, VARCHAR, TEXT.
    Text,
    /// BINARY, VARBINARY, BLOB. `BINARY(n)` is padded to `n` bytes because the binlog
    /// drops its trailing zero bytes while `SELECT` returns them.
    Binary {
        pad_to: Option<usize>,
    },
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit,
    /// MySQL `JSON`, or MariaDB's `JSON` alias (`LONGTEXT CHECK (json_valid(col))`).
    Json,
}

/// The `information_schema.COLUMNS` facts a [`ColumnType`] is made from.
#[derive(Debug, Clone, Default)]
pub struct ColumnFacts {
    pub data_type: String,
    pub column_type: String,
    pub numeric_scale: Option<u64>,
    pub datetime_precision: Option<u64>,
    pub octet_length: Option<u64>,
    /// MariaDB declares JSON columns as LONGTEXT with a `json_valid` check.
    pub has_json_check: bool,
}

impl ColumnType {
    /// Maps a column's declared type; `Err` names a type cachesync cannot encode.
    pub fn from_facts(facts: &ColumnFacts) -> std::result::Result<ColumnType, String> {
        let unsigned = facts.column_type.contains("unsigned");
        let fsp = facts.datetime_precision.unwrap_or(0).min(6) as u8;
        let ty = match facts.data_type.as_str() {
            "tinyint" => ColumnType::Int { unsigned, bytes: 1 },
            "smallint" => ColumnType::Int { unsigned, bytes: 2 },
            "mediumint" => ColumnType::Int { unsigned, bytes: 3 },
            "int" | "integer" => ColumnType::Int { unsigned, bytes: 4 },
            "bigint" => ColumnType::Int { unsigned, bytes: 8 },
            "decimal" | "numeric" => ColumnType::Decimal {
                scale: facts.numeric_scale.unwrap_or(0) as u32,
            },
            "float" => ColumnType::Float,
            "double" | "real" => ColumnType::Double,
            "date" => ColumnType::Date,
            "datetime" => ColumnType::DateTime { fsp },
            "timestamp" => ColumnType::Timestamp { fsp },
            "time" => ColumnType::Time { fsp },
            "year" => ColumnType::Year,
            "longtext" if facts.has_json_check => ColumnType::Json,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                ColumnType::Text
            }
            "binary" => ColumnType::Binary {
                pad_to: facts.octet_length.map(|n| n as usize),
            },
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColumnType::Binary { pad_to: None }
            }
            "enum" => ColumnType::Enum(parse_members(&facts.column_type)),
            "set" => ColumnType::Set(parse_members(&facts.column_type)),
            "bit" => ColumnType::Bit,
            "json" => ColumnType::Json,
            _ => return Err(facts.column_type.clone()),
        };
        Ok(ty)
    }

    /// Whether values of this type can serve as a version (an integer).
    pub fn is_integer(&self) -> bool {
        matches!(self, ColumnType::Int { .. })
    }
}

/// The members of `enum('a','b''c')` / `set(...)`, unquoted.
fn parse_members(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let inner = column_type[open + 1..]
        .strip_suffix(')')
        .unwrap_or(&column_type[open + 1..]);
    let mut members = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                Some('\'') | None => break,
                Some(c) => member.push(c),
            }
        }
        members.push(member);
    }
    members
}

/// A column of a table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `Err` holds the declared type when cachesync cannot encode it; such a column may
    /// exist in the table as long as it is not synced.
    pub ty: std::result::Result<ColumnType, String>,
}

/// A table as `information_schema` describes it.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub database: String,
    pub table: String,
    /// All columns, in table order.
    pub columns: Vec<Column>,
    /// Indices into `columns`, in key order.
    pub primary_key: Vec<usize>,
}

/// One row of the `information_schema.COLUMNS` query in [`TableSchema::load`].
type ColumnRow = (
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    String,
);

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

    /// Reads one table's description; `Ok(None)` when it does not exist.
    pub async fn load(
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
    /// `SELECT <synced columns> FROM <table>`, quoted.
    pub select_sql: String,
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

    /// MySQL's estimate of the table's row count (for progress logs), if it has one.
    pub async fn estimated_rows(&self, conn: &mut mysql_async::Conn) -> Option<u64> {
        conn.exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&self.schema.database, &self.schema.table),
        )
        .await
        .ok()
        .flatten()
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

    /// Decodes a SQL result row holding the synced columns (as `select_sql` returns them).
    pub fn decode_sql_row(&self, row: &mysql_async::Row) -> Result<Vec<Cell>> {
        (0..self.types.len())
            .map(|i| {
                let value = row.as_ref(i).unwrap_or(&mysql_async::Value::NULL);
                crate::decode::from_sql(&self.types[i], value).map_err(|reason| Error::Decode {
                    table: self.name(),
                    column: self.encoder.names()[i].clone(),
                    reason,
                })
            })
            .collect()
    }

    /// Decodes a binlog row image (all table columns, table order) into the synced cells.
    pub fn decode_binlog_row(&self, row: &BinlogRow) -> Result<Vec<Cell>> {
        if row.len() != self.schema.columns.len() {
            return Err(Error::Decode {
                table: self.name(),
                column: "*".to_owned(),
                reason: format!(
                    "the binlog row has {} columns but the table had {} when cachesync read its schema",
                    row.len(),
                    self.schema.columns.len()
                ),
            });
        }
        self.selected
            .iter()
            .zip(&self.types)
            .enumerate()
            .map(|(i, (&column, ty))| {
                let value = row.as_ref(column).ok_or_else(|| Error::Decode {
                    table: self.name(),
                    column: self.encoder.names()[i].clone(),
                    reason: "missing from the binlog row image (binlog_row_image must be FULL)"
                        .to_owned(),
                })?;
                crate::decode::from_binlog(ty, value).map_err(|reason| Error::Decode {
                    table: self.name(),
                    column: self.encoder.names()[i].clone(),
                    reason,
                })
            })
            .collect()
    }

    /// Builds the plan for `config` from `schema`, or lists what does not fit.
    pub fn plan(
        config: &TableConfig,
        schema: TableSchema,
    ) -> std::result::Result<SyncedTable, Vec<String>> {
        let at = |key: &str| format!("tables[{}].{key}", config.index);
        let name = config.qualified_name();
        let mut problems = Vec::new();

        if schema.primary_key.is_empty() {
            problems.push(format!(
                "{}: {name} has no primary key; cachesync needs one to name each row's key",
                at("name")
            ));
        }
        let pk_names = schema.primary_key_names();
        let placeholders: Vec<&str> = config.key.columns().collect();
        for placeholder in &placeholders {
            if schema.position(placeholder).is_none() {
                problems.push(format!(
                    "{}: placeholder {{{placeholder}}} is not a column of {name}",
                    at("key")
                ));
            } else if !pk_names.is_empty() && !pk_names.contains(placeholder) {
                problems.push(format!(
                    "{}: placeholder {{{placeholder}}} is not a primary-key column of {name} (primary key: {})",
                    at("key"),
                    pk_names.join(", ")
                ));
            }
        }
        for pk in &pk_names {
            if !placeholders.contains(pk) {
                problems.push(format!(
                    "{}: must use every primary-key column of {name} so rows get distinct keys; add {{{pk}}}",
                    at("key")
                ));
            }
        }

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
                    at("columns")
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
                            at("version_column")
                        ));
                    }
                }
                None => problems.push(format!(
                    "{}: {version_column} is not a column of {name}",
                    at("version_column")
                )),
            }
        }
        let selected: Vec<usize> = (0..schema.columns.len()).filter(|&i| wanted[i]).collect();
        let mut types = Vec::with_capacity(selected.len());
        for &i in &selected {
            let column = &schema.columns[i];
            if column.name == VERSION_FIELD {
                problems.push(format!(
                    "{}: column {VERSION_FIELD} of {name} clashes with cachesync's version field; leave it out with tables[{}].columns",
                    at("columns"),
                    config.index
                ));
            }
            match &column.ty {
                Ok(ty) => types.push(ty.clone()),
                Err(declared) => problems.push(format!(
                    "{}: column {} of {name} has type {declared}, which cachesync cannot encode; list the columns to sync in tables[{}].columns",
                    at("columns"),
                    column.name,
                    config.index
                )),
            }
        }
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
            .map_err(|c| vec![format!("{}: placeholder {{{c}}} is not synced", at("key"))])?;
        let version_column = config
            .version_column
            .as_ref()
            .and_then(|v| names.iter().position(|n| n == v));
        let select_sql = format!(
            "SELECT {} FROM {}.{}",
            names
                .iter()
                .map(|n| quote_ident(n))
                .collect::<Vec<_>>()
                .join(", "),
            quote_ident(&schema.database),
            quote_ident(&schema.table)
        );
        Ok(SyncedTable {
            encoder: RowEncoder::new(config.format, names),
            config: config.clone(),
            schema,
            selected,
            types,
            key,
            version_column,
            select_sql,
        })
    }
}

/// Quotes a MySQL identifier with backticks.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Checks every configured table against MySQL and plans it. All problems of all tables
/// come back together.
pub async fn load_tables(
    config: &Config,
    pool: &mysql_async::Pool,
) -> Result<Vec<Arc<SyncedTable>>> {
    let mut conn = crate::mysql::get_conn(pool, &config.mysql_url).await?;
    let mut problems = Vec::new();
    let mut tables = Vec::new();
    for table in &config.tables {
        match TableSchema::load(&mut conn, &table.database, &table.table).await? {
            None => problems.push(format!(
                "tables[{}].name: table {} does not exist in MySQL at {}",
                table.index,
                table.qualified_name(),
                crate::redact::redact_url(&config.mysql_url)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(data_type: &str, column_type: &str) -> ColumnFacts {
        ColumnFacts {
            data_type: data_type.into(),
            column_type: column_type.into(),
            ..ColumnFacts::default()
        }
    }

    #[test]
    fn maps_declared_types() {
        assert_eq!(
            ColumnType::from_facts(&facts("bigint", "bigint(20) unsigned")),
            Ok(ColumnType::Int {
                unsigned: true,
                bytes: 8
            })
        );
        assert_eq!(
            ColumnType::from_facts(&ColumnFacts {
                octet_length: Some(16),
                ..facts("binary", "binary(16)")
            }),
            Ok(ColumnType::Binary { pad_to: Some(16) })
        );
        assert_eq!(
            ColumnType::from_facts(&ColumnFacts {
                has_json_check: true,
                ..facts("longtext", "longtext")
            }),
            Ok(ColumnType::Json)
        );
        assert_eq!(
            ColumnType::from_facts(&facts("point", "point")),
            Err("point".to_owned())
        );
    }

    #[test]
    fn parses_enum_members_with_quotes_and_commas() {
        assert_eq!(
            parse_members("enum('a','it''s','x,y','')"),
            vec!["a", "it's", "x,y", ""]
        );
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }
}
