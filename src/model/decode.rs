//! Decoding column values into canonical [`Cell`]s — pure functions, no I/O.
//!
//! A row reaches cachesync from two places and both must land on the same cell:
//! - **SQL** ([`from_sql`]): a `mysql_async::Value` from a `SELECT`. The binary protocol
//!   (prepared statements) gives typed values; the text protocol gives ASCII text. Both
//!   are accepted.
//! - **Binlog** ([`from_binlog`]): a `BinlogValue` from a row event. The binlog writes
//!   some types differently from SQL, and each difference is undone here: ENUM as a
//!   1-based index, SET as a bit mask, TIMESTAMP as epoch seconds, YEAR as `1900 + n`,
//!   BINARY(n) with trailing zero bytes stripped, unsigned integers possibly as negative
//!   signed ones when the server sends no signedness metadata, MySQL 8 JSON as binary JSONB.
//!   Spatial values are the one type both sources give alike (SRID + WKB bytes).
//!
//! The column's declared type ([`ColumnType`], read from `information_schema`) decides
//! the canonical form: the same `Value::Int(-1)` is `-1` in a signed `TINYINT` and `255`
//! in a `TINYINT UNSIGNED`.

use mysql_async::Value;
use mysql_async::binlog::value::BinlogValue;
use serde_json::value::RawValue;

use super::cell::Cell;
use super::column::ColumnType;

/// Why a value could not be decoded; the caller adds the table and column.
pub type DecodeError = String;

/// Decodes a value read by a SQL `SELECT` (binary or text protocol).
pub fn from_sql(ty: &ColumnType, value: &Value) -> Result<Cell, DecodeError> {
    if let Value::NULL = value {
        return Ok(Cell::Null);
    }
    match ty {
        ColumnType::Int { unsigned, .. } => match value {
            Value::Int(v) if *unsigned => u64::try_from(*v)
                .map(Cell::UInt)
                .map_err(|_| format!("negative value {v} in an unsigned column")),
            Value::Int(v) => Ok(Cell::Int(*v)),
            Value::UInt(v) if *unsigned => Ok(Cell::UInt(*v)),
            Value::UInt(v) => i64::try_from(*v)
                .map(Cell::Int)
                .map_err(|_| format!("value {v} out of range for a signed column")),
            Value::Bytes(text) if *unsigned => parse_text(text).map(Cell::UInt),
            Value::Bytes(text) => parse_text(text).map(Cell::Int),
            other => Err(unexpected(other)),
        },
        ColumnType::Year => match value {
            Value::Int(v) => u64::try_from(*v)
                .map(Cell::UInt)
                .map_err(|_| format!("invalid YEAR {v}")),
            Value::UInt(v) => Ok(Cell::UInt(*v)),
            Value::Bytes(text) => parse_text(text).map(Cell::UInt),
            other => Err(unexpected(other)),
        },
        ColumnType::Decimal { scale } => match value {
            Value::Bytes(text) => normalize_decimal(utf8(text)?, *scale).map(Cell::Text),
            Value::Int(v) => normalize_decimal(&v.to_string(), *scale).map(Cell::Text),
            Value::UInt(v) => normalize_decimal(&v.to_string(), *scale).map(Cell::Text),
            other => Err(unexpected(other)),
        },
        ColumnType::Float => match value {
            Value::Float(v) => Ok(Cell::Float(*v)),
            Value::Double(v) => Ok(Cell::Float(*v as f32)),
            Value::Bytes(text) => parse_text(text).map(Cell::Float),
            other => Err(unexpected(other)),
        },
        ColumnType::Double => match value {
            Value::Double(v) => Ok(Cell::Double(*v)),
            Value::Float(v) => Ok(Cell::Double(f64::from(*v))),
            Value::Bytes(text) => parse_text(text).map(Cell::Double),
            other => Err(unexpected(other)),
        },
        ColumnType::Date
        | ColumnType::DateTime { .. }
        | ColumnType::Timestamp { .. }
        | ColumnType::Time { .. } => temporal(ty, value),
        ColumnType::Text | ColumnType::Enum(_) | ColumnType::Set(_) => match value {
            Value::Bytes(bytes) => utf8(bytes).map(|s| Cell::Text(s.to_owned())),
            other => Err(unexpected(other)),
        },
        ColumnType::Binary { pad_to } => match value {
            Value::Bytes(bytes) => Ok(Cell::Bytes(padded(bytes, *pad_to))),
            other => Err(unexpected(other)),
        },
        // The binlog logs the same internal bytes a SELECT returns (SRID + WKB), so both
        // sources arrive here.
        ColumnType::Geometry => match value {
            Value::Bytes(bytes) => super::geometry::ewkt(bytes).map(Cell::Text),
            other => Err(unexpected(other)),
        },
        ColumnType::Bit => match value {
            Value::Bytes(bytes) => bit_value(bytes),
            Value::Int(v) => Ok(Cell::UInt(*v as u64)),
            Value::UInt(v) => Ok(Cell::UInt(*v)),
            other => Err(unexpected(other)),
        },
        ColumnType::Json => match value {
            Value::Bytes(bytes) => normalize_json(bytes),
            other => Err(unexpected(other)),
        },
    }
}

/// Decodes a value from a binlog row image.
pub fn from_binlog(ty: &ColumnType, value: &BinlogValue<'_>) -> Result<Cell, DecodeError> {
    let value = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(jsonb) => {
            let json = serde_json::Value::try_from(jsonb.clone())
                .map_err(|e| format!("binary JSON: {e}"))?;
            return Ok(Cell::Json(json.to_string()));
        }
        BinlogValue::JsonDiff(_) => {
            return Err(
                "partial JSON update in the binlog; set binlog_row_value_options='' \
                        so the server logs full JSON documents"
                    .to_owned(),
            );
        }
    };
    if let Value::NULL = value {
        return Ok(Cell::Null);
    }
    match (ty, value) {
        // Without signedness metadata the server's unsigned values arrive as signed ones
        // of the column's width: reinterpret the bits.
        (
            ColumnType::Int {
                unsigned: true,
                bytes,
            },
            Value::Int(v),
        ) if *v < 0 => {
            let bits = u32::from(*bytes) * 8;
            let mask = if bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            Ok(Cell::UInt(*v as u64 & mask))
        }
        // TIMESTAMP: epoch seconds (old format) or "sec[.usec]" text (TIMESTAMP2), UTC.
        (ColumnType::Timestamp { fsp }, Value::Int(secs)) => {
            Ok(Cell::Text(epoch_text(*secs, 0, *fsp)))
        }
        (ColumnType::Timestamp { fsp }, Value::Bytes(text)) => {
            let text = utf8(text)?;
            let (secs, micros) = match text.split_once('.') {
                Some((s, us)) => (s, us),
                None => (text, "0"),
            };
            let secs: i64 = secs
                .parse()
                .map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
            let micros: u32 = micros
                .parse()
                .map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
            Ok(Cell::Text(epoch_text(secs, micros, *fsp)))
        }
        // YEAR 0000 is logged as 0 and decoded as 1900, which is not a valid YEAR.
        (ColumnType::Year, Value::Bytes(text)) => match parse_text::<u64>(text)? {
            1900 => Ok(Cell::UInt(0)),
            year => Ok(Cell::UInt(year)),
        },
        (ColumnType::Enum(members), Value::Int(index)) => enum_member(members, *index),
        (ColumnType::Enum(members), Value::UInt(index)) => enum_member(members, *index as i64),
        (ColumnType::Set(members), Value::Bytes(mask)) => {
            Ok(Cell::Text(set_members(members, mask)))
        }
        (ColumnType::Set(members), Value::Int(mask)) => {
            Ok(Cell::Text(set_members(members, &mask.to_le_bytes())))
        }
        _ => from_sql(ty, value),
    }
}

/// Decodes a value in its canonical JSON form (what the `json` encoding writes, and what
/// change events carry) back into a cell of a column of type `ty`. The value is raw JSON
/// text, so a `JSON` column's numbers keep their exact text.
pub fn from_json(ty: &ColumnType, value: &RawValue) -> Result<Cell, DecodeError> {
    use super::json;
    let text = value.get().trim();
    let wrong = || format!("{text} does not fit a column of type {ty:?}");
    if json::is_null(value) {
        return Ok(Cell::Null);
    }
    match ty {
        ColumnType::Json => {
            let mut doc = String::with_capacity(text.len());
            json::write_canonical(value, &mut doc)?;
            Ok(Cell::Json(doc))
        }
        ColumnType::Int { unsigned: true, .. } | ColumnType::Year | ColumnType::Bit => {
            json::as_number(value)
                .and_then(|n| n.parse().ok())
                .map(Cell::UInt)
                .ok_or_else(wrong)
        }
        ColumnType::Int {
            unsigned: false, ..
        } => json::as_number(value)
            .and_then(|n| n.parse().ok())
            .map(Cell::Int)
            .ok_or_else(wrong),
        ColumnType::Float => json::as_number(value)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|f| Cell::Float(f as f32))
            .ok_or_else(wrong),
        ColumnType::Double => json::as_number(value)
            .and_then(|n| n.parse().ok())
            .map(Cell::Double)
            .ok_or_else(wrong),
        ColumnType::Decimal { scale } => match json::as_string(value) {
            Some(s) => normalize_decimal(&s, *scale).map(Cell::Text),
            None => Err(wrong()),
        },
        ColumnType::Binary { pad_to } => {
            use base64::Engine as _;
            let s = json::as_string(value).ok_or_else(wrong)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("invalid base64 for a binary column: {e}"))?;
            Ok(Cell::Bytes(padded(&bytes, *pad_to)))
        }
        ColumnType::Text
        | ColumnType::Enum(_)
        | ColumnType::Set(_)
        | ColumnType::Date
        | ColumnType::DateTime { .. }
        | ColumnType::Timestamp { .. }
        | ColumnType::Time { .. }
        | ColumnType::Geometry => json::as_string(value).map(Cell::Text).ok_or_else(wrong),
    }
}

/// Decodes a `hash` field's text (what [`Cell::write_text`] wrote: canonical text,
/// binary columns raw) back into a cell of a column of type `ty`.
pub fn from_hash_text(ty: &ColumnType, text: &[u8]) -> Result<Cell, DecodeError> {
    match ty {
        ColumnType::Int {
            unsigned: false, ..
        } => parse_text(text).map(Cell::Int),
        ColumnType::Int { unsigned: true, .. } | ColumnType::Year | ColumnType::Bit => {
            parse_text(text).map(Cell::UInt)
        }
        ColumnType::Float => parse_text(text).map(Cell::Float),
        ColumnType::Double => parse_text(text).map(Cell::Double),
        ColumnType::Binary { pad_to } => Ok(Cell::Bytes(padded(text, *pad_to))),
        ColumnType::Json => normalize_json(text),
        // Already canonical text.
        ColumnType::Decimal { .. }
        | ColumnType::Date
        | ColumnType::DateTime { .. }
        | ColumnType::Timestamp { .. }
        | ColumnType::Time { .. }
        | ColumnType::Text
        | ColumnType::Enum(_)
        | ColumnType::Set(_)
        | ColumnType::Geometry => utf8(text).map(|s| Cell::Text(s.to_owned())),
    }
}

fn unexpected(value: &Value) -> DecodeError {
    // Not `{value:?}`: mysql_common's Debug of a TIME multiplies its day count, which
    // overflows (a panic in debug builds) for a value no server sends but a broken
    // stream could.
    match value {
        Value::Time(negative, days, h, m, s, us) => format!(
            "unexpected value TIME({}{days} days {h:02}:{m:02}:{s:02}.{us:06})",
            if *negative { "-" } else { "" }
        ),
        other => format!("unexpected value {other:?}"),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text ({e}); cachesync reads utf8mb4 columns"))
}

fn parse_text<T: std::str::FromStr>(bytes: &[u8]) -> Result<T, DecodeError> {
    let text = utf8(bytes)?;
    text.trim()
        .parse()
        .map_err(|_| format!("cannot read {text:?} as a number"))
}

fn padded(bytes: &[u8], pad_to: Option<usize>) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some(len) = pad_to
        && out.len() < len
    {
        out.resize(len, 0);
    }
    out
}

fn bit_value(bytes: &[u8]) -> Result<Cell, DecodeError> {
    if bytes.len() > 8 {
        return Err(format!("BIT value of {} bytes", bytes.len()));
    }
    Ok(Cell::UInt(
        bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    ))
}

fn enum_member(members: &[String], index: i64) -> Result<Cell, DecodeError> {
    match index {
        // Index 0 is the "invalid value" MySQL stores for a bad ENUM in non-strict mode,
        // and SELECT shows it as the empty string.
        0 => Ok(Cell::Text(String::new())),
        i => i
            .checked_sub(1)
            .and_then(|position| usize::try_from(position).ok())
            .and_then(|position| members.get(position))
            .map(|m| Cell::Text(m.clone()))
            .ok_or_else(|| {
                format!(
                    "ENUM index {i} but the column has {} members",
                    members.len()
                )
            }),
    }
}

fn set_members(members: &[String], mask: &[u8]) -> String {
    let mut out = String::new();
    for (i, member) in members.iter().enumerate() {
        let byte = mask.get(i / 8).copied().unwrap_or(0);
        if byte & (1 << (i % 8)) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(member);
        }
    }
    out
}

/// A `JSON` column's document, canonical (compact, keys sorted) with its numbers exactly
/// as MySQL holds them ([`super::json`]).
fn normalize_json(bytes: &[u8]) -> Result<Cell, DecodeError> {
    super::json::canonical_bytes(bytes)
        .map(Cell::Json)
        .map_err(|e| format!("invalid JSON document: {e}"))
}

/// Writes `text` (a decimal number) with exactly `scale` fractional digits.
pub fn normalize_decimal(text: &str, scale: u32) -> Result<String, DecodeError> {
    let text = text.trim();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
        || (int_part.is_empty() && frac_part.is_empty())
    {
        return Err(format!("cannot read {text:?} as a DECIMAL"));
    }
    let int_part = int_part.trim_start_matches('0');
    let mut out = String::with_capacity(text.len() + scale as usize + 2);
    out.push_str(sign);
    out.push_str(if int_part.is_empty() { "0" } else { int_part });
    if scale > 0 {
        out.push('.');
        let scale = scale as usize;
        out.extend(frac_part.chars().chain(std::iter::repeat('0')).take(scale));
    }
    // "-0.00" is how MySQL never writes zero.
    if sign == "-" && out[1..].bytes().all(|b| b == b'0' || b == b'.') {
        out.remove(0);
    }
    Ok(out)
}

fn temporal(ty: &ColumnType, value: &Value) -> Result<Cell, DecodeError> {
    let parsed = match value {
        Value::Date(y, m, d, h, mi, s, us) => Temporal::DateTime {
            year: *y,
            month: *m,
            day: *d,
            hour: *h,
            minute: *mi,
            second: *s,
            micros: *us,
        },
        Value::Time(negative, days, h, mi, s, us) => Temporal::Time {
            negative: *negative,
            hours: days
                .checked_mul(24)
                .and_then(|hours| hours.checked_add(u32::from(*h)))
                .ok_or_else(|| unexpected(value))?,
            minute: *mi,
            second: *s,
            micros: *us,
        },
        Value::Bytes(text) => parse_temporal(ty, utf8(text)?)?,
        other => return Err(unexpected(other)),
    };
    match (ty, parsed) {
        (
            ColumnType::Date,
            Temporal::DateTime {
                year, month, day, ..
            },
        ) => {
            let mut text = String::with_capacity(10);
            push_date(&mut text, i64::from(year), u32::from(month), u32::from(day));
            Ok(Cell::Text(text))
        }
        (
            ColumnType::DateTime { fsp } | ColumnType::Timestamp { fsp },
            Temporal::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
            },
        ) => Ok(Cell::Text(date_time_text(
            (i64::from(year), u32::from(month), u32::from(day)),
            u32::from(hour),
            u32::from(minute),
            u32::from(second),
            micros,
            *fsp,
        ))),
        (
            ColumnType::Time { fsp },
            Temporal::Time {
                negative,
                hours,
                minute,
                second,
                micros,
            },
        ) => {
            let mut text = String::with_capacity(16);
            if negative {
                text.push('-');
            }
            push_clock(
                &mut text,
                hours,
                u32::from(minute),
                u32::from(second),
                micros,
                *fsp,
            );
            Ok(Cell::Text(text))
        }
        _ => Err(unexpected(value)),
    }
}

enum Temporal {
    DateTime {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
    },
    Time {
        negative: bool,
        hours: u32,
        minute: u8,
        second: u8,
        micros: u32,
    },
}

/// Reads the text protocol's `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` or `[-]HHH:MM:SS[.ffffff]`.
fn parse_temporal(ty: &ColumnType, text: &str) -> Result<Temporal, DecodeError> {
    let bad = || format!("cannot read {text:?} as a date or time");
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let clock = |s: &str| -> Result<(u32, u32, u32, u32), DecodeError> {
        let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
        let mut parts = hms.split(':');
        let (Some(h), Some(m), Some(sec), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let micros = if frac.is_empty() {
            0
        } else {
            let padded: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
            num(&padded)?
        };
        Ok((num(h)?, num(m)?, num(sec)?, micros))
    };
    if let ColumnType::Time { .. } = ty {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (hours, minute, second, micros) = clock(rest)?;
        return Ok(Temporal::Time {
            negative,
            hours,
            minute: minute as u8,
            second: second as u8,
            micros,
        });
    }
    let (date, time) = text.split_once(' ').unwrap_or((text, "00:00:00"));
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (hour, minute, second, micros) = clock(time)?;
    Ok(Temporal::DateTime {
        year: num(y)? as u16,
        month: num(m)? as u8,
        day: num(d)? as u8,
        hour: hour as u8,
        minute: minute as u8,
        second: second as u8,
        micros,
    })
}

// Temporal text is built digit by digit rather than with `format!`: every DATETIME
// cell of every binlog row goes through here, and `format!` cost three allocations
// per cell (measured: a tenth of the tailer's CPU on the overhead scenario).

/// Appends `n` zero-padded to `width` digits (a wider number in full, as `{n:0width$}`).
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Appends `YYYY-MM-DD`.
fn push_date(out: &mut String, year: i64, month: u32, day: u32) {
    if year < 0 {
        // Not a MySQL date; written as `format!` would, for completeness.
        out.push_str(&format!("{year:04}"));
    } else {
        push_padded(out, year as u64, 4);
    }
    out.push('-');
    push_padded(out, u64::from(month), 2);
    out.push('-');
    push_padded(out, u64::from(day), 2);
}

/// Appends `HH:MM:SS[.ffffff]`, the fraction cut to the column's precision `fsp`.
fn push_clock(out: &mut String, hours: u32, minute: u32, second: u32, micros: u32, fsp: u8) {
    push_padded(out, u64::from(hours), 2);
    out.push(':');
    push_padded(out, u64::from(minute), 2);
    out.push(':');
    push_padded(out, u64::from(second), 2);
    push_fraction(out, micros, fsp);
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`.
fn date_time_text(
    (year, month, day): (i64, u32, u32),
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
    fsp: u8,
) -> String {
    let mut text = String::with_capacity(26);
    push_date(&mut text, year, month, day);
    text.push(' ');
    push_clock(&mut text, hour, minute, second, micros, fsp);
    text
}

/// Appends `.ffffff` cut to the column's fractional-seconds precision; nothing for
/// precision 0. (Microseconds above 999 999 come only from a broken value; they are
/// clamped rather than written as a seventh digit.)
fn push_fraction(out: &mut String, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros.min(999_999)).as_bytes();
    let zeros = 6 - digits.len();
    out.push('.');
    for i in 0..usize::from(fsp.min(6)) {
        out.push(if i < zeros {
            '0'
        } else {
            char::from(digits[i - zeros])
        });
    }
}

/// UTC `YYYY-MM-DD HH:MM:SS[.ffffff]` of a Unix timestamp. Epoch 0 is MySQL's zero
/// `TIMESTAMP` (stored under a lax `sql_mode`), which `SELECT` shows as
/// `0000-00-00 00:00:00`: no TIMESTAMP can be 1970-01-01 00:00:00 UTC (its range starts
/// a second later).
fn epoch_text(secs: i64, micros: u32, fsp: u8) -> String {
    if secs == 0 && micros == 0 {
        return date_time_text((0, 0, 0), 0, 0, 0, 0, fsp);
    }
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400) as u32;
    date_time_text(
        civil_from_days(days),
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        micros,
        fsp,
    )
}

/// Day count since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(ty: ColumnType, value: Value) -> Cell {
        from_sql(&ty, &value).unwrap()
    }

    fn binlog(ty: ColumnType, value: Value) -> Cell {
        from_binlog(&ty, &BinlogValue::Value(value)).unwrap()
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }

    #[test]
    fn integers_keep_the_full_64_bit_range() {
        let bigint_unsigned = ColumnType::Int {
            unsigned: true,
            bytes: 8,
        };
        assert_eq!(
            sql(bigint_unsigned.clone(), Value::UInt(u64::MAX)),
            Cell::UInt(u64::MAX)
        );
        assert_eq!(
            binlog(bigint_unsigned.clone(), Value::Int(-1)),
            Cell::UInt(u64::MAX)
        );
        assert_eq!(
            sql(
                bigint_unsigned,
                Value::Bytes(b"18446744073709551615".to_vec())
            ),
            Cell::UInt(u64::MAX)
        );
        let tinyint_unsigned = ColumnType::Int {
            unsigned: true,
            bytes: 1,
        };
        assert_eq!(binlog(tinyint_unsigned, Value::Int(-1)), Cell::UInt(255));
        let bigint = ColumnType::Int {
            unsigned: false,
            bytes: 8,
        };
        assert_eq!(
            sql(bigint.clone(), Value::Int(i64::MIN)),
            Cell::Int(i64::MIN)
        );
        assert_eq!(binlog(bigint, Value::Int(i64::MIN)), Cell::Int(i64::MIN));
    }

    #[test]
    fn decimals_have_the_column_scale() {
        assert_eq!(normalize_decimal("12.34", 10).unwrap(), "12.3400000000");
        assert_eq!(normalize_decimal("-0.5", 2).unwrap(), "-0.50");
        assert_eq!(normalize_decimal("007", 0).unwrap(), "7");
        assert_eq!(normalize_decimal("-0.000", 3).unwrap(), "0.000");
        assert_eq!(normalize_decimal(".5", 1).unwrap(), "0.5");
        assert!(normalize_decimal("1e5", 0).is_err());
        let ty = ColumnType::Decimal { scale: 10 };
        let max = "99999999999999999999.9999999999";
        assert_eq!(sql(ty.clone(), Value::Bytes(max.into())), text(max));
        assert_eq!(
            binlog(ty, Value::Bytes("-1.5".into())),
            text("-1.5000000000")
        );
    }

    #[test]
    fn datetimes_have_exactly_the_column_fraction() {
        let dt6 = ColumnType::DateTime { fsp: 6 };
        let want = text("2024-02-29 23:59:58.000123");
        assert_eq!(
            sql(dt6.clone(), Value::Date(2024, 2, 29, 23, 59, 58, 123)),
            want
        );
        assert_eq!(
            sql(dt6, Value::Bytes(b"2024-02-29 23:59:58.000123".to_vec())),
            want
        );
        let dt0 = ColumnType::DateTime { fsp: 0 };
        assert_eq!(
            sql(dt0, Value::Date(2024, 1, 2, 3, 4, 5, 0)),
            text("2024-01-02 03:04:05")
        );
        let dt3 = ColumnType::DateTime { fsp: 3 };
        assert_eq!(
            sql(dt3.clone(), Value::Date(2024, 1, 2, 3, 4, 5, 120_000)),
            text("2024-01-02 03:04:05.120")
        );
        assert_eq!(
            sql(dt3, Value::Bytes(b"2024-01-02 03:04:05.12".to_vec())),
            text("2024-01-02 03:04:05.120")
        );
        assert_eq!(
            sql(ColumnType::Date, Value::Date(0, 0, 0, 0, 0, 0, 0)),
            text("0000-00-00")
        );
        assert_eq!(
            sql(ColumnType::Date, Value::Bytes(b"1999-12-31".to_vec())),
            text("1999-12-31")
        );
    }

    #[test]
    fn timestamps_from_the_binlog_are_utc() {
        let ts6 = ColumnType::Timestamp { fsp: 6 };
        assert_eq!(
            binlog(ts6.clone(), Value::Bytes(b"1709251198.000123".to_vec())),
            text("2024-02-29 23:59:58.000123")
        );
        assert_eq!(
            binlog(ts6.clone(), Value::Bytes(b"1".to_vec())),
            text("1970-01-01 00:00:01.000000")
        );
        // The zero TIMESTAMP of a lax sql_mode reads as SELECT shows it.
        assert_eq!(
            binlog(ts6, Value::Bytes(b"0".to_vec())),
            text("0000-00-00 00:00:00.000000")
        );
        assert_eq!(
            binlog(ColumnType::Timestamp { fsp: 0 }, Value::Int(0)),
            text("0000-00-00 00:00:00")
        );
        let ts0 = ColumnType::Timestamp { fsp: 0 };
        assert_eq!(
            binlog(ts0, Value::Int(2_147_483_647)),
            text("2038-01-19 03:14:07")
        );
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for days in [-800_000, -1, 0, 1, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn negative_and_long_times() {
        let t6 = ColumnType::Time { fsp: 6 };
        let want = text("-838:59:59.000000");
        assert_eq!(sql(t6.clone(), Value::Time(true, 34, 22, 59, 59, 0)), want);
        assert_eq!(
            sql(t6.clone(), Value::Bytes(b"-838:59:59.000000".to_vec())),
            want
        );
        assert_eq!(
            sql(t6, Value::Time(true, 0, 1, 2, 3, 456_789)),
            text("-01:02:03.456789")
        );
    }

    #[test]
    fn enum_set_year_bit_and_binary_from_the_binlog() {
        let members = vec!["small".to_owned(), "medium".to_owned(), "large".to_owned()];
        assert_eq!(
            binlog(ColumnType::Enum(members.clone()), Value::Int(2)),
            text("medium")
        );
        assert_eq!(
            binlog(ColumnType::Enum(members.clone()), Value::Int(0)),
            text("")
        );
        assert!(
            from_binlog(
                &ColumnType::Enum(members.clone()),
                &BinlogValue::Value(Value::Int(4))
            )
            .is_err()
        );
        assert_eq!(
            binlog(ColumnType::Set(members.clone()), Value::Bytes(vec![0b101])),
            text("small,large")
        );
        assert_eq!(
            binlog(ColumnType::Set(members), Value::Bytes(vec![0])),
            text("")
        );
        assert_eq!(
            binlog(ColumnType::Year, Value::Bytes(b"2155".to_vec())),
            Cell::UInt(2155)
        );
        assert_eq!(
            binlog(ColumnType::Year, Value::Bytes(b"1900".to_vec())),
            Cell::UInt(0)
        );
        assert_eq!(
            binlog(ColumnType::Bit, Value::Bytes(vec![0x03, 0xff])),
            Cell::UInt(1023)
        );
        let binary16 = ColumnType::Binary { pad_to: Some(16) };
        let mut want = vec![0x00, 0x01, 0xff];
        want.resize(16, 0);
        assert_eq!(
            binlog(binary16, Value::Bytes(vec![0x00, 0x01, 0xff])),
            Cell::Bytes(want)
        );
    }

    #[test]
    fn json_is_normalised() {
        let a = sql(
            ColumnType::Json,
            Value::Bytes(br#"{ "b": 1, "a": [true, null, "x"] }"#.to_vec()),
        );
        assert_eq!(a, Cell::Json(r#"{"a":[true,null,"x"],"b":1}"#.to_owned()));
        assert!(from_sql(&ColumnType::Json, &Value::Bytes(b"{".to_vec())).is_err());
        // Numbers are kept as MySQL holds them, not rounded through an f64.
        assert_eq!(
            sql(
                ColumnType::Json,
                Value::Bytes(b"[14871.466378840501, 18446744073709551616]".to_vec())
            ),
            Cell::Json("[14871.466378840501,18446744073709551616]".to_owned())
        );
    }

    #[test]
    fn canonical_json_decodes_back_to_the_same_cells() {
        use serde_json::json;
        let cases = [
            (
                ColumnType::Int {
                    unsigned: true,
                    bytes: 8,
                },
                json!(18446744073709551615u64),
                Cell::UInt(u64::MAX),
            ),
            (
                ColumnType::Int {
                    unsigned: false,
                    bytes: 8,
                },
                json!(-5),
                Cell::Int(-5),
            ),
            (ColumnType::Float, json!(1.25), Cell::Float(1.25)),
            (ColumnType::Decimal { scale: 2 }, json!("1.5"), text("1.50")),
            (
                ColumnType::Binary { pad_to: Some(4) },
                json!("AAH/"),
                Cell::Bytes(vec![0, 1, 0xff, 0]),
            ),
            (
                ColumnType::Json,
                json!({"b": 1, "a": [true]}),
                Cell::Json(r#"{"a":[true],"b":1}"#.into()),
            ),
            (
                ColumnType::DateTime { fsp: 6 },
                json!("2024-01-01 00:00:00.000001"),
                text("2024-01-01 00:00:00.000001"),
            ),
            (ColumnType::Text, serde_json::Value::Null, Cell::Null),
        ];
        let raw = |v: &serde_json::Value| serde_json::value::to_raw_value(v).unwrap();
        for (ty, value, want) in cases {
            assert_eq!(from_json(&ty, &raw(&value)), Ok(want), "{ty:?} {value}");
        }
        assert!(
            from_json(
                &ColumnType::Int {
                    unsigned: false,
                    bytes: 4
                },
                &raw(&json!("7"))
            )
            .is_err()
        );
        assert!(
            from_json(
                &ColumnType::Binary { pad_to: None },
                &raw(&json!("not base64!"))
            )
            .is_err()
        );
        // A JSON column's numbers keep their text.
        let exact = RawValue::from_string("[14871.466378840501, 1e400]".to_owned()).unwrap();
        assert_eq!(
            from_json(&ColumnType::Json, &exact),
            Ok(Cell::Json("[14871.466378840501,1e400]".to_owned()))
        );
    }

    #[test]
    fn hash_text_decodes_back_to_the_same_cells() {
        let cases = [
            (
                ColumnType::Int {
                    unsigned: true,
                    bytes: 8,
                },
                Cell::UInt(u64::MAX),
            ),
            (
                ColumnType::Int {
                    unsigned: false,
                    bytes: 8,
                },
                Cell::Int(i64::MIN),
            ),
            (ColumnType::Bit, Cell::UInt(1023)),
            (ColumnType::Double, Cell::Double(-2.5e-300)),
            (ColumnType::Float, Cell::Float(0.1)),
            (
                ColumnType::Binary { pad_to: None },
                Cell::Bytes(vec![0, 0xff]),
            ),
            (ColumnType::Json, Cell::Json(r#"{"a":1}"#.into())),
            (ColumnType::Decimal { scale: 2 }, text("-1.50")),
            (ColumnType::Geometry, text("SRID=0;POINT(1 2)")),
        ];
        for (ty, cell) in cases {
            let mut written = Vec::new();
            cell.write_text(&mut written);
            assert_eq!(from_hash_text(&ty, &written), Ok(cell), "{ty:?}");
        }
    }

    #[test]
    fn text_must_be_utf8() {
        assert_eq!(
            sql(ColumnType::Text, Value::Bytes("🦀 ok".as_bytes().to_vec())),
            text("🦀 ok")
        );
        assert!(from_sql(&ColumnType::Text, &Value::Bytes(vec![0xff])).is_err());
        assert_eq!(sql(ColumnType::Text, Value::NULL), Cell::Null);
    }
}
