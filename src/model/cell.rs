//! The canonical row model and its two Redis encodings.
//!
//! Whatever a row came from — a SQL `SELECT` or a binlog row image — [`super::decode`]
//! turns each column into a [`Cell`], and the encoders here turn cells into bytes. Because
//! both sources meet in this one model, the same row encodes to the same bytes whichever
//! strategy wrote it, which is what lets `verify` compare Redis with MySQL.
//!
//! The contract (`docs/encoding.md`):
//! - `json`: one object per row, column → value. Integers are numbers (full 64-bit range,
//!   signed and unsigned); `DECIMAL` a string with the column's exact scale; `FLOAT`/`DOUBLE`
//!   numbers (shortest text that reads back to the same float); dates and times strings;
//!   `YEAR` and `BIT` numbers; text, `ENUM` and `SET` strings; binary columns base64
//!   strings; `JSON` columns embedded; `NULL` as `null`.
//! - `hash`: one field per column with the same text (binary columns raw); NULL columns
//!   are absent.
//! - Both: when the change has a version, it is stored in the same key as the reserved
//!   member/field [`VERSION_FIELD`], first in the JSON object so the applier's Lua script
//!   can read it without parsing the document.

use base64::Engine as _;

/// The name of the bookkeeping field cachesync keeps in every row's Redis key (the
/// version that orders writes). No synced column may use it.
pub const VERSION_FIELD: &str = "_cachesync_v";

/// How a row is stored in Redis (`tables[].format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A string key holding one JSON object per row.
    Json,
    /// A hash key with one field per column.
    Hash,
}

/// One column value in canonical form.
///
/// Temporal values, `DECIMAL`, `ENUM` and `SET` are already their contract text (`Text`):
/// they are strings in JSON and plain text in a hash, exactly like `VARCHAR`.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// A `JSON` column's document, already normalised to compact text with sorted keys.
    Json(String),
}

impl Cell {
    /// Appends the value's canonical text (the `hash` field text) to `out`. Binary values
    /// are appended raw; NULL appends nothing.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        match self {
            Cell::Null => {}
            Cell::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
            Cell::UInt(v) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
            Cell::Float(v) => {
                out.extend_from_slice(ryu::Buffer::new().format_finite(*v).as_bytes())
            }
            Cell::Double(v) => {
                out.extend_from_slice(ryu::Buffer::new().format_finite(*v).as_bytes())
            }
            Cell::Text(s) | Cell::Json(s) => out.extend_from_slice(s.as_bytes()),
            Cell::Bytes(b) => out.extend_from_slice(b),
        }
    }

    /// Appends the value as it appears in a Redis key: the canonical text, with binary
    /// values as lowercase hex so keys stay printable.
    pub fn write_key_text(&self, key: &mut String) {
        match self {
            Cell::Bytes(bytes) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for b in bytes {
                    key.push(HEX[(b >> 4) as usize] as char);
                    key.push(HEX[(b & 0xf) as usize] as char);
                }
            }
            Cell::Text(s) | Cell::Json(s) => key.push_str(s),
            other => {
                let mut text = Vec::with_capacity(24);
                other.write_text(&mut text);
                // Numbers are ASCII.
                key.push_str(std::str::from_utf8(&text).unwrap_or_default());
            }
        }
    }

    /// Appends the value as a JSON value.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Cell::Null => out.extend_from_slice(b"null"),
            Cell::Int(_) | Cell::UInt(_) | Cell::Float(_) | Cell::Double(_) | Cell::Json(_) => {
                self.write_text(out)
            }
            Cell::Text(s) => write_json_string(s, out),
            Cell::Bytes(b) => {
                out.push(b'"');
                let start = out.len();
                let encoded_len = base64::encoded_len(b.len(), true).unwrap_or(0);
                out.resize(start + encoded_len, 0);
                let written = base64::engine::general_purpose::STANDARD
                    .encode_slice(b, &mut out[start..])
                    .unwrap_or(0);
                out.truncate(start + written);
                out.push(b'"');
            }
        }
    }
}

/// Appends `s` as a JSON string literal.
fn write_json_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaping is the reference; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Encodes rows of one table; built once per table so column names are escaped once.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    format: Format,
    /// Column names, in row order.
    names: Vec<String>,
    /// `"name":` for each column, JSON-escaped, so encoding a row copies bytes only.
    json_prefixes: Vec<Vec<u8>>,
}

/// A row ready for Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// The string value of a `json` key.
    Json(Vec<u8>),
    /// Field/value pairs of a `hash` key, flattened: field, value, field, value, ...
    Hash(Vec<Vec<u8>>),
}

impl RowEncoder {
    /// An encoder for rows whose cells are the columns `names`, in that order.
    pub fn new(format: Format, names: Vec<String>) -> RowEncoder {
        let json_prefixes = names
            .iter()
            .map(|name| {
                let mut prefix = Vec::with_capacity(name.len() + 3);
                write_json_string(name, &mut prefix);
                prefix.push(b':');
                prefix
            })
            .collect();
        RowEncoder {
            format,
            names,
            json_prefixes,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Column names in row order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Encodes `row` (one cell per column) with an optional version.
    pub fn encode(&self, row: &[Cell], version: Option<u64>) -> Encoded {
        debug_assert_eq!(row.len(), self.names.len());
        match self.format {
            Format::Json => Encoded::Json(self.encode_json(row, version)),
            Format::Hash => Encoded::Hash(self.encode_hash(row, version)),
        }
    }

    fn encode_json(&self, row: &[Cell], version: Option<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + row.len() * 24);
        out.push(b'{');
        if let Some(v) = version {
            // Must stay first and in exactly this shape: the apply script reads it with a
            // prefix match (see `crate::redis::keyspace`).
            out.extend_from_slice(b"\"");
            out.extend_from_slice(VERSION_FIELD.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
            if !row.is_empty() {
                out.push(b',');
            }
        }
        for (i, (cell, prefix)) in row.iter().zip(&self.json_prefixes).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(prefix);
            cell.write_json(&mut out);
        }
        out.push(b'}');
        out
    }

    fn encode_hash(&self, row: &[Cell], version: Option<u64>) -> Vec<Vec<u8>> {
        let mut fields = Vec::with_capacity(row.len() * 2 + 2);
        if let Some(v) = version {
            fields.push(VERSION_FIELD.as_bytes().to_vec());
            fields.push(itoa::Buffer::new().format(v).as_bytes().to_vec());
        }
        for (cell, name) in row.iter().zip(&self.names) {
            if matches!(cell, Cell::Null) {
                continue;
            }
            let mut value = Vec::new();
            cell.write_text(&mut value);
            fields.push(name.as_bytes().to_vec());
            fields.push(value);
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder(format: Format) -> RowEncoder {
        RowEncoder::new(
            format,
            ["id", "name", "blob", "score", "doc", "gone"]
                .map(String::from)
                .to_vec(),
        )
    }

    fn row() -> Vec<Cell> {
        vec![
            Cell::UInt(u64::MAX),
            Cell::Text("héllo \"🦀\"\n".into()),
            Cell::Bytes(vec![0x00, 0x01, 0xff]),
            Cell::Float(0.1),
            Cell::Json(r#"{"a":[1,2]}"#.into()),
            Cell::Null,
        ]
    }

    #[test]
    fn json_object_with_version_first() {
        let Encoded::Json(bytes) = encoder(Format::Json).encode(&row(), Some(42)) else {
            panic!("json expected")
        };
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            r#"{"_cachesync_v":42,"id":18446744073709551615,"name":"héllo \"🦀\"\n","blob":"AAH/","score":0.1,"doc":{"a":[1,2]},"gone":null}"#
        );
        // It is valid JSON and the numbers survive a round trip.
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["id"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn json_without_version_is_the_bare_row() {
        let encoder = RowEncoder::new(Format::Json, vec!["id".to_owned()]);
        let Encoded::Json(bytes) = encoder.encode(&row()[..1], None) else {
            panic!()
        };
        assert_eq!(bytes, br#"{"id":18446744073709551615}"#);
    }

    #[test]
    fn hash_fields_skip_null_and_keep_binary_raw() {
        let Encoded::Hash(fields) = encoder(Format::Hash).encode(&row(), Some(7)) else {
            panic!("hash expected")
        };
        let expected: Vec<Vec<u8>> = vec![
            b"_cachesync_v".to_vec(),
            b"7".to_vec(),
            b"id".to_vec(),
            b"18446744073709551615".to_vec(),
            b"name".to_vec(),
            "héllo \"🦀\"\n".as_bytes().to_vec(),
            b"blob".to_vec(),
            vec![0x00, 0x01, 0xff],
            b"score".to_vec(),
            b"0.1".to_vec(),
            b"doc".to_vec(),
            br#"{"a":[1,2]}"#.to_vec(),
        ];
        assert_eq!(fields, expected);
    }

    #[test]
    fn floats_use_the_shortest_round_trip_text() {
        let mut out = Vec::new();
        Cell::Float(2.7182817).write_json(&mut out);
        assert_eq!(out, b"2.7182817");
        out.clear();
        Cell::Double(1.0).write_json(&mut out);
        assert_eq!(out, b"1.0");
        out.clear();
        Cell::Double(-2.5e-300).write_json(&mut out);
        assert_eq!(out, b"-2.5e-300");
    }
}
