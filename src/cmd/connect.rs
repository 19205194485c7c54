//! Connecting to what the config names, for every command that works on it (`run`,
//! `snapshot`, `verify`, `doctor`, the benchmark): MySQL and Redis at once, the tables
//! planned against MySQL's schema, and what the strategy needs of the MySQL user.

use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::table::SyncedTable;
use crate::mysql::grants::{self, Privilege};
use crate::redis::Applier;
use crate::strategy::Services;

/// Connects to MySQL and Redis concurrently and checks the configured tables against
/// MySQL; every failure is reported.
pub async fn connect(config: &Config) -> Result<Services> {
    let pool = crate::mysql::pool(&config.mysql_url)?;
    let (tables, applier) = tokio::join!(
        crate::mysql::schema::load_tables(&config.tables, &pool, &config.mysql_url),
        Applier::connect(
            &config.redis_url,
            config.tombstone_ttl,
            config.strategy.name()
        )
    );
    match (tables, applier) {
        (Ok(tables), Ok(applier)) => Ok(Services {
            pool,
            mysql_url: config.mysql_url.clone(),
            redis_url: config.redis_url.clone(),
            tables,
            applier,
            keys: config.deployment_keys(),
            snapshot: config.snapshot.clone(),
        }),
        (Err(a), Err(b)) => Err(Error::Many(vec![a, b])),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// The privileges the configured MySQL user needs on every synced table: `SELECT`
/// (snapshot, `verify`, reads, a write's read-back), plus `INSERT`, `UPDATE` and `DELETE`
/// when the application's writes go through cachesync (the strategy needs the daemon for
/// its writes, or an `[api]` or `[grpc]` serves them).
pub fn table_privileges(config: &Config) -> Vec<Privilege> {
    let mut wanted = vec![Privilege::Select];
    if config.strategy.writes_need_the_daemon() || config.api.is_some() || config.grpc.is_some() {
        wanted.extend([Privilege::Insert, Privilege::Update, Privilege::Delete]);
    }
    wanted
}

/// What [`table_privileges`] finds missing, one line per table in the config's style,
/// each with the `GRANT` that fixes it; empty when nothing is.
pub async fn missing_privileges(
    config: &Config,
    pool: &mysql_async::Pool,
    tables: &[Arc<SyncedTable>],
) -> Result<Vec<String>> {
    let wanted = table_privileges(config);
    let mut conn = crate::mysql::get_conn(pool, &config.mysql_url).await?;
    let grantee = grants::current_user(&mut conn).await;
    let mut problems = Vec::new();
    for table in tables {
        let missing = grants::missing(&mut conn, table, &wanted).await?;
        if missing.is_empty() {
            continue;
        }
        let names: Vec<&str> = missing.iter().map(|p| p.name()).collect();
        let why = if missing == [Privilege::Select] {
            "to read its rows"
        } else {
            "for the application's writes through cachesync"
        };
        problems.push(format!(
            "tables[{}].name: MySQL user {grantee} lacks {} on {}, which strategy {} needs {why}: {}",
            table.config.index,
            names.join(", "),
            table.name(),
            config.strategy,
            grants::grant_statement(&missing, &table.sql.table, &grantee)
        ));
    }
    Ok(problems)
}
