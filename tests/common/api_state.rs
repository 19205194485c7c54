//! What the API tests (HTTP in `tests/api.rs`, gRPC in `tests/grpc.rs`) serve from: the
//! dual-write strategy built in-process on one table `items` of a fresh database, keyed
//! `<prefix>:item:{id}` with the version column `version`, behind an [`ApiState`].

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use cachesync::api::{ApiState, Readiness};
use cachesync::model::table::SyncedTable;
use cachesync::redis::Applier;
use cachesync::strategy::{DualWrite, Strategy, StrategyKind};
use mysql_async::prelude::Queryable;
use redis::AsyncCommands;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::TestDb;

/// How a test's API is put together; the default is everything live and no token.
#[derive(Default)]
pub struct Setup {
    pub token: Option<&'static str>,
    /// The strategy's and `/readyz`'s MySQL (default: the test MariaDB).
    pub mysql_url: Option<String>,
    /// The Redis of `/readyz` and of the read path (default: the test Redis).
    pub readiness_redis_url: Option<String>,
}

/// The served table: its database and Redis key prefix. An API test's fixture derefs to
/// it.
pub struct Served {
    pub db: TestDb,
    /// The Redis key prefix of the table's rows.
    pub prefix: String,
    pub table: Arc<SyncedTable>,
}

impl Served {
    /// `database.items`.
    pub fn table_name(&self) -> String {
        format!("{}.items", self.db.name)
    }

    /// What Redis holds for row `id`.
    pub async fn cached(&self, id: impl std::fmt::Display) -> Option<Vec<u8>> {
        let mut redis = super::redis_conn().await;
        redis
            .get(format!("{}:item:{id}", self.prefix))
            .await
            .unwrap()
    }

    pub async fn row_count(&mut self) -> u64 {
        self.db
            .conn
            .query_first("SELECT COUNT(*) FROM items")
            .await
            .unwrap()
            .unwrap()
    }
}

/// A served table, an API serving it on `127.0.0.1:0`, and `api`: that API's client side
/// (what each test file adds). Derefs to the [`Served`] table.
pub struct Fixture<C> {
    pub served: Served,
    pub api: C,
    /// Cancelled by [`Fixture::finish`]; a test may cancel it earlier to see the API
    /// shut down.
    pub shutdown: CancellationToken,
    server: JoinHandle<cachesync::Result<()>>,
}

impl<C> Fixture<C> {
    /// Spawns `serve` on a listener at `127.0.0.1:0` with a shutdown token until
    /// [`Fixture::finish`]; `connect` makes the client side from the bound address.
    pub async fn start<S, F>(
        served: Served,
        serve: S,
        connect: impl AsyncFnOnce(SocketAddr) -> C,
    ) -> Fixture<C>
    where
        S: FnOnce(TcpListener, CancellationToken) -> F,
        F: Future<Output = cachesync::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, shutdown.clone()));
        Fixture {
            served,
            api: connect(addr).await,
            shutdown,
            server,
        }
    }

    /// Stops the API (it must stop cleanly within 10 s of its shutdown), then drops the
    /// database and the table's keys.
    pub async fn finish(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the API stops within 10 s of shutdown")
            .unwrap()
            .expect("the API stops cleanly");
        super::clear_redis_prefix(&self.served.prefix).await;
        self.served.db.drop_db().await;
    }
}

impl<C> Deref for Fixture<C> {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
    }
}

impl<C> DerefMut for Fixture<C> {
    fn deref_mut(&mut self) -> &mut Served {
        &mut self.served
    }
}

/// A fresh database named after `name` with `items` made by `table_sql`, served by the
/// dual-write strategy as `setup` says: the table, and the state an API serves it from.
pub async fn dual_write(name: &str, table_sql: &str, setup: Setup) -> (Served, Arc<ApiState>) {
    let mut db = TestDb::create(name).await;
    db.exec(table_sql).await;
    let prefix = super::unique(name);
    let config = super::config_with_table(
        "dual-write",
        json!({
            "name": format!("{}.items", db.name),
            "key": format!("{prefix}:item:{{id}}"),
            "version_column": "version",
        }),
    );
    let table = Arc::new(super::synced_table(&mut db, &config).await);
    let mysql_url = setup.mysql_url.unwrap_or_else(|| config.mysql_url.clone());
    let pool = cachesync::mysql::pool(&mysql_url).unwrap();
    let applier = Applier::connect(
        &config.redis_url,
        config.tombstone_ttl,
        StrategyKind::DualWrite.name(),
    )
    .await
    .unwrap();
    let strategy = Arc::new(Strategy::DualWrite(DualWrite::new(pool.clone(), applier)));
    let readiness = Readiness::new(
        pool,
        &mysql_url,
        setup
            .readiness_redis_url
            .as_deref()
            .unwrap_or(&config.redis_url),
        None,
    )
    .unwrap();
    let state = ApiState::new(
        strategy,
        vec![table.clone()],
        readiness,
        setup.token.map(str::to_owned),
    );
    (Served { db, prefix, table }, state)
}
