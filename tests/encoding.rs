//! The encoding contract against a real MariaDB: every column type of the contract is
//! written once, then read back two ways — by `SELECT` (what dual-write, snapshots and
//! `verify` see) and from the row binlog (what the binlog strategy sees) — and both must
//! encode to the exact bytes the contract specifies, for `json` and for `hash`.
//!
//! Needs the dedicated MariaDB with `binlog_format=ROW`, `binlog_row_image=FULL`,
//! `binlog_row_metadata=FULL` from `scripts/services.sh up`.

mod common;

use std::collections::BTreeMap;

use cachesync::config::Format;
use cachesync::row::{Cell, Encoded};
use cachesync::schema::SyncedTable;
use futures_util::StreamExt;
use mysql_async::BinlogStreamRequest;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;

const CREATE: &str = "CREATE TABLE all_types (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    uuid BINARY(16) NULL,
    vb VARBINARY(32) NULL,
    bl BLOB NULL,
    dt6 DATETIME(6) NULL,
    dt0 DATETIME NULL,
    t6 TIME(6) NULL,
    ts6 TIMESTAMP(6) NULL DEFAULT NULL,
    d DATE NULL,
    amount DECIMAL(30,10) NULL,
    i64 BIGINT NULL,
    u64 BIGINT UNSIGNED NULL,
    ti TINYINT NULL,
    tu TINYINT UNSIGNED NULL,
    mu MEDIUMINT UNSIGNED NULL,
    f FLOAT NULL,
    db DOUBLE NULL,
    e ENUM('small','medium','large') NULL,
    s SET('a','b','c','d') NULL,
    b10 BIT(10) NULL,
    y YEAR NULL,
    j JSON NULL,
    txt TEXT NULL,
    vc VARCHAR(64) NULL,
    ch CHAR(8) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// Row 1 holds the extremes, row 2 is all NULL, row 3 holds ordinary values.
const INSERT: &str = r#"INSERT INTO all_types VALUES
 (1, x'0001ff', x'00ff10', x'deadbeef00', '2024-02-29 23:59:58.000123', '9999-12-31 23:59:59',
  '-838:59:59.000000', '2038-01-19 03:14:07.999999', '1000-01-01',
  '-12345678901234567890.0123456789', -9223372036854775808, 18446744073709551615, -128, 255, 16777215,
  3.14159, 2.718281828459045, 'medium', 'a,c,d', b'1111111111', 2155,
  '{"b": [1, 2.5, "x"], "a": null, "nested": {"z": true}}',
  '🦀 crab ✓ 𝄞', 'quote " and \\ backslash', 'abc'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, x'00000000000000000000000000000001', x'', x'', '1970-01-01 00:00:00.5', '2000-01-01 00:00:00',
  '-01:02:03.456789', '1970-01-01 00:00:01.000000', '0000-00-00',
  '0.0000000001', 0, 0, 0, 0, 0,
  -0.5, -1e-300, 'small', '', b'0', 0,
  '[]', '', '', '')"#;

/// The contract's JSON for each row, byte for byte.
fn expected_json() -> BTreeMap<u64, String> {
    let padded = "AAH/AAAAAAAAAAAAAAAAAA=="; // 00 01 ff + 13 zero bytes
    BTreeMap::from([
        (
            1,
            format!(
                r#"{{"id":1,"uuid":"{padded}","vb":"AP8Q","bl":"3q2+7wA=","dt6":"2024-02-29 23:59:58.000123","dt0":"9999-12-31 23:59:59","t6":"-838:59:59.000000","ts6":"2038-01-19 03:14:07.999999","d":"1000-01-01","amount":"-12345678901234567890.0123456789","i64":-9223372036854775808,"u64":18446744073709551615,"ti":-128,"tu":255,"mu":16777215,"f":3.14159,"db":2.718281828459045,"e":"medium","s":"a,c,d","b10":1023,"y":2155,"j":{{"a":null,"b":[1,2.5,"x"],"nested":{{"z":true}}}},"txt":"🦀 crab ✓ 𝄞","vc":"quote \" and \\ backslash","ch":"abc"}}"#
            ),
        ),
        (
            2,
            r#"{"id":2,"uuid":null,"vb":null,"bl":null,"dt6":null,"dt0":null,"t6":null,"ts6":null,"d":null,"amount":null,"i64":null,"u64":null,"ti":null,"tu":null,"mu":null,"f":null,"db":null,"e":null,"s":null,"b10":null,"y":null,"j":null,"txt":null,"vc":null,"ch":null}"#.to_owned(),
        ),
        (
            3,
            r#"{"id":3,"uuid":"AAAAAAAAAAAAAAAAAAAAAQ==","vb":"","bl":"","dt6":"1970-01-01 00:00:00.500000","dt0":"2000-01-01 00:00:00","t6":"-01:02:03.456789","ts6":"1970-01-01 00:00:01.000000","d":"0000-00-00","amount":"0.0000000001","i64":0,"u64":0,"ti":0,"tu":0,"mu":0,"f":-0.5,"db":-1e-300,"e":"small","s":"","b10":0,"y":0,"j":[],"txt":"","vc":"","ch":""}"#.to_owned(),
        ),
    ])
}

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
        .exec(format!("{} ORDER BY id", table.select_sql), ())
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
    db.exec(CREATE).await;
    let (file, pos): (String, u64) = {
        let status: mysql_async::Row = db.conn.query_first("SHOW MASTER STATUS").await.unwrap().expect(
            "SHOW MASTER STATUS is empty: the test MariaDB must run with --log-bin (scripts/services.sh up)",
        );
        (status.get(0).unwrap(), status.get(1).unwrap())
    };
    db.exec(INSERT).await;

    let json_table = plan(&mut db, "json").await;
    let by_select = rows_by_select(&mut db, &json_table).await;
    let by_binlog = rows_by_binlog(&json_table, &file, pos).await;
    let expected = expected_json();
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
