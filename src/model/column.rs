//! A column's declared type, as far as the encoding cares, and how it is read off
//! `information_schema`.

/// A column's declared type, as far as encoding cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// TINYINT (1 byte) … BIGINT (8 bytes).
    Int {
        unsigned: bool,
        bytes: u8,
    },
    Decimal {
        scale: u32,
    },
    Float,
    Double,
    Date,
    DateTime {
        fsp: u8,
    },
    /// Shown in UTC.
    Timestamp {
        fsp: u8,
    },
    Time {
        fsp: u8,
    },
    Year,
    /// CHAR, VARCHAR, TEXT.
    Text,
    /// BINARY, VARBINARY, BLOB. `BINARY(n)` is padded to `n` bytes because the binlog
    /// drops its trailing zero bytes while `SELECT` returns them.
    Binary {
        pad_to: Option<usize>,
    },
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit,
    /// MySQL `JSON`, or MariaDB's `JSON` alias (`LONGTEXT CHECK (json_valid(col))`).
    Json,
    /// `GEOMETRY` and its subtypes, written as Extended WKT ([`super::geometry`]).
    Geometry,
}

/// The `information_schema.COLUMNS` facts a [`ColumnType`] is made from.
#[derive(Debug, Clone, Default)]
pub struct ColumnFacts {
    pub data_type: String,
    pub column_type: String,
    pub numeric_scale: Option<u64>,
    pub datetime_precision: Option<u64>,
    pub octet_length: Option<u64>,
    /// MariaDB declares JSON columns as LONGTEXT with a `json_valid` check.
    pub has_json_check: bool,
}

impl ColumnType {
    /// Maps a column's declared type; `Err` names a type cachesync cannot encode.
    pub fn from_facts(facts: &ColumnFacts) -> std::result::Result<ColumnType, String> {
        let unsigned = facts.column_type.contains("unsigned");
        let fsp = facts.datetime_precision.unwrap_or(0).min(6) as u8;
        let ty = match facts.data_type.as_str() {
            "tinyint" => ColumnType::Int { unsigned, bytes: 1 },
            "smallint" => ColumnType::Int { unsigned, bytes: 2 },
            "mediumint" => ColumnType::Int { unsigned, bytes: 3 },
            "int" | "integer" => ColumnType::Int { unsigned, bytes: 4 },
            "bigint" => ColumnType::Int { unsigned, bytes: 8 },
            "decimal" | "numeric" => ColumnType::Decimal {
                scale: facts.numeric_scale.unwrap_or(0) as u32,
            },
            "float" => ColumnType::Float,
            "double" | "real" => ColumnType::Double,
            "date" => ColumnType::Date,
            "datetime" => ColumnType::DateTime { fsp },
            "timestamp" => ColumnType::Timestamp { fsp },
            "time" => ColumnType::Time { fsp },
            "year" => ColumnType::Year,
            "longtext" if facts.has_json_check => ColumnType::Json,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                ColumnType::Text
            }
            "binary" => ColumnType::Binary {
                pad_to: facts.octet_length.map(|n| n as usize),
            },
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                ColumnType::Binary { pad_to: None }
            }
            "enum" => ColumnType::Enum(parse_members(&facts.column_type)),
            "set" => ColumnType::Set(parse_members(&facts.column_type)),
            "bit" => ColumnType::Bit,
            "json" => ColumnType::Json,
            // MySQL 8 names GEOMETRYCOLLECTION `geomcollection` in DATA_TYPE.
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" | "geomcollection" => ColumnType::Geometry,
            _ => return Err(facts.column_type.clone()),
        };
        Ok(ty)
    }

    /// Whether values of this type can serve as a version (an integer).
    pub fn is_integer(&self) -> bool {
        matches!(self, ColumnType::Int { .. })
    }
}

/// The members of `enum('a','b''c')` / `set(...)`, unquoted.
fn parse_members(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let inner = column_type[open + 1..]
        .strip_suffix(')')
        .unwrap_or(&column_type[open + 1..]);
    let mut members = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                Some('\'') | None => break,
                Some(c) => member.push(c),
            }
        }
        members.push(member);
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(data_type: &str, column_type: &str) -> ColumnFacts {
        ColumnFacts {
            data_type: data_type.into(),
            column_type: column_type.into(),
            ..ColumnFacts::default()
        }
    }

    #[test]
    fn maps_declared_types() {
        assert_eq!(
            ColumnType::from_facts(&facts("bigint", "bigint(20) unsigned")),
            Ok(ColumnType::Int {
                unsigned: true,
                bytes: 8
            })
        );
        assert_eq!(
            ColumnType::from_facts(&ColumnFacts {
                octet_length: Some(16),
                ..facts("binary", "binary(16)")
            }),
            Ok(ColumnType::Binary { pad_to: Some(16) })
        );
        assert_eq!(
            ColumnType::from_facts(&ColumnFacts {
                has_json_check: true,
                ..facts("longtext", "longtext")
            }),
            Ok(ColumnType::Json)
        );
        assert_eq!(
            ColumnType::from_facts(&facts("point", "point")),
            Ok(ColumnType::Geometry)
        );
        assert_eq!(
            ColumnType::from_facts(&facts("geomcollection", "geomcollection")),
            Ok(ColumnType::Geometry)
        );
        assert_eq!(
            ColumnType::from_facts(&facts("vector", "vector(3)")),
            Err("vector(3)".to_owned())
        );
    }

    #[test]
    fn parses_enum_members_with_quotes_and_commas() {
        assert_eq!(
            parse_members("enum('a','it''s','x,y','')"),
            vec!["a", "it's", "x,y", ""]
        );
    }
}
