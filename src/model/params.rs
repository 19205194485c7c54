//! A client's JSON values as SQL statement parameters: the inverse of the `json` Redis
//! encoding, checked against each column's declared type. The write API's bodies and the
//! read path's primary keys go through here; values never reach a statement's text.
//!
//! Values arrive as raw JSON text ([`RawValue`]), not as `serde_json::Value`: a number is
//! passed on exactly as the client wrote it (a `JSON` column's `14871.466378840501`, a
//! `DECIMAL(30,9)` given as a number) instead of through an `f64` that would change it,
//! and an integer too large for any Rust type is still reported as out of range.

use mysql_async::Value;
use serde_json::value::RawValue;

use super::change::Op;
use super::column::ColumnType;
use super::json::{self, RawObject};
use super::table::SyncedTable;

/// The request's `column → value` object as SQL parameters, checked against `table`:
/// known columns, values that fit their declared types, the whole primary key (and, for
/// a delete, nothing else). `Err` is the message, naming the column.
pub fn row_values(
    table: &SyncedTable,
    op: Op,
    object: &RawObject,
) -> std::result::Result<Vec<(String, Value)>, String> {
    let name = table.name();
    let schema = &table.schema;
    let pk_names = schema.primary_key_names();
    let mut values = Vec::with_capacity(object.0.len());
    for (column, value) in &object.0 {
        let position = schema
            .position(column)
            .ok_or_else(|| format!("{column} is not a column of {name}"))?;
        let is_key = pk_names.contains(&column.as_str());
        if op == Op::Delete && !is_key {
            return Err(format!(
                "a delete names only the primary key of {name} ({}); {column} is not part of it",
                pk_names.join(", ")
            ));
        }
        if is_key && json::is_null(value) {
            return Err(format!(
                "primary-key column {column} of {name} must not be null"
            ));
        }
        let ty = schema.columns[position].ty.as_ref().map_err(|declared| {
            format!("column {column} of {name} has type {declared}, which the API cannot write")
        })?;
        let value = sql_value(ty, value)
            .map_err(|reason| format!("column {column} of {name}: {reason}"))?;
        values.push((column.clone(), value));
    }
    for pk in &pk_names {
        if !object.contains(pk) {
            return Err(format!("primary-key column {pk} of {name} is missing"));
        }
    }
    Ok(values)
}

/// A JSON value as the SQL parameter for a column of type `ty`: the inverse of the
/// `json` Redis encoding (DECIMAL as a string or number, binary as base64 — a short
/// `BINARY(n)` value zero-padded to `n` bytes, as MySQL stores it — JSON columns as any
/// JSON value, its numbers untouched). `null` is SQL `NULL`.
pub fn sql_value(ty: &ColumnType, value: &RawValue) -> std::result::Result<Value, String> {
    if json::is_null(value) {
        return Ok(Value::NULL);
    }
    let got = || format!("got {}", json::kind(value));
    match ty {
        ColumnType::Json => {
            let mut doc = String::with_capacity(value.get().len());
            json::write_canonical(value, &mut doc)?;
            Ok(Value::Bytes(doc.into_bytes()))
        }
        ColumnType::Int { unsigned, bytes } => {
            if let Some(b) = json::as_bool(value) {
                return Ok(Value::Int(i64::from(b)));
            }
            let Some(text) = json::as_number(value) else {
                return Err(format!("expected an integer, {}", got()));
            };
            let bits = u32::from(*bytes) * 8;
            let (min, max): (i128, i128) = if *unsigned {
                (0, (1i128 << bits) - 1)
            } else {
                (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
            };
            let out_of_range = || {
                format!(
                    "{text} is out of range for a {}{}-byte integer column ({min}..={max})",
                    if *unsigned { "unsigned " } else { "" },
                    bytes
                )
            };
            let v = integer(text).ok_or_else(|| format!("expected an integer, got {text}"))?;
            let v = v.ok_or_else(out_of_range)?;
            if v < min || v > max {
                return Err(out_of_range());
            }
            Ok(match i64::try_from(v) {
                Ok(v) => Value::Int(v),
                Err(_) => Value::UInt(v as u64),
            })
        }
        ColumnType::Year | ColumnType::Bit => {
            if let Some(b) = json::as_bool(value) {
                return Ok(Value::UInt(u64::from(b)));
            }
            let number = json::as_number(value);
            match number.and_then(integer).flatten().map(u64::try_from) {
                Some(Ok(v)) => Ok(Value::UInt(v)),
                _ => Err(format!(
                    "expected a non-negative integer, {}",
                    match number {
                        Some(text) => format!("got {text}"),
                        None => got(),
                    }
                )),
            }
        }
        ColumnType::Decimal { .. } => {
            if let Some(s) = json::as_string(value) {
                return if is_decimal_text(&s) {
                    Ok(Value::Bytes(s.into_bytes()))
                } else {
                    Err(format!(
                        "expected a decimal number such as \"12.50\", got {s:?}"
                    ))
                };
            }
            match json::as_number(value) {
                // JSON's number grammar is a subset of MySQL's decimal literals: the
                // digits go through as written, none lost to a float.
                Some(text) => Ok(Value::Bytes(text.as_bytes().to_vec())),
                None => Err(format!(
                    "expected a decimal number (string or number), {}",
                    got()
                )),
            }
        }
        ColumnType::Float | ColumnType::Double => match json::as_number(value) {
            Some(text) => match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Value::Double(v)),
                _ => Err(format!(
                    "{text} is out of range for a floating-point column"
                )),
            },
            None => Err(format!("expected a number, {}", got())),
        },
        ColumnType::Binary { pad_to } => match json::as_string(value) {
            Some(s) => {
                use base64::Engine as _;
                let mut bytes = base64::engine::general_purpose::STANDARD
                    .decode(&s)
                    .map_err(|e| {
                        format!("invalid base64 ({e}); binary columns take standard base64, as the json encoding shows them")
                    })?;
                if let Some(n) = *pad_to {
                    if bytes.len() > n {
                        return Err(format!("{} bytes do not fit BINARY({n})", bytes.len()));
                    }
                    // What MySQL stores and what every read and delete must name: a short
                    // value would otherwise match no row in a WHERE.
                    bytes.resize(n, 0);
                }
                Ok(Value::Bytes(bytes))
            }
            None => Err(format!("expected a base64 string, {}", got())),
        },
        // Writing a spatial value would need Extended WKT turned back into WKB; the API
        // refuses it rather than guessing (write such columns with SQL).
        ColumnType::Geometry => Err(
            "spatial columns cannot be written through cachesync yet; write them with SQL \
             (ST_GeomFromText)"
                .to_owned(),
        ),
        ColumnType::Text
        | ColumnType::Enum(_)
        | ColumnType::Set(_)
        | ColumnType::Date
        | ColumnType::DateTime { .. }
        | ColumnType::Timestamp { .. }
        | ColumnType::Time { .. } => match json::as_string(value) {
            Some(s) => Ok(Value::Bytes(s.into_bytes())),
            None => Err(format!("expected a string, {}", got())),
        },
    }
}

/// A JSON number's text as an integer: `None` when it is not an integer (a fraction or
/// an exponent), `Some(None)` when it is one too large for an `i128`.
fn integer(text: &str) -> Option<Option<i128>> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<i128>().ok())
}

/// `[+-]digits[.digits][e[+-]digits]`, at least one digit before the exponent.
fn is_decimal_text(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    !(int.is_empty() && frac.is_empty())
        && digits(int)
        && digits(frac)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `sql_value` of a JSON value given as a `serde_json::Value`.
    fn sql_value(ty: &ColumnType, value: &serde_json::Value) -> Result<Value, String> {
        super::sql_value(ty, &serde_json::value::to_raw_value(value).unwrap())
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn values_follow_the_column_type() {
        let int = |unsigned, bytes| ColumnType::Int { unsigned, bytes };
        assert_eq!(
            sql_value(&int(false, 1), &json!(-128)),
            Ok(Value::Int(-128))
        );
        assert!(
            sql_value(&int(false, 1), &json!(128))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            sql_value(&int(true, 4), &json!(-1))
                .unwrap_err()
                .contains("out of range")
        );
        assert_eq!(
            sql_value(&int(true, 8), &json!(u64::MAX)),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(
            sql_value(&int(false, 8), &json!(i64::MIN)),
            Ok(Value::Int(i64::MIN))
        );
        assert!(
            sql_value(&int(false, 8), &json!(1.5))
                .unwrap_err()
                .contains("integer")
        );
        assert!(
            sql_value(&int(false, 8), &json!("7"))
                .unwrap_err()
                .contains("a string \"7\"")
        );
        assert_eq!(sql_value(&int(false, 1), &json!(true)), Ok(Value::Int(1)));
        assert_eq!(
            sql_value(&int(false, 1), &serde_json::Value::Null),
            Ok(Value::NULL)
        );

        let dec = ColumnType::Decimal { scale: 2 };
        for ok in ["12.50", "-1", "+.5", "3.", "1e3", "1.5E-2"] {
            assert_eq!(
                sql_value(&dec, &json!(ok)),
                Ok(Value::Bytes(ok.as_bytes().to_vec())),
                "{ok}"
            );
        }
        for bad in ["", ".", "1,5", "abc", "1e", "--1", "1.2.3", "0x10"] {
            assert!(sql_value(&dec, &json!(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            sql_value(&dec, &json!(2.25)),
            Ok(Value::Bytes(b"2.25".to_vec()))
        );

        let bin = ColumnType::Binary { pad_to: None };
        assert_eq!(
            sql_value(&bin, &json!("AAH/")),
            Ok(Value::Bytes(vec![0, 1, 255]))
        );
        let binary4 = ColumnType::Binary { pad_to: Some(4) };
        assert_eq!(
            sql_value(&binary4, &json!("AAH/")),
            Ok(Value::Bytes(vec![0, 1, 255, 0])),
            "a short BINARY(n) value is the zero-padded one"
        );
        assert!(
            sql_value(&binary4, &json!("AAECAwQ="))
                .unwrap_err()
                .contains("5 bytes do not fit BINARY(4)")
        );
        assert!(
            sql_value(&bin, &json!("not base64!"))
                .unwrap_err()
                .contains("base64")
        );

        assert_eq!(
            sql_value(&ColumnType::Json, &json!({"b": [1, "x"], "a": null})),
            Ok(Value::Bytes(br#"{"a":null,"b":[1,"x"]}"#.to_vec()))
        );
        assert!(
            sql_value(&ColumnType::Text, &json!({"a": 1}))
                .unwrap_err()
                .contains("an object")
        );
        assert!(
            sql_value(&ColumnType::Text, &json!([1]))
                .unwrap_err()
                .contains("an array")
        );
        assert_eq!(
            sql_value(&ColumnType::Double, &json!(0.1)),
            Ok(Value::Double(0.1))
        );
    }

    #[test]
    fn numbers_reach_mysql_as_written() {
        let json_col = super::sql_value(
            &ColumnType::Json,
            &raw(r#"{"n": [14871.466378840501, 18446744073709551616]}"#),
        );
        assert_eq!(
            json_col,
            Ok(Value::Bytes(
                br#"{"n":[14871.466378840501,18446744073709551616]}"#.to_vec()
            ))
        );
        let dec = ColumnType::Decimal { scale: 9 };
        assert_eq!(
            super::sql_value(&dec, &raw("12345678901234567890.123456789")),
            Ok(Value::Bytes(b"12345678901234567890.123456789".to_vec()))
        );
        let bigint = ColumnType::Int {
            unsigned: true,
            bytes: 8,
        };
        for too_big in [
            "18446744073709551616",
            "1000000000000000000000000000000000000000000",
        ] {
            assert!(
                super::sql_value(&bigint, &raw(too_big))
                    .unwrap_err()
                    .contains("out of range"),
                "{too_big}"
            );
        }
        assert!(
            super::sql_value(&bigint, &raw("1e3"))
                .unwrap_err()
                .contains("expected an integer")
        );
        assert!(
            super::sql_value(&ColumnType::Double, &raw("1e400"))
                .unwrap_err()
                .contains("out of range")
        );
    }
}
