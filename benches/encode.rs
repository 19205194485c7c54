//! Row decoding + encoding throughput: the per-row CPU cost every strategy pays between
//! MySQL and Redis. Pure (no I/O), so the figures isolate cachesync's own work.
//!
//! `cargo bench --bench encode`; `docs/bench.md` quotes the medians.

use std::hint::black_box;

use cachesync::config::RawConfig;
use cachesync::model::cell::Cell;
use cachesync::model::cell::Format;
use cachesync::model::column::ColumnType;
use cachesync::model::decode;
use cachesync::model::table::{Column, SyncedTable, TableSchema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mysql_async::Value;
use mysql_async::binlog::value::BinlogValue;

/// A typical `users` row: ids, text, money, timestamps, a status, a small JSON document.
fn columns() -> Vec<(&'static str, ColumnType, Value)> {
    vec![
        (
            "id",
            ColumnType::Int {
                unsigned: true,
                bytes: 8,
            },
            Value::UInt(1_234_567),
        ),
        (
            "email",
            ColumnType::Text,
            Value::Bytes(b"ada.lovelace@example.com".to_vec()),
        ),
        (
            "name",
            ColumnType::Text,
            Value::Bytes("Ada Lovelace 🦀".as_bytes().to_vec()),
        ),
        (
            "balance",
            ColumnType::Decimal { scale: 4 },
            Value::Bytes(b"12345.6700".to_vec()),
        ),
        ("score", ColumnType::Double, Value::Double(0.8125)),
        (
            "created_at",
            ColumnType::DateTime { fsp: 6 },
            Value::Date(2024, 2, 29, 23, 59, 58, 123),
        ),
        (
            "status",
            ColumnType::Enum(vec!["new".into(), "active".into(), "gone".into()]),
            Value::Bytes(b"active".to_vec()),
        ),
        (
            "uuid",
            ColumnType::Binary { pad_to: Some(16) },
            Value::Bytes(vec![7; 16]),
        ),
        (
            "prefs",
            ColumnType::Json,
            Value::Bytes(br#"{"theme":"dark","langs":["en","fr"]}"#.to_vec()),
        ),
        (
            "version",
            ColumnType::Int {
                unsigned: true,
                bytes: 8,
            },
            Value::UInt(42),
        ),
    ]
}

fn table(format: &str) -> SyncedTable {
    let tree = serde_json::json!({
        "strategy": "binlog",
        "mysql": { "url": "mysql://root@127.0.0.1:3307" },
        "redis": { "url": "redis://127.0.0.1:6380" },
        "tables": [{ "name": "shop.users", "key": "user:{id}", "format": format }],
    });
    let config = RawConfig::from_tree(tree).unwrap().validate().unwrap();
    let schema = TableSchema {
        database: "shop".into(),
        table: "users".into(),
        columns: columns()
            .into_iter()
            .map(|(name, ty, _)| Column {
                name: name.into(),
                ty: Ok(ty),
            })
            .collect(),
        primary_key: vec![0],
    };
    SyncedTable::plan(&config.tables[0], schema).unwrap()
}

fn bench(c: &mut Criterion) {
    let values: Vec<Value> = columns().into_iter().map(|(_, _, v)| v).collect();
    let binlog_values: Vec<BinlogValue<'static>> =
        values.iter().cloned().map(BinlogValue::Value).collect();
    let mut group = c.benchmark_group("row");
    group.throughput(Throughput::Elements(1));
    for format in ["json", "hash"] {
        let table = table(format);
        assert_eq!(
            table.encoder.format(),
            if format == "json" {
                Format::Json
            } else {
                Format::Hash
            }
        );
        let cells: Vec<Cell> = table
            .types
            .iter()
            .zip(&values)
            .map(|(ty, v)| decode::from_sql(ty, v).unwrap())
            .collect();
        group.bench_function(format!("encode_{format}"), |b| {
            b.iter(|| black_box(table.encoder.encode(black_box(&cells), Some(42))))
        });
        group.bench_function(format!("decode_binlog_and_encode_{format}"), |b| {
            b.iter(|| {
                let cells: Vec<Cell> = table
                    .types
                    .iter()
                    .zip(black_box(&binlog_values))
                    .map(|(ty, v)| decode::from_binlog(ty, v).unwrap())
                    .collect();
                let key = table.key_of(&cells);
                black_box((key, table.encoder.encode(&cells, Some(42))))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
