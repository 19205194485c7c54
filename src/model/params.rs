//! A client's JSON values as SQL statement parameters: the inverse of the `json` Redis
//! encoding, checked against each column's declared type. The write API's bodies and the
//! read path's primary keys go through here; values never reach a statement's text.

use mysql_async::Value;
use serde_json::Value as Json;

use super::change::Op;
use super::column::ColumnType;
use super::table::SyncedTable;

/// The request's `column → value` object as SQL parameters, checked against `table`:
/// known columns, values that fit their declared types, the whole primary key (and, for
/// a delete, nothing else). `Err` is the message, naming the column.
pub fn row_values(
    table: &SyncedTable,
    op: Op,
    object: &serde_json::Map<String, Json>,
) -> std::result::Result<Vec<(String, Value)>, String> {
    let name = table.name();
    let schema = &table.schema;
    let pk_names = schema.primary_key_names();
    let mut values = Vec::with_capacity(object.len());
    for (column, value) in object {
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
        if is_key && value.is_null() {
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
        if !object.contains_key(*pk) {
            return Err(format!("primary-key column {pk} of {name} is missing"));
        }
    }
    Ok(values)
}

/// A JSON value as the SQL parameter for a column of type `ty`: the inverse of the
/// `json` Redis encoding (DECIMAL as a string or number, binary as base64, JSON columns
/// as any JSON value). `null` is SQL `NULL`.
pub fn sql_value(ty: &ColumnType, value: &Json) -> std::result::Result<Value, String> {
    if value.is_null() {
        return Ok(Value::NULL);
    }
    let got = || format!("got {}", json_kind(value));
    match ty {
        ColumnType::Json => Ok(Value::Bytes(value.to_string().into_bytes())),
        ColumnType::Int { unsigned, bytes } => match value {
            Json::Bool(b) => Ok(Value::Int(i64::from(*b))),
            Json::Number(n) => {
                let bits = u32::from(*bytes) * 8;
                let (min, max): (i128, i128) = if *unsigned {
                    (0, (1i128 << bits) - 1)
                } else {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                };
                let v: i128 = match (n.as_i64(), n.as_u64()) {
                    (Some(v), _) => v.into(),
                    (None, Some(v)) => v.into(),
                    (None, None) => return Err(format!("expected an integer, got {n}")),
                };
                if v < min || v > max {
                    return Err(format!(
                        "{v} is out of range for a {}{}-byte integer column ({min}..={max})",
                        if *unsigned { "unsigned " } else { "" },
                        bytes
                    ));
                }
                Ok(match i64::try_from(v) {
                    Ok(v) => Value::Int(v),
                    Err(_) => Value::UInt(v as u64),
                })
            }
            _ => Err(format!("expected an integer, {}", got())),
        },
        ColumnType::Year | ColumnType::Bit => match value {
            Json::Bool(b) => Ok(Value::UInt(u64::from(*b))),
            Json::Number(n) => n
                .as_u64()
                .map(Value::UInt)
                .ok_or_else(|| format!("expected a non-negative integer, got {n}")),
            _ => Err(format!("expected a non-negative integer, {}", got())),
        },
        ColumnType::Decimal { .. } => match value {
            Json::String(s) if is_decimal_text(s) => Ok(Value::Bytes(s.clone().into_bytes())),
            Json::String(s) => Err(format!(
                "expected a decimal number such as \"12.50\", got {s:?}"
            )),
            Json::Number(n) => Ok(Value::Bytes(n.to_string().into_bytes())),
            _ => Err(format!(
                "expected a decimal number (string or number), {}",
                got()
            )),
        },
        ColumnType::Float | ColumnType::Double => match value {
            Json::Number(n) => n
                .as_f64()
                .map(Value::Double)
                .ok_or_else(|| format!("expected a number, got {n}")),
            _ => Err(format!("expected a number, {}", got())),
        },
        ColumnType::Binary { .. } => match value {
            Json::String(s) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(Value::Bytes)
                    .map_err(|e| {
                        format!("invalid base64 ({e}); binary columns take standard base64, as the json encoding shows them")
                    })
            }
            _ => Err(format!("expected a base64 string, {}", got())),
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
        | ColumnType::Time { .. } => match value {
            Json::String(s) => Ok(Value::Bytes(s.clone().into_bytes())),
            _ => Err(format!("expected a string, {}", got())),
        },
    }
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

/// What kind of JSON value `v` is, for messages (`a string "7"`, `an array`).
pub fn json_kind(v: &Json) -> String {
    match v {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("a boolean {b}"),
        Json::Number(n) => format!("a number {n}"),
        Json::String(s) if s.chars().count() <= 40 => format!("a string {s:?}"),
        Json::String(_) => "a string".to_owned(),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(sql_value(&int(false, 1), &Json::Null), Ok(Value::NULL));

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
}
