//! A table with every column type of the encoding contract (the spatial types too), three rows of it, and the
//! exact JSON the contract gives for each row.

use std::collections::BTreeMap;

pub const CREATE: &str = "CREATE TABLE all_types (
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
    ch CHAR(8) NULL,
    g GEOMETRY NULL,
    pt POINT NULL,
    ls LINESTRING NULL,
    pg POLYGON NULL,
    mpt MULTIPOINT NULL,
    mls MULTILINESTRING NULL,
    mpg MULTIPOLYGON NULL,
    gc GEOMETRYCOLLECTION NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// Row 1 holds the extremes, row 2 is all NULL, row 3 holds ordinary values.
pub const INSERT: &str = r#"INSERT INTO all_types VALUES
 (1, x'0001ff', x'00ff10', x'deadbeef00', '2024-02-29 23:59:58.000123', '9999-12-31 23:59:59',
  '-838:59:59.000000', '2038-01-19 03:14:07.999999', '1000-01-01',
  '-12345678901234567890.0123456789', -9223372036854775808, 18446744073709551615, -128, 255, 16777215,
  3.14159, 2.718281828459045, 'medium', 'a,c,d', b'1111111111', 2155,
  '{"b": [1, 2.5, "x"], "a": null, "nested": {"z": true}}',
  '🦀 crab ✓ 𝄞', 'quote " and \\ backslash', 'abc',
  ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,2 2),POLYGON((0 0,4 0,0 4,0 0),(1 1,2 1,1 2,1 1)))', 3857),
  ST_GeomFromText('POINT(-122.4194 37.7749)', 4326),
  ST_GeomFromText('LINESTRING(0 0,1.5 -2.25,1e-7 123456789.125)'),
  ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 2))'),
  ST_GeomFromText('MULTIPOINT(1 2,3 4)'),
  ST_GeomFromText('MULTILINESTRING((0 0,1 1),(2 2,3 3,4 4))'),
  ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,0 1,0 0)),((5 5,6 5,5 6,5 5)))'),
  ST_GeomFromText('GEOMETRYCOLLECTION EMPTY')),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, x'00000000000000000000000000000001', x'', x'', '1970-01-01 00:00:00.5', '2000-01-01 00:00:00',
  '-01:02:03.456789', '1970-01-01 00:00:01.000000', '0000-00-00',
  '0.0000000001', 0, 0, 0, 0, 0,
  -0.5, -1e-300, 'small', '', b'0', 0,
  '[]', '', '', '',
  ST_GeomFromText('POINT(0 0)'), ST_GeomFromText('POINT(-0.5 0.1)'),
  ST_GeomFromText('LINESTRING(1 1,2 2)'), ST_GeomFromText('POLYGON((0 0,1 0,0 1,0 0))'),
  ST_GeomFromText('MULTIPOINT(0 0)'), ST_GeomFromText('MULTILINESTRING((1 2,3 4))'),
  ST_GeomFromText('MULTIPOLYGON(((0 0,2 0,0 2,0 0)))'),
  ST_GeomFromText('GEOMETRYCOLLECTION(POINT(7 8))'))"#;

/// The contract's JSON for each row, byte for byte.
pub fn expected_json() -> BTreeMap<u64, String> {
    let padded = "AAH/AAAAAAAAAAAAAAAAAA=="; // 00 01 ff + 13 zero bytes
    BTreeMap::from([
        (
            1,
            format!(
                r#"{{"id":1,"uuid":"{padded}","vb":"AP8Q","bl":"3q2+7wA=","dt6":"2024-02-29 23:59:58.000123","dt0":"9999-12-31 23:59:59","t6":"-838:59:59.000000","ts6":"2038-01-19 03:14:07.999999","d":"1000-01-01","amount":"-12345678901234567890.0123456789","i64":-9223372036854775808,"u64":18446744073709551615,"ti":-128,"tu":255,"mu":16777215,"f":3.14159,"db":2.718281828459045,"e":"medium","s":"a,c,d","b10":1023,"y":2155,"j":{{"a":null,"b":[1,2.5,"x"],"nested":{{"z":true}}}},"txt":"🦀 crab ✓ 𝄞","vc":"quote \" and \\ backslash","ch":"abc","g":"SRID=3857;GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,2 2),POLYGON((0 0,4 0,0 4,0 0),(1 1,2 1,1 2,1 1)))","pt":"SRID=4326;POINT(-122.4194 37.7749)","ls":"SRID=0;LINESTRING(0 0,1.5 -2.25,1e-7 123456789.125)","pg":"SRID=0;POLYGON((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 2))","mpt":"SRID=0;MULTIPOINT((1 2),(3 4))","mls":"SRID=0;MULTILINESTRING((0 0,1 1),(2 2,3 3,4 4))","mpg":"SRID=0;MULTIPOLYGON(((0 0,1 0,0 1,0 0)),((5 5,6 5,5 6,5 5)))","gc":"SRID=0;GEOMETRYCOLLECTION EMPTY"}}"#
            ),
        ),
        (
            2,
            r#"{"id":2,"uuid":null,"vb":null,"bl":null,"dt6":null,"dt0":null,"t6":null,"ts6":null,"d":null,"amount":null,"i64":null,"u64":null,"ti":null,"tu":null,"mu":null,"f":null,"db":null,"e":null,"s":null,"b10":null,"y":null,"j":null,"txt":null,"vc":null,"ch":null,"g":null,"pt":null,"ls":null,"pg":null,"mpt":null,"mls":null,"mpg":null,"gc":null}"#.to_owned(),
        ),
        (
            3,
            r#"{"id":3,"uuid":"AAAAAAAAAAAAAAAAAAAAAQ==","vb":"","bl":"","dt6":"1970-01-01 00:00:00.500000","dt0":"2000-01-01 00:00:00","t6":"-01:02:03.456789","ts6":"1970-01-01 00:00:01.000000","d":"0000-00-00","amount":"0.0000000001","i64":0,"u64":0,"ti":0,"tu":0,"mu":0,"f":-0.5,"db":-1e-300,"e":"small","s":"","b10":0,"y":0,"j":[],"txt":"","vc":"","ch":"","g":"SRID=0;POINT(0 0)","pt":"SRID=0;POINT(-0.5 0.1)","ls":"SRID=0;LINESTRING(1 1,2 2)","pg":"SRID=0;POLYGON((0 0,1 0,0 1,0 0))","mpt":"SRID=0;MULTIPOINT((0 0))","mls":"SRID=0;MULTILINESTRING((1 2,3 4))","mpg":"SRID=0;MULTIPOLYGON(((0 0,2 0,0 2,0 0)))","gc":"SRID=0;GEOMETRYCOLLECTION(POINT(7 8))"}"#.to_owned(),
        ),
    ])
}
