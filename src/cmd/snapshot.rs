//! `cachesync snapshot`: loads every configured table into Redis from one consistent
//! read and stores its binlog position as the checkpoint, so the next `run` tails from
//! there. For a first start, after a purged binlog, or to rebuild a damaged cache.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::strategy::Binlog;
use crate::strategy::binlog::position::BinlogPosition;

/// Runs the snapshot of the binlog strategy; other strategies have no position to record.
pub async fn snapshot(config: &Config) -> Result<BinlogPosition> {
    if !config.strategy.tails_binlog() {
        return Err(Error::Config(vec![format!(
            "strategy: snapshot loads the tables for the binlog strategy and records where to tail from; \
             the config says {:?}",
            config.strategy.name()
        )]));
    }
    let services = super::run::connect(config).await?;
    let position = Binlog::new(&services, config.binlog.clone())
        .snapshot()
        .await;
    services.pool.disconnect().await.ok();
    position
}
