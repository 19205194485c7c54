//! What the configured MySQL user may do to a synced table, checked without changing
//! anything.
//!
//! `EXPLAIN` of a statement needs the statement's own privileges — MySQL and MariaDB
//! check them as for the statement itself — but runs nothing. So grants through roles,
//! database wildcards and column privileges count exactly as the server counts them,
//! which reading `SHOW GRANTS` would not: a start-up check that parsed grants would
//! refuse users whose rights come from a role.

use mysql_async::prelude::Queryable;

use crate::error::{Error, Result};
use crate::model::table::{SyncedTable, quote_ident};

/// A table privilege cachesync may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
}

impl Privilege {
    /// The name as `GRANT` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
        }
    }

    /// A statement that needs exactly this privilege on `table`, for `EXPLAIN`.
    fn probe(self, table: &SyncedTable) -> String {
        let t = &table.sql.table;
        let keys: Vec<String> = table
            .schema
            .primary_key_names()
            .iter()
            .map(|c| quote_ident(c))
            .collect();
        let nulls = vec!["NULL"; keys.len()].join(", ");
        match self {
            Privilege::Select => table.sql.select_all.clone(),
            Privilege::Insert => format!("INSERT INTO {t} ({}) VALUES ({nulls})", keys.join(", ")),
            // `SET c = NULL` reads no column, so it needs UPDATE alone.
            Privilege::Update => {
                let first = keys.first().map_or("`id`", String::as_str);
                format!("UPDATE {t} SET {first} = NULL WHERE 1 = 0")
            }
            Privilege::Delete => format!("DELETE FROM {t} WHERE 1 = 0"),
        }
    }
}

/// Whether a server error says the user lacks a privilege (table, column, database or
/// global), rather than that something else went wrong.
pub fn is_privilege_error(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1142 | 1143 | 1227))
}

/// The privileges among `wanted` that the connection's user lacks on `table`.
pub async fn missing(
    conn: &mut mysql_async::Conn,
    table: &SyncedTable,
    wanted: &[Privilege],
) -> Result<Vec<Privilege>> {
    let mut missing = Vec::new();
    for &privilege in wanted {
        let explain = format!("EXPLAIN {}", privilege.probe(table));
        match conn.query_drop(&explain).await {
            Ok(()) => {}
            Err(e) if is_privilege_error(&e) => missing.push(privilege),
            Err(e) => {
                return Err(Error::mysql(
                    format!(
                        "checking the {} privilege on {}",
                        privilege.name(),
                        table.name()
                    ),
                    e,
                ));
            }
        }
    }
    Ok(missing)
}

/// The connection's user as `GRANT … TO` names it: `'app'@'%'`.
pub async fn current_user(conn: &mut mysql_async::Conn) -> String {
    let user: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .ok()
        .flatten();
    grantee(user.as_deref().unwrap_or("the configured user@%"))
}

/// `app@%` (as `CURRENT_USER()` answers) → `'app'@'%'`.
fn grantee(user: &str) -> String {
    let (name, host) = user.rsplit_once('@').unwrap_or((user, "%"));
    format!(
        "'{}'@'{}'",
        name.replace('\'', "''"),
        host.replace('\'', "''")
    )
}

/// `GRANT SELECT, INSERT ON `db`.`t` TO 'app'@'%'`.
pub fn grant_statement(privileges: &[Privilege], on: &str, grantee: &str) -> String {
    let names: Vec<&str> = privileges.iter().map(|p| p.name()).collect();
    format!("GRANT {} ON {on} TO {grantee}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grantees_and_grants_read_as_sql() {
        assert_eq!(grantee("app@%"), "'app'@'%'");
        assert_eq!(grantee("o'neil@10.0.0.1"), "'o''neil'@'10.0.0.1'");
        assert_eq!(
            grant_statement(
                &[Privilege::Insert, Privilege::Delete],
                "`shop`.`users`",
                "'app'@'%'"
            ),
            "GRANT INSERT, DELETE ON `shop`.`users` TO 'app'@'%'"
        );
    }
}
