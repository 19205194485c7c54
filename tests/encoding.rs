//! The encoding contract against a real MariaDB: every column type of the contract (the
//! spatial types included) is written once, then read back two ways — by `SELECT` (what
//! dual-write, snapshots and `verify` see) and from the row binlog (what the binlog
//! strategy sees) — and both must encode to the exact bytes the contract specifies, for
//! `json` and for `hash`.
//!
//! Needs the dedicated MariaDB with `binlog_format=ROW`, `binlog_row_image=FULL`,
//! `binlog_row_metadata=FULL` from `scripts/services.sh up`.

mod common;

use common::all_types;

use std::collections::BTreeMap;

use cachesync::model::cell::Format;
use cachesync::model::cell::{Cell, Encoded};
use cachesync::model::table::SyncedTable;
use futures_util::StreamExt;
use mysql_async::BinlogStreamRequest;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;

async fn plan(db: &mut common::TestDb, format: &str) -> SyncedTable {
    let name = format!("{}.all_types", db.name);
    let config = common::config_with_table(
        "binlog",
        serde_json::json!({ "name": name, "key": "t:{id}", "format": format }),
    );
    common::synced_table(db, &config).await
}

async fn rows_by_select(db: &mut common::TestDb, table: &SyncedTable) -> BTreeMap<u64, Vec<Cell>> {
    let rows: Vec<mysql_async::Row> = db
        .conn
        .exec(format!("{} ORDER BY id", table.sql.select_all), ())
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let cells = table.decode_sql_row(r).unwrap();
            let Cell::UInt(id) = cells[0] else {
                panic!("id is unsigned")
            };
            (id, cells)
        })
        .collect()
}

/// Reads the binlog from `(file, pos)` to its end and decodes the rows written to
/// `table`.
async fn rows_by_binlog(table: &SyncedTable, file: &str, pos: u64) -> BTreeMap<u64, Vec<Cell>> {
    let conn = common::mysql_conn().await;
    // A replica id no other test uses: the server drops an older connection with the same id.
    let server_id = 1_000_000 + (std::process::id() % 1_000_000);
    let request = BinlogStreamRequest::new(server_id)
        .with_filename(file.as_bytes())
        .with_pos(pos)
        .with_non_blocking();
    let mut stream = conn.get_binlog_stream(request).await.unwrap();
    let mut rows = BTreeMap::new();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        let Some(EventData::RowsEvent(rows_event)) = event.read_data().unwrap() else {
            continue;
        };
        let tme = stream
            .get_tme(rows_event.table_id())
            .expect("table map precedes rows");
        if tme.database_name() != table.schema.database || tme.table_name() != table.schema.table {
            continue;
        }
        for row in rows_event.rows(tme) {
            let (_before, after) = row.unwrap();
            let cells = table
                .decode_binlog_row(&after.expect("an insert has an after image"))
                .unwrap();
            let Cell::UInt(id) = cells[0] else {
                panic!("id is unsigned")
            };
            rows.insert(id, cells);
        }
    }
    rows
}

fn json_of(table: &SyncedTable, row: &[Cell]) -> String {
    match table.encoder.encode(row, None) {
        Encoded::Json(bytes) => String::from_utf8(bytes).unwrap(),
        Encoded::Hash(_) => panic!("json table"),
    }
}

#[tokio::test]
async fn sql_and_binlog_rows_encode_to_the_contract_bytes() {
    let mut db = common::TestDb::create("encoding").await;
    db.exec(all_types::CREATE).await;
    let (file, pos): (String, u64) = {
        let status: mysql_async::Row = db.conn.query_first("SHOW MASTER STATUS").await.unwrap().expect(
            "SHOW MASTER STATUS is empty: the test MariaDB must run with --log-bin (scripts/services.sh up)",
        );
        (status.get(0).unwrap(), status.get(1).unwrap())
    };
    db.exec(all_types::INSERT).await;

    let json_table = plan(&mut db, "json").await;
    let by_select = rows_by_select(&mut db, &json_table).await;
    let by_binlog = rows_by_binlog(&json_table, &file, pos).await;
    let expected = all_types::expected_json();
    assert_eq!(
        by_select.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        by_binlog.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (id, want) in &expected {
        assert_eq!(
            &json_of(&json_table, &by_select[id]),
            want,
            "row {id} read by SELECT"
        );
        assert_eq!(
            &json_of(&json_table, &by_binlog[id]),
            want,
            "row {id} read from the binlog"
        );
        // Valid JSON that a reader can parse back.
        let parsed: serde_json::Value = serde_json::from_str(want).unwrap();
        assert!(parsed.is_object());
    }

    // hash: the same text per field, binary raw, NULL columns absent.
    let hash_table = plan(&mut db, "hash").await;
    assert_eq!(hash_table.encoder.format(), Format::Hash);
    for id in expected.keys() {
        let from_select = hash_table.encoder.encode(&by_select[id], Some(9));
        let from_binlog = hash_table.encoder.encode(&by_binlog[id], Some(9));
        assert_eq!(
            from_select, from_binlog,
            "row {id}: hash from SELECT and binlog differ"
        );
    }
    let Encoded::Hash(fields) = hash_table.encoder.encode(&by_select[&1], None) else {
        panic!("hash table")
    };
    let fields: BTreeMap<String, Vec<u8>> = fields
        .chunks(2)
        .map(|kv| (String::from_utf8(kv[0].clone()).unwrap(), kv[1].clone()))
        .collect();
    let mut uuid = vec![0x00, 0x01, 0xff];
    uuid.resize(16, 0);
    assert_eq!(fields["uuid"], uuid);
    assert_eq!(fields["amount"], b"-12345678901234567890.0123456789");
    assert_eq!(fields["u64"], b"18446744073709551615");
    assert_eq!(fields["t6"], b"-838:59:59.000000");
    assert_eq!(
        fields["j"],
        br#"{"a":null,"b":[1,2.5,"x"],"nested":{"z":true}}"#
    );
    assert_eq!(fields["txt"], "🦀 crab ✓ 𝄞".as_bytes());
    assert_eq!(fields["b10"], b"1023");
    // Spatial values: Extended WKT, the same text as in json.
    assert_eq!(fields["pt"], b"SRID=4326;POINT(-122.4194 37.7749)");
    assert_eq!(fields["mpt"], b"SRID=0;MULTIPOINT((1 2),(3 4))");
    let Encoded::Hash(null_row) = hash_table.encoder.encode(&by_select[&2], None) else {
        panic!("hash table")
    };
    assert_eq!(
        null_row,
        vec![b"id".to_vec(), b"2".to_vec()],
        "NULL columns are absent"
    );

    db.drop_db().await;
}
