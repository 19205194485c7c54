//! JSON text in canonical form without touching its numbers: the documents of `JSON`
//! columns, and the raw JSON values of API bodies and change events.
//!
//! A `JSON` column's document is stored compact with object keys sorted (the encoding
//! contract), so the same document reads the same from `SELECT`, the binlog and the API.
//! Its numbers are kept as the exact text MySQL holds: parsing them into an `f64`, as
//! `serde_json::Value` does, turned `14871.466378840501` into `14871.4663788405` and
//! `18446744073709551616` into `1.8446744073709552e19` — changed data, and a change
//! `verify` could not see because both sides went through the same rounding. serde_json's
//! [`RawValue`] carries each value's text through untouched; this module only re-lays
//! out objects, arrays and strings around it.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// Why a document is not valid JSON (serde_json's message: what and where).
pub type JsonError = String;

/// The canonical text of the JSON document `text`: compact, object keys sorted (of
/// duplicate keys the last wins, as MySQL keeps it), strings escaped the way serde_json
/// writes them, numbers exactly as written.
pub fn canonical(text: &str) -> Result<String, JsonError> {
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(text.len());
    write_canonical(raw, &mut out)?;
    Ok(out)
}

/// [`canonical`] of bytes that must be UTF-8.
pub fn canonical_bytes(bytes: &[u8]) -> Result<String, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    canonical(text)
}

/// Appends the canonical text of `raw` to `out`.
pub fn write_canonical(raw: &RawValue, out: &mut String) -> Result<(), JsonError> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'{') => {
            let members: BTreeMap<String, &RawValue> =
                serde_json::from_str(text).map_err(|e| e.to_string())?;
            out.push('{');
            for (i, (name, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(name, out);
                out.push(':');
                write_canonical(value, out)?;
            }
            out.push('}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Some(b'"') => {
            let s: String = serde_json::from_str(text).map_err(|e| e.to_string())?;
            write_string(&s, out);
        }
        // A number, true, false or null, validated by the parse that produced `raw`:
        // verbatim.
        _ => out.push_str(text),
    }
    Ok(())
}

/// Appends `s` as a JSON string literal, escaped as serde_json escapes.
fn write_string(s: &str, out: &mut String) {
    // Writing a str to a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

/// What kind of JSON value `raw` is, for messages (`a string "7"`, `an array`).
pub fn kind(raw: &RawValue) -> String {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'{') => "an object".to_owned(),
        Some(b'[') => "an array".to_owned(),
        Some(b'"') => match serde_json::from_str::<String>(text) {
            Ok(s) if s.chars().count() <= 40 => format!("a string {s:?}"),
            _ => "a string".to_owned(),
        },
        Some(b't' | b'f') => format!("a boolean {text}"),
        Some(b'n') => "null".to_owned(),
        _ if text.len() <= 40 => format!("a number {text}"),
        _ => "a number".to_owned(),
    }
}

/// Whether `raw` is JSON `null`.
pub fn is_null(raw: &RawValue) -> bool {
    raw.get().trim() == "null"
}

/// The string `raw` holds, if it is a string.
pub fn as_string(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    text.starts_with('"')
        .then(|| serde_json::from_str(text).ok())
        .flatten()
}

/// The number text `raw` holds, if it is a number.
pub fn as_number(raw: &RawValue) -> Option<&str> {
    let text = raw.get().trim();
    matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')).then_some(text)
}

/// The boolean `raw` holds, if it is one.
pub fn as_bool(raw: &RawValue) -> Option<bool> {
    match raw.get().trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A JSON object whose member values keep their exact text (an API body, a change
/// event's row). Unlike a map, a member given twice is an error rather than a silent
/// pick: a client sending `{"id":1,"id":2}` meant one of them.
#[derive(Debug, Clone)]
pub struct RawObject(pub Vec<(String, Box<RawValue>)>);

/// Equal when the members are the same, in order, with the same text.
impl PartialEq for RawObject {
    fn eq(&self, other: &RawObject) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((a, x), (b, y))| a == b && x.get() == y.get())
    }
}

impl RawObject {
    /// Parses `bytes` as a JSON object; `Err` says what is wrong (not JSON, not an
    /// object, a member given twice).
    pub fn parse(bytes: &[u8]) -> Result<RawObject, String> {
        let raw: Box<RawValue> =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(format!("not a JSON object but {}", kind(&raw)));
        }
        serde_json::from_str(raw.get()).map_err(|e| e.to_string())
    }

    /// The member `name`, if given.
    pub fn get(&self, name: &str) -> Option<&RawValue> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
}

/// For producers that build a row as `serde_json` values (their numbers are already
/// whatever `serde_json` made of them).
impl From<serde_json::Map<String, serde_json::Value>> for RawObject {
    fn from(map: serde_json::Map<String, serde_json::Value>) -> RawObject {
        RawObject(
            map.into_iter()
                .map(|(name, value)| {
                    let raw = serde_json::value::to_raw_value(&value).unwrap_or_default();
                    (name, raw)
                })
                .collect(),
        )
    }
}

impl<'de> serde::Deserialize<'de> for RawObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = RawObject;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawObject, A::Error> {
                let mut members: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if members.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!("{name} is given twice")));
                    }
                    let value: Box<RawValue> = map.next_value()?;
                    members.push((name, value));
                }
                Ok(RawObject(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

impl serde::Serialize for RawObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_text() {
        assert_eq!(
            canonical(
                r#"{ "b": [14871.466378840501, 18446744073709551616, 1E400, -0.0], "a": 1.50 }"#
            )
            .unwrap(),
            r#"{"a":1.50,"b":[14871.466378840501,18446744073709551616,1E400,-0.0]}"#
        );
        assert_eq!(canonical(" 7 ").unwrap(), "7");
    }

    #[test]
    fn objects_are_sorted_strings_reescaped_duplicates_last_wins() {
        assert_eq!(
            canonical(r#"{"b":1,"a":{"d":"\u00e9\n","c":[true,null,false]},"b":2}"#).unwrap(),
            r#"{"a":{"c":[true,null,false],"d":"é\n"},"b":2}"#
        );
        assert_eq!(canonical("[]").unwrap(), "[]");
        assert_eq!(canonical("{}").unwrap(), "{}");
    }

    #[test]
    fn invalid_documents_are_errors() {
        for bad in ["{broken", "[1,", "", "{\"a\":}", "01", "1 2", "\"\\x\""] {
            assert!(canonical(bad).is_err(), "{bad:?}");
        }
        assert!(canonical_bytes(&[0x22, 0xff, 0x22]).is_err());
    }

    #[test]
    fn raw_objects_keep_values_and_refuse_duplicates() {
        let object =
            RawObject::parse(br#"{"id": 1, "doc": {"n": 0.10000000000000000555}}"#).unwrap();
        assert_eq!(object.get("id").unwrap().get(), "1");
        assert_eq!(
            object.get("doc").unwrap().get(),
            r#"{"n": 0.10000000000000000555}"#
        );
        assert!(
            RawObject::parse(br#"{"id":1,"id":2}"#)
                .unwrap_err()
                .contains("id is given twice")
        );
        assert_eq!(
            RawObject::parse(b"[1]").unwrap_err(),
            "not a JSON object but an array"
        );
        assert!(RawObject::parse(b"{").unwrap_err().starts_with("not JSON"));
    }

    #[test]
    fn kinds_name_the_value() {
        let raw = |t: &str| RawValue::from_string(t.to_owned()).unwrap();
        assert_eq!(kind(&raw(r#""7""#)), r#"a string "7""#);
        assert_eq!(kind(&raw("7")), "a number 7");
        assert_eq!(kind(&raw("[1]")), "an array");
        assert_eq!(kind(&raw("null")), "null");
        assert_eq!(kind(&raw("true")), "a boolean true");
    }
}
