//! The dual-write strategy through the `SyncStrategy` trait, against real MariaDB and
//! Redis: a write lands in MySQL, and Redis then holds exactly what a `SELECT` of the
//! committed row encodes to (defaults and coercions included); deletes remove the key;
//! bad writes are refused before touching either store.
//!
//! Run `scripts/services.sh up` first. Each test uses its own database and key prefix.

mod common;

use std::sync::Arc;

use cachesync::applier::{Applier, Op};
use cachesync::row::Encoded;
use cachesync::schema::SyncedTable;
use cachesync::strategy::{DualWrite, RowWrite, StrategyKind, SyncStrategy};
use mysql_async::Value;
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;

struct Fixture {
    db: common::TestDb,
    prefix: String,
    table: Arc<SyncedTable>,
    strategy: DualWrite,
}

async fn fixture() -> Fixture {
    let mut db = common::TestDb::create("dualwrite").await;
    db.exec(
        "CREATE TABLE users (
            id BIGINT UNSIGNED PRIMARY KEY,
            email VARCHAR(255) NOT NULL,
            balance DECIMAL(12,4) NOT NULL DEFAULT 0,
            created_at DATETIME(6) NOT NULL DEFAULT '2020-01-01 00:00:00.000001',
            version BIGINT UNSIGNED NOT NULL DEFAULT 1
        )",
    )
    .await;
    let prefix = common::unique("dw");
    let config = common::config_with_table(
        "dual-write",
        serde_json::json!({
            "name": format!("{}.users", db.name),
            "key": format!("{prefix}:user:{{id}}"),
            "version_column": "version",
        }),
    );
    let table = Arc::new(common::synced_table(&mut db, &config).await);
    let pool = cachesync::mysql::pool(&config.mysql_url).unwrap();
    let applier = Applier::connect(
        &config.redis_url,
        config.tombstone_ttl,
        StrategyKind::DualWrite,
    )
    .await
    .unwrap();
    Fixture {
        db,
        prefix,
        table,
        strategy: DualWrite::new(pool, applier),
    }
}

impl Fixture {
    fn upsert(&self, values: &[(&str, Value)]) -> RowWrite {
        RowWrite {
            table: self.table.clone(),
            op: Op::Upsert,
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// What Redis should hold for row `id`: the SELECT of the committed row, encoded.
    async fn expected(&mut self, id: u64) -> Option<Vec<u8>> {
        let row: Option<mysql_async::Row> = self
            .db
            .conn
            .exec_first(format!("{} WHERE id = ?", self.table.select_sql), (id,))
            .await
            .unwrap();
        let cells = self.table.decode_sql_row(&row?).unwrap();
        match self
            .table
            .encoder
            .encode(&cells, self.table.version_of(&cells))
        {
            Encoded::Json(bytes) => Some(bytes),
            Encoded::Hash(_) => unreachable!("json table"),
        }
    }

    async fn cached(&self, id: u64) -> Option<Vec<u8>> {
        let mut redis = common::redis_conn().await;
        redis
            .get(format!("{}:user:{id}", self.prefix))
            .await
            .unwrap()
    }

    async fn finish(self) {
        common::clear_redis_prefix(&self.prefix).await;
        self.db.drop_db().await;
    }
}

#[tokio::test]
async fn a_write_lands_in_mysql_and_redis_as_select_encodes_it() {
    let mut f = fixture().await;
    let receipt = f
        .strategy
        .write(f.upsert(&[("id", Value::UInt(1)), ("email", "ada@example.com".into())]))
        .await
        .unwrap();
    assert_eq!(receipt.version, Some(1), "the default version is read back");
    assert_eq!(receipt.applied.unwrap().written, 1);
    let expected = f.expected(1).await.unwrap();
    assert_eq!(
        String::from_utf8(expected.clone()).unwrap(),
        r#"{"_cachesync_v":1,"id":1,"email":"ada@example.com","balance":"0.0000","created_at":"2020-01-01 00:00:00.000001","version":1}"#,
        "defaults and DECIMAL scale come from MySQL, not from the request"
    );
    assert_eq!(f.cached(1).await, Some(expected));

    // An update with a newer version replaces it. (An upsert is an INSERT ... ON
    // DUPLICATE KEY UPDATE, so it names every NOT NULL column without a default.)
    f.strategy
        .write(f.upsert(&[
            ("id", Value::UInt(1)),
            ("email", "ada@example.com".into()),
            ("balance", "12.5".into()),
            ("version", Value::UInt(2)),
        ]))
        .await
        .unwrap();
    let expected = f.expected(1).await.unwrap();
    assert!(String::from_utf8_lossy(&expected).contains(r#""balance":"12.5000""#));
    assert_eq!(f.cached(1).await, Some(expected));
    f.finish().await;
}

#[tokio::test]
async fn a_delete_removes_the_row_and_its_key() {
    let mut f = fixture().await;
    f.strategy
        .write(f.upsert(&[("id", Value::UInt(5)), ("email", "x@y".into())]))
        .await
        .unwrap();
    assert!(f.cached(5).await.is_some());
    let delete = RowWrite {
        table: f.table.clone(),
        op: Op::Delete,
        values: vec![("id".to_owned(), Value::UInt(5))],
    };
    f.strategy.write(delete).await.unwrap();
    assert_eq!(f.expected(5).await, None, "gone from MySQL");
    assert_eq!(f.cached(5).await, None, "gone from Redis");
    f.finish().await;
}

#[tokio::test]
async fn injection_shaped_values_are_stored_verbatim() {
    let mut f = fixture().await;
    let nasty = "x'); DROP TABLE users; -- \\ \" `";
    f.strategy
        .write(f.upsert(&[("id", Value::UInt(9)), ("email", nasty.into())]))
        .await
        .unwrap();
    let email: Option<String> =
        f.db.conn
            .exec_first("SELECT email FROM users WHERE id = 9", ())
            .await
            .unwrap();
    assert_eq!(email.as_deref(), Some(nasty));
    let cached: serde_json::Value = serde_json::from_slice(&f.cached(9).await.unwrap()).unwrap();
    assert_eq!(cached["email"], nasty);
    f.finish().await;
}

#[tokio::test]
async fn bad_writes_are_refused_before_touching_either_store() {
    let mut f = fixture().await;
    let unknown_column = f
        .strategy
        .write(f.upsert(&[("id", Value::UInt(3)), ("emial", "a@b".into())]))
        .await
        .unwrap_err();
    assert!(
        unknown_column
            .to_string()
            .contains("emial is not a column of"),
        "{unknown_column}"
    );
    let no_key = f
        .strategy
        .write(f.upsert(&[("email", "a@b".into())]))
        .await
        .unwrap_err();
    assert!(
        no_key.to_string().contains("primary-key column id"),
        "{no_key}"
    );
    assert_eq!(f.expected(3).await, None);
    assert_eq!(f.cached(3).await, None);
    f.finish().await;
}
