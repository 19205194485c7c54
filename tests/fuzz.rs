//! Property-based fuzzing (proptest) of the code hostile input reaches first, with no
//! services needed:
//!
//! - **key encoding** ([`cachesync::model::key`]): for random templates (separators of
//!   any character, hash tags, several placeholders) and random values (escape
//!   characters, braces, `:`, the separators themselves, non-ASCII), a key splits back
//!   into exactly its values, distinct values give distinct keys, and no row key equals a
//!   companion key (read marker, tombstone) of another row of its table;
//! - **value decoding** ([`cachesync::model::decode`]): random values of every shape the
//!   binlog and the SQL protocols produce, against every column type, never panic, and
//!   what decodes encodes to valid JSON;
//! - **API bodies** ([`cachesync::model::json`], [`cachesync::model::params`]): random
//!   bytes and random JSON never panic the body parser or the checks against a table of
//!   every type; a JSON document's canonical form keeps every number token exactly, is
//!   valid JSON equal to the input, and is a fixed point.
//!
//! `cargo test --test fuzz` runs 256 cases per property. For a longer run (the numbers in
//! the report were taken this way):
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test --release --test fuzz
//! ```

use std::sync::Arc;

use cachesync::model::cell::{Cell, Encoded};
use cachesync::model::change::Op;
use cachesync::model::column::ColumnType;
use cachesync::model::decode::{from_binlog, from_sql};
use cachesync::model::json::{RawObject, canonical};
use cachesync::model::key::KeyTemplate;
use cachesync::model::params::row_values;
use cachesync::model::table::{Column, SyncedTable, TableSchema};
use cachesync::redis::keyspace::{fill_key, tombstone_key};
use mysql_async::Value;
use mysql_async::binlog::value::BinlogValue;
use proptest::prelude::*;

/// `PROPTEST_CASES` cases (256 by default); a failure is printed with its minimal
/// input rather than saved in a regressions file.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Key encoding

/// Characters that matter to keys: the escape character, braces, separators, a hex
/// digit, non-ASCII, and plain ones.
fn key_char() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        '%', '{', '}', ':', '-', '/', '.', '_', ' ', 'a', 'A', 'f', '0', '9', 'é', '🦀', '*', '\\',
    ])
}

fn key_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(key_char(), 0..max).prop_map(|c| c.into_iter().collect())
}

/// Literal text for a template: no `%` (refused), braces written doubled.
fn literal(min: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(key_char().prop_filter("no %", |c| *c != '%'), min..4).prop_map(|chars| {
        chars
            .into_iter()
            .map(|c| match c {
                '{' => "{{".to_owned(),
                '}' => "}}".to_owned(),
                c => c.to_string(),
            })
            .collect()
    })
}

/// A template `L0{c0}L1{c1}…Ln` with non-empty separators, and its placeholder count.
fn template() -> impl Strategy<Value = (String, usize)> {
    (1usize..4)
        .prop_flat_map(|n| {
            (
                literal(0),
                prop::collection::vec(literal(1), n - 1),
                literal(0),
            )
        })
        .prop_map(|(first, separators, last)| {
            let mut template = first;
            template.push_str("{c0}");
            for (i, separator) in separators.iter().enumerate() {
                template.push_str(separator);
                template.push_str(&format!("{{c{}}}", i + 1));
            }
            template.push_str(&last);
            (template, separators.len() + 1)
        })
}

fn refs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

fn template_and_values() -> impl Strategy<Value = (String, Vec<String>, Vec<String>)> {
    template().prop_flat_map(|(template, n)| {
        (
            Just(template),
            prop::collection::vec(key_text(8), n),
            prop::collection::vec(key_text(8), n),
        )
    })
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn keys_split_back_into_their_values((template, a, b) in template_and_values()) {
        let t = KeyTemplate::parse(&template).expect("generated templates parse");
        let key_a = t.render_texts(&refs(&a)).unwrap();
        let key_b = t.render_texts(&refs(&b)).unwrap();
        let back: Vec<String> = t
            .split_key(&key_a)
            .unwrap_or_else(|| panic!("{key_a:?} of {template:?} does not split"))
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        prop_assert_eq!(&back, &a, "{:?} of {:?}", key_a, template);
        // Injective: distinct values, distinct keys.
        prop_assert_eq!(a == b, key_a == key_b, "{:?} {:?} → {:?}", a, b, key_a);
        // No row key is a companion key of another row of the table.
        for companion in [fill_key(&key_b), tombstone_key(&key_b)].into_iter().flatten() {
            prop_assert_ne!(&key_a, &companion, "template {:?}", template);
        }
    }

    #[test]
    fn any_key_text_splits_or_is_refused_without_panicking(
        (template, _) in template(),
        key in key_text(24),
    ) {
        let t = KeyTemplate::parse(&template).unwrap();
        if let Some(values) = t.split_key(&key) {
            // What splits renders back to a key that splits to the same values.
            let texts: Vec<&str> = values.iter().map(|(_, v)| v.as_str()).collect();
            let again = t.render_texts(&texts).unwrap();
            let reparsed = t.split_key(&again).unwrap();
            prop_assert_eq!(reparsed, values);
        }
    }

    #[test]
    fn any_template_text_parses_or_is_refused(text in key_text(16)) {
        if let Ok(t) = KeyTemplate::parse(&text) {
            let n = t.columns().count();
            let values = vec!["x"; n];
            prop_assert!(t.render_texts(&values).is_some());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Value decoding

fn column_type() -> impl Strategy<Value = ColumnType> {
    let members = || {
        prop::collection::vec("[a-z,' ]{0,4}", 0..5)
            .prop_map(|m| m.into_iter().collect::<Vec<String>>())
    };
    prop_oneof![
        (any::<bool>(), prop::sample::select(vec![1u8, 2, 3, 4, 8]))
            .prop_map(|(unsigned, bytes)| ColumnType::Int { unsigned, bytes }),
        (0u32..40).prop_map(|scale| ColumnType::Decimal { scale }),
        Just(ColumnType::Float),
        Just(ColumnType::Double),
        Just(ColumnType::Date),
        (0u8..9).prop_map(|fsp| ColumnType::DateTime { fsp }),
        (0u8..9).prop_map(|fsp| ColumnType::Timestamp { fsp }),
        (0u8..9).prop_map(|fsp| ColumnType::Time { fsp }),
        Just(ColumnType::Year),
        Just(ColumnType::Text),
        prop::option::of(0usize..40).prop_map(|pad_to| ColumnType::Binary { pad_to }),
        members().prop_map(ColumnType::Enum),
        members().prop_map(ColumnType::Set),
        Just(ColumnType::Bit),
        Just(ColumnType::Json),
    ]
}

/// Every shape of value the binlog and the SQL protocols produce, with extreme fields.
fn value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "[-+0-9.eE: ]{0,30}".prop_map(String::into_bytes),
        "[\\[\\]{}\",:0-9a-z .eE+-]{0,40}".prop_map(String::into_bytes),
    ];
    prop_oneof![
        Just(Value::NULL),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<f32>().prop_map(Value::Float),
        any::<f64>().prop_map(Value::Double),
        text.prop_map(Value::Bytes),
        (
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u32>()
        )
            .prop_map(|(y, m, d, h, mi, s, us)| Value::Date(y, m, d, h, mi, s, us)),
        (
            any::<bool>(),
            any::<u32>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u32>()
        )
            .prop_map(|(neg, days, h, mi, s, us)| Value::Time(neg, days, h, mi, s, us)),
    ]
}

/// What a decoded cell encodes to must be JSON.
fn assert_valid_json(cell: &Cell) {
    let mut out = Vec::new();
    cell.write_json(&mut out);
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&out) {
        panic!(
            "{cell:?} encodes to invalid JSON {:?}: {e}",
            String::from_utf8_lossy(&out)
        );
    }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn decoding_any_value_never_panics(ty in column_type(), value in value()) {
        if let Ok(cell) = from_binlog(&ty, &BinlogValue::Value(value.clone())) {
            assert_valid_json(&cell);
        }
        if let Ok(cell) = from_sql(&ty, &value) {
            assert_valid_json(&cell);
        }
    }
}

// ---------------------------------------------------------------------------------------
// API bodies and JSON documents

/// A table with a column of every type the API writes.
fn table_of_every_type() -> Arc<SyncedTable> {
    let tree = serde_json::json!({
        "strategy": "dual-write",
        "mysql": { "url": "mysql://root@127.0.0.1:3307" },
        "redis": { "url": "redis://127.0.0.1:6380" },
        "tables": [{ "name": "fuzz.t", "key": "t:{id}:{code}" }],
    });
    let config = cachesync::config::RawConfig::from_tree(tree)
        .unwrap()
        .validate()
        .unwrap();
    let column = |name: &str, ty: ColumnType| Column {
        name: name.to_owned(),
        ty: Ok(ty),
    };
    let columns = vec![
        column(
            "id",
            ColumnType::Int {
                unsigned: true,
                bytes: 8,
            },
        ),
        column("code", ColumnType::Binary { pad_to: Some(16) }),
        column(
            "small",
            ColumnType::Int {
                unsigned: false,
                bytes: 1,
            },
        ),
        column("amount", ColumnType::Decimal { scale: 9 }),
        column("ratio", ColumnType::Float),
        column("score", ColumnType::Double),
        column("at", ColumnType::DateTime { fsp: 6 }),
        column("span", ColumnType::Time { fsp: 0 }),
        column("year", ColumnType::Year),
        column("name", ColumnType::Text),
        column("blob", ColumnType::Binary { pad_to: None }),
        column("size", ColumnType::Enum(vec!["s".into(), "m".into()])),
        column("tags", ColumnType::Set(vec!["a".into(), "b".into()])),
        column("flags", ColumnType::Bit),
        column("doc", ColumnType::Json),
    ];
    let schema = TableSchema {
        database: "fuzz".to_owned(),
        table: "t".to_owned(),
        columns,
        primary_key: vec![0, 1],
    };
    Arc::new(SyncedTable::plan(&config.tables[0], schema).unwrap())
}

/// A JSON number token, as long and exotic as the grammar allows.
fn number() -> impl Strategy<Value = String> {
    "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?"
}

/// A JSON document as text: random nesting, whitespace and key order; numbers from
/// [`number`]. Object keys are distinct (duplicates are tested apart).
fn document() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        number(),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("null".to_owned()),
        "[a-z é🦀\"\\\\\n]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let space = prop::sample::select(vec!["", " ", "\n", "\t "]);
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..6), space.clone())
                .prop_map(|(items, ws)| format!("[{ws}{}{ws}]", items.join(&format!("{ws},")))),
            (
                prop::collection::btree_map("[a-z_é]{0,5}", inner, 0..6),
                space
            )
                .prop_map(|(members, ws)| {
                    let members: Vec<String> = members
                        .iter()
                        .rev()
                        .map(|(k, v)| format!("{}{ws}:{ws}{v}", serde_json::to_string(k).unwrap()))
                        .collect();
                    format!("{{{ws}{}{ws}}}", members.join(","))
                }),
        ]
    })
}

/// The number tokens of a JSON text, in order (strings skipped).
fn number_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '-' | '0'..='9' => {
                let mut token = c.to_string();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-') {
                        token.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(token);
            }
            _ => {}
        }
    }
    tokens
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn canonical_json_keeps_every_number_and_is_a_fixed_point(doc in document()) {
        let canon = canonical(&doc).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
        let mut before = number_tokens(&doc);
        let mut after = number_tokens(&canon);
        before.sort();
        after.sort();
        prop_assert_eq!(before, after, "{:?} → {:?}", doc, canon);
        prop_assert_eq!(canonical(&canon).unwrap(), canon.clone());
        // Same document: equal as serde_json values (which sort keys) — where those can
        // hold its numbers at all (not `1e400`).
        if let Ok(a) = serde_json::from_str::<serde_json::Value>(&doc) {
            let b: serde_json::Value = serde_json::from_str(&canon).unwrap();
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn any_body_is_parsed_or_refused_without_panicking(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            "[{}\\[\\]\",:0-9a-z .eE+-]{0,64}".prop_map(String::into_bytes),
        ],
    ) {
        let _ = canonical(&String::from_utf8_lossy(&body));
        if let Ok(object) = RawObject::parse(&body) {
            let table = table_of_every_type();
            let _ = row_values(&table, Op::Upsert, &object);
            let _ = row_values(&table, Op::Delete, &object);
        }
    }

    #[test]
    fn any_values_for_every_column_are_checked_without_panicking(
        values in prop::collection::vec(
            prop_oneof![number(), document(), "\"[A-Za-z0-9+/=:. -]{0,24}\"".prop_map(|s| s)],
            15,
        ),
    ) {
        let table = table_of_every_type();
        let names = table.encoder.names().to_vec();
        let body = format!(
            "{{{}}}",
            names
                .iter()
                .zip(&values)
                .map(|(name, value)| format!("{}:{value}", serde_json::to_string(name).unwrap()))
                .collect::<Vec<_>>()
                .join(",")
        );
        let object = RawObject::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        if let Ok(params) = row_values(&table, Op::Upsert, &object) {
            // A JSON column's document reaches MySQL with its numbers as written.
            let doc = &values[names.iter().position(|n| n == "doc").unwrap()];
            if let Some((_, Value::Bytes(sent))) = params.iter().find(|(n, _)| n == "doc") {
                let mut want = number_tokens(doc);
                let mut got = number_tokens(&String::from_utf8_lossy(sent));
                want.sort();
                got.sort();
                prop_assert_eq!(want, got);
            }
        }
    }
}

/// Encoding what the decoders produce for a row of every type is JSON too (a sanity
/// check of the fixture the properties share).
#[test]
fn the_fixture_table_encodes_rows() {
    let table = table_of_every_type();
    let row = vec![Cell::Null; table.types.len()];
    let Encoded::Json(doc) = table.encoder.encode(&row, Some(1)) else {
        panic!("json")
    };
    serde_json::from_slice::<serde_json::Value>(&doc).unwrap();
}
