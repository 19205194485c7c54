//! Spatial values (`GEOMETRY`, `POINT`, `LINESTRING`, `POLYGON`, `MULTIPOINT`,
//! `MULTILINESTRING`, `MULTIPOLYGON`, `GEOMETRYCOLLECTION`) as text — pure, no I/O.
//!
//! MySQL and MariaDB keep a spatial value in one internal form, and both of cachesync's
//! sources hand it over unchanged: a `SELECT` returns it as bytes, and the row binlog
//! logs the same bytes as a length-prefixed blob. The form is a 4-byte little-endian
//! SRID followed by the value as OGC Well-Known Binary (WKB). [`ewkt`] turns those bytes
//! into the contract's text, so a row read either way encodes identically.
//!
//! The text is *Extended WKT*: `SRID=<srid>;` then the OGC WKT of the value, e.g.
//! `SRID=4326;POINT(-122.4194 37.7749)`. Chosen over GeoJSON because it is lossless and
//! self-contained: it carries the SRID (GeoJSON has no place for one since RFC 7946), it
//! reads back with `ST_GeomFromText(wkt, srid)` in MySQL and `ST_GeomFromEWKT` in
//! PostGIS, and it is a plain string in both the `json` and the `hash` encodings. The
//! exact shape (so two encodings of one value are equal byte for byte):
//!
//! - the SRID is always present, `SRID=0;` included;
//! - type names upper case, no space before `(`, coordinates `x y` separated by `,`
//!   without spaces (as MySQL's `ST_AsText` writes them): `LINESTRING(0 0,1 1.5)`;
//! - each coordinate is the shortest decimal text that reads back to the same double
//!   (as `DOUBLE` columns are written), without a trailing `.0`: `1`, `-0.5`, `1e300`;
//! - `MULTIPOINT((1 2),(3 4))` (each point in parentheses, as OGC 1.2 writes it);
//! - an empty collection is `<TYPE> EMPTY`; a point whose coordinates are both NaN (WKB's
//!   empty point) is `POINT EMPTY`.
//!
//! WKB is parsed here (about a hundred lines) rather than with a crate: the format is
//! small and fixed, a crate would bring its own geometry model and text formatting that
//! the contract would then depend on, and the error messages can name what is wrong.
//! Both byte orders are read; WKB with Z or M coordinates, which MySQL and MariaDB do not
//! store, is refused with a message.

use std::fmt::Write as _;

/// WKB geometry type codes (OGC Simple Features, 2D).
const POINT: u32 = 1;
const LINESTRING: u32 = 2;
const POLYGON: u32 = 3;
const MULTIPOINT: u32 = 4;
const MULTILINESTRING: u32 = 5;
const MULTIPOLYGON: u32 = 6;
const GEOMETRYCOLLECTION: u32 = 7;

/// Collections nest; a value nested deeper than this is refused rather than recursed
/// into (MySQL itself limits nesting far below it).
const MAX_DEPTH: usize = 64;

/// The contract text of a spatial value in MySQL's internal form (SRID + WKB).
pub fn ewkt(internal: &[u8]) -> Result<String, String> {
    if internal.len() < 4 {
        return Err(format!(
            "a spatial value of {} bytes; MySQL's form is a 4-byte SRID then WKB",
            internal.len()
        ));
    }
    let srid = u32::from_le_bytes([internal[0], internal[1], internal[2], internal[3]]);
    let mut out = format!("SRID={srid};");
    let mut reader = Reader {
        bytes: &internal[4..],
        at: 0,
    };
    reader.geometry(&mut out, 0)?;
    if reader.at != reader.bytes.len() {
        return Err(format!(
            "{} bytes left over after the WKB value",
            reader.bytes.len() - reader.at
        ));
    }
    Ok(out)
}

/// Reads WKB from `bytes`, appending WKT.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.at + N;
        let slice = self.bytes.get(self.at..end).ok_or_else(|| {
            format!(
                "the WKB value ends early (byte {} of {})",
                self.at,
                self.bytes.len()
            )
        })?;
        self.at = end;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&mut self, little: bool) -> Result<u32, String> {
        let b = self.take::<4>()?;
        Ok(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn f64(&mut self, little: bool) -> Result<f64, String> {
        let b = self.take::<8>()?;
        Ok(if little {
            f64::from_le_bytes(b)
        } else {
            f64::from_be_bytes(b)
        })
    }

    /// A count of items that each take at least `min_bytes`: refused when the value is
    /// too short to hold them, so a corrupt count cannot ask for a huge allocation.
    fn count(&mut self, little: bool, min_bytes: usize) -> Result<usize, String> {
        let n = self.u32(little)? as usize;
        let left = self.bytes.len() - self.at;
        if n.saturating_mul(min_bytes) > left {
            return Err(format!(
                "the WKB value announces {n} items but holds only {left} more bytes"
            ));
        }
        Ok(n)
    }

    /// One geometry with its byte-order byte and type.
    fn geometry(&mut self, out: &mut String, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("collections nested deeper than {MAX_DEPTH}"));
        }
        let little = match self.take::<1>()?[0] {
            0 => false,
            1 => true,
            other => return Err(format!("WKB byte order {other} (expected 0 or 1)")),
        };
        let kind = self.u32(little)?;
        match kind {
            POINT => {
                out.push_str("POINT");
                let (x, y) = (self.f64(little)?, self.f64(little)?);
                if x.is_nan() && y.is_nan() {
                    out.push_str(" EMPTY");
                    return Ok(());
                }
                out.push('(');
                coordinate(out, x, y)?;
                out.push(')');
            }
            LINESTRING => {
                out.push_str("LINESTRING");
                self.points(out, little)?;
            }
            POLYGON => {
                out.push_str("POLYGON");
                self.rings(out, little)?;
            }
            MULTIPOINT | MULTILINESTRING | MULTIPOLYGON | GEOMETRYCOLLECTION => {
                let name = match kind {
                    MULTIPOINT => "MULTIPOINT",
                    MULTILINESTRING => "MULTILINESTRING",
                    MULTIPOLYGON => "MULTIPOLYGON",
                    _ => "GEOMETRYCOLLECTION",
                };
                out.push_str(name);
                // Every member is a whole WKB geometry: byte order, type, body (≥ 9 bytes).
                let n = self.count(little, 9)?;
                if n == 0 {
                    out.push_str(" EMPTY");
                    return Ok(());
                }
                out.push('(');
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    let start = out.len();
                    self.geometry(out, depth + 1)?;
                    let member = &out[start..];
                    let expected = match kind {
                        MULTIPOINT => Some("POINT"),
                        MULTILINESTRING => Some("LINESTRING"),
                        MULTIPOLYGON => Some("POLYGON"),
                        _ => None,
                    };
                    if let Some(tag) = expected {
                        // Inside a MULTI* the members are written without their type name.
                        let Some(body) = member.strip_prefix(tag) else {
                            return Err(format!("{member} inside a {name}"));
                        };
                        let body = if body == " EMPTY" {
                            "EMPTY".to_owned()
                        } else {
                            body.to_owned()
                        };
                        out.truncate(start);
                        out.push_str(&body);
                    }
                }
                out.push(')');
            }
            other => {
                return Err(match other {
                    1001..=1007 | 2001..=2007 | 3001..=3007 => format!(
                        "WKB type {other} has Z or M coordinates, which MySQL does not store"
                    ),
                    _ if other & 0xE000_0000 != 0 => format!(
                        "WKB type {other:#x} is extended (EWKB) WKB, which MySQL does not store"
                    ),
                    _ => format!("unknown WKB geometry type {other}"),
                });
            }
        }
        Ok(())
    }

    /// `(x y,x y,...)` or ` EMPTY`.
    fn points(&mut self, out: &mut String, little: bool) -> Result<(), String> {
        let n = self.count(little, 16)?;
        if n == 0 {
            out.push_str(" EMPTY");
            return Ok(());
        }
        out.push('(');
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            let (x, y) = (self.f64(little)?, self.f64(little)?);
            coordinate(out, x, y)?;
        }
        out.push(')');
        Ok(())
    }

    /// `((ring),(ring))` or ` EMPTY`.
    fn rings(&mut self, out: &mut String, little: bool) -> Result<(), String> {
        let n = self.count(little, 4)?;
        if n == 0 {
            out.push_str(" EMPTY");
            return Ok(());
        }
        out.push('(');
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            let start = out.len();
            self.points(out, little)?;
            if &out[start..] == " EMPTY" {
                out.truncate(start);
                out.push_str("EMPTY");
            }
        }
        out.push(')');
        Ok(())
    }
}

/// Appends `x y`.
fn coordinate(out: &mut String, x: f64, y: f64) -> Result<(), String> {
    number(out, x)?;
    out.push(' ');
    number(out, y)
}

/// The shortest text that reads back to `v`, without a trailing `.0`.
fn number(out: &mut String, v: f64) -> Result<(), String> {
    if !v.is_finite() {
        return Err(format!("coordinate {v} is not a finite number"));
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(v);
    let text = text.strip_suffix(".0").unwrap_or(text);
    let _ = write!(out, "{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WKB builder for the tests (little endian unless said otherwise).
    struct Wkb(Vec<u8>);

    impl Wkb {
        fn new(srid: u32) -> Wkb {
            Wkb(srid.to_le_bytes().to_vec())
        }
        fn head(mut self, kind: u32) -> Wkb {
            self.0.push(1);
            self.0.extend(kind.to_le_bytes());
            self
        }
        fn n(mut self, n: u32) -> Wkb {
            self.0.extend(n.to_le_bytes());
            self
        }
        fn xy(mut self, x: f64, y: f64) -> Wkb {
            self.0.extend(x.to_le_bytes());
            self.0.extend(y.to_le_bytes());
            self
        }
    }

    #[test]
    fn points_and_their_coordinates() {
        let p = Wkb::new(4326).head(POINT).xy(-122.4194, 37.7749);
        assert_eq!(ewkt(&p.0).unwrap(), "SRID=4326;POINT(-122.4194 37.7749)");
        let p = Wkb::new(0).head(POINT).xy(1.0, -0.0);
        assert_eq!(ewkt(&p.0).unwrap(), "SRID=0;POINT(1 -0)");
        let p = Wkb::new(0).head(POINT).xy(1e300, 0.1);
        assert_eq!(ewkt(&p.0).unwrap(), "SRID=0;POINT(1e300 0.1)");
        let p = Wkb::new(0).head(POINT).xy(f64::NAN, f64::NAN);
        assert_eq!(ewkt(&p.0).unwrap(), "SRID=0;POINT EMPTY");
        let p = Wkb::new(0).head(POINT).xy(f64::INFINITY, 0.0);
        assert!(ewkt(&p.0).unwrap_err().contains("finite"));
        // Big endian reads the same.
        let mut be = 7u32.to_le_bytes().to_vec();
        be.push(0);
        be.extend(POINT.to_be_bytes());
        be.extend(2.5f64.to_be_bytes());
        be.extend(3f64.to_be_bytes());
        assert_eq!(ewkt(&be).unwrap(), "SRID=7;POINT(2.5 3)");
    }

    #[test]
    fn lines_polygons_and_collections() {
        let line = Wkb::new(0).head(LINESTRING).n(2).xy(0.0, 0.0).xy(1.0, 1.5);
        assert_eq!(ewkt(&line.0).unwrap(), "SRID=0;LINESTRING(0 0,1 1.5)");
        let polygon = Wkb::new(0)
            .head(POLYGON)
            .n(2)
            .n(4)
            .xy(0.0, 0.0)
            .xy(4.0, 0.0)
            .xy(0.0, 4.0)
            .xy(0.0, 0.0)
            .n(4)
            .xy(1.0, 1.0)
            .xy(2.0, 1.0)
            .xy(1.0, 2.0)
            .xy(1.0, 1.0);
        assert_eq!(
            ewkt(&polygon.0).unwrap(),
            "SRID=0;POLYGON((0 0,4 0,0 4,0 0),(1 1,2 1,1 2,1 1))"
        );
        let multipoint = Wkb::new(0)
            .head(MULTIPOINT)
            .n(2)
            .head(POINT)
            .xy(1.0, 2.0)
            .head(POINT)
            .xy(3.0, 4.0);
        assert_eq!(
            ewkt(&multipoint.0).unwrap(),
            "SRID=0;MULTIPOINT((1 2),(3 4))"
        );
        let multiline = Wkb::new(0)
            .head(MULTILINESTRING)
            .n(2)
            .head(LINESTRING)
            .n(2)
            .xy(0.0, 0.0)
            .xy(1.0, 1.0)
            .head(LINESTRING)
            .n(0);
        assert_eq!(
            ewkt(&multiline.0).unwrap(),
            "SRID=0;MULTILINESTRING((0 0,1 1),EMPTY)"
        );
        let multipolygon = Wkb::new(0)
            .head(MULTIPOLYGON)
            .n(1)
            .head(POLYGON)
            .n(1)
            .n(4)
            .xy(0.0, 0.0)
            .xy(1.0, 0.0)
            .xy(0.0, 1.0)
            .xy(0.0, 0.0);
        assert_eq!(
            ewkt(&multipolygon.0).unwrap(),
            "SRID=0;MULTIPOLYGON(((0 0,1 0,0 1,0 0)))"
        );
        let collection = Wkb::new(3857)
            .head(GEOMETRYCOLLECTION)
            .n(3)
            .head(POINT)
            .xy(1.0, 1.0)
            .head(LINESTRING)
            .n(2)
            .xy(0.0, 0.0)
            .xy(2.0, 2.0)
            .head(GEOMETRYCOLLECTION)
            .n(0);
        assert_eq!(
            ewkt(&collection.0).unwrap(),
            "SRID=3857;GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,2 2),GEOMETRYCOLLECTION EMPTY)"
        );
    }

    #[test]
    fn malformed_values_are_refused_with_a_reason() {
        assert!(ewkt(&[0, 0]).unwrap_err().contains("4-byte SRID"));
        let short = Wkb::new(0).head(POINT).0;
        assert!(ewkt(&short).unwrap_err().contains("ends early"));
        let huge = Wkb::new(0).head(LINESTRING).n(u32::MAX).0;
        assert!(ewkt(&huge).unwrap_err().contains("announces"));
        let z = Wkb::new(0).head(1001).xy(1.0, 2.0).0;
        assert!(ewkt(&z).unwrap_err().contains("Z or M"));
        let mut trailing = Wkb::new(0).head(POINT).xy(1.0, 2.0).0;
        trailing.push(0);
        assert!(ewkt(&trailing).unwrap_err().contains("left over"));
        let wrong_member = Wkb::new(0).head(MULTIPOINT).n(1).head(LINESTRING).n(0).0;
        assert!(ewkt(&wrong_member).unwrap_err().contains("inside"));
        let mut bad_order = Wkb::new(0).0;
        bad_order.push(7);
        assert!(ewkt(&bad_order).unwrap_err().contains("byte order"));
    }
}
