//! Redis key templates: `user:{id}`, `order:{shop_id}:{id}`, and the one injective way a
//! row's key values are written into them.
//!
//! A template is literal text with `{column}` placeholders over primary-key columns;
//! `{{` and `}}` stand for literal braces. Placeholder values are written as their
//! canonical text (the same text as the `hash` encoding), except binary values, which
//! are written as lowercase hex so keys stay printable.
//!
//! # Escaping (why two rows never share a key)
//!
//! Written raw, `t:{a}:{b}` gives rows `("x:y", "z")` and `("x", "y:z")` the same key
//! `t:x:y:z`, so a read of one answers the other and a delete of one evicts the other.
//! So in each value, these characters are written as `%XX` per UTF-8 byte (uppercase
//! hex):
//!
//! - `%`, the escape character itself;
//! - `{` and `}`: a hash tag (`{...}`, the Redis Cluster slot) is the template's alone;
//! - `:`, the separator of cachesync's companion-key suffixes (`:cachesync:fill`,
//!   `:cachesync:tombstone`), so a row key holds exactly as many `:` as its template's
//!   literal text and can never equal a companion key of a row of its table, which holds
//!   two more;
//! - every character of the literal text *between* two placeholders (the separators).
//!
//! Everything else is written as it is, so `user:{id}` still renders `user:42`. The
//! rendering is injective because a template's literal text may not hold `%` and two
//! placeholders must be separated by literal text (both checked by [`KeyTemplate::parse`]):
//! reading a key from the left, every `%` starts a 3-character escape inside a value,
//! and every other separator character is the template's — so the values can be cut
//! back out exactly ([`KeyTemplate::split_key`]).

use std::fmt;

use super::cell::Cell;

/// The escape character of placeholder values.
pub const ESCAPE: char = '%';

/// Characters escaped in every placeholder value, whatever the template (see the module
/// doc).
pub const ALWAYS_ESCAPED: [char; 4] = ['%', '{', '}', ':'];

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    source: String,
    parts: Vec<Part>,
    /// What placeholder values escape: [`ALWAYS_ESCAPED`] and the separators.
    escaped: EscapeSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Column(String),
}

/// A piece of a template, as [`KeyTemplate::parts`] yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePart<'a> {
    Literal(&'a str),
    Column(&'a str),
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The characters a template's values escape: an ASCII table plus the rare non-ASCII
/// separator characters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EscapeSet {
    ascii: [bool; 128],
    other: Vec<char>,
}

impl EscapeSet {
    fn new(separators: &[&str]) -> EscapeSet {
        let mut set = EscapeSet {
            ascii: [false; 128],
            other: Vec::new(),
        };
        for c in ALWAYS_ESCAPED
            .into_iter()
            .chain(separators.iter().flat_map(|s| s.chars()))
        {
            if c.is_ascii() {
                set.ascii[c as usize] = true;
            } else if !set.other.contains(&c) {
                set.other.push(c);
            }
        }
        set
    }

    fn contains(&self, c: char) -> bool {
        if c.is_ascii() {
            self.ascii[c as usize]
        } else {
            self.other.contains(&c)
        }
    }

    /// Appends `text` to `key`, escaping the characters of the set.
    fn push_escaped(&self, key: &mut String, text: &str) {
        if !text.chars().any(|c| self.contains(c)) {
            key.push_str(text);
            return;
        }
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for c in text.chars() {
            if self.contains(c) {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    key.push(ESCAPE);
                    key.push(HEX[(b >> 4) as usize] as char);
                    key.push(HEX[(b & 0xf) as usize] as char);
                }
            } else {
                key.push(c);
            }
        }
    }
}

impl KeyTemplate {
    /// Parses `template`; it must hold at least one `{column}` placeholder, placeholders
    /// must be separated by literal text, and the literal text must not hold `%` (the
    /// escape character of values).
    pub fn parse(template: &str) -> Result<KeyTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut column = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(TemplateError(format!(
                                    "unclosed placeholder in {template:?} (write {{{{ for a literal brace)"
                                )));
                            }
                            Some(c) => column.push(c),
                        }
                    }
                    if column.trim().is_empty() {
                        return Err(TemplateError(format!(
                            "empty placeholder {{}} in {template:?}: name a primary-key column, e.g. user:{{id}}"
                        )));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    } else if let Some(Part::Column(previous)) = parts.last() {
                        return Err(TemplateError(format!(
                            "placeholders {{{previous}}} and {{{column}}} in {template:?} must be \
                             separated by literal text (e.g. {{{previous}}}:{{{column}}}), or two rows \
                             could get the same key"
                        )));
                    }
                    parts.push(Part::Column(column));
                }
                '}' => {
                    return Err(TemplateError(format!(
                        "unmatched }} in {template:?} (write }}}} for a literal brace)"
                    )));
                }
                ESCAPE => {
                    return Err(TemplateError(format!(
                        "{template:?} holds {ESCAPE}, the escape character of key values; \
                         use another character in the literal text"
                    )));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| matches!(p, Part::Column(_))) {
            return Err(TemplateError(format!(
                "{template:?} has no {{column}} placeholder, so every row would share one key"
            )));
        }
        let separators: Vec<&str> = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                // Literal text between two placeholders: neither first nor last.
                Part::Literal(s) if i > 0 && i + 1 < parts.len() => Some(s.as_str()),
                _ => None,
            })
            .collect();
        let escaped = EscapeSet::new(&separators);
        Ok(KeyTemplate {
            source: template.to_owned(),
            parts,
            escaped,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The template's pieces in order: literal text (braces unescaped) and placeholder
    /// column names.
    pub fn parts(&self) -> impl Iterator<Item = TemplatePart<'_>> {
        self.parts.iter().map(|p| match p {
            Part::Literal(s) => TemplatePart::Literal(s),
            Part::Column(c) => TemplatePart::Column(c),
        })
    }

    /// The placeholder column names, in order of appearance.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Whether placeholder values of this template escape `c`.
    pub fn escapes(&self, c: char) -> bool {
        self.escaped.contains(c)
    }

    /// The key of the placeholder values `values` (each as its key text, in placeholder
    /// order), escaped as the module doc says. `None` when the count is wrong.
    pub fn render_texts(&self, values: &[&str]) -> Option<String> {
        let mut values = values.iter();
        let mut key = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => key.push_str(s),
                Part::Column(_) => self.escaped.push_escaped(&mut key, values.next()?),
            }
        }
        values.next().is_none().then_some(key)
    }

    /// The inverse of rendering: cuts `key` into its placeholder values (column name and
    /// unescaped key text, in placeholder order), or `None` when `key` is not a key of
    /// this template. Exact, no guessing: see the module doc.
    pub fn split_key<'t>(&'t self, key: &str) -> Option<Vec<(&'t str, String)>> {
        let (first, last) = (self.parts.first()?, self.parts.last()?);
        let mut rest = key;
        let mut parts = self.parts.as_slice();
        if let Part::Literal(prefix) = first {
            rest = rest.strip_prefix(prefix.as_str())?;
            parts = &parts[1..];
        }
        if let Part::Literal(suffix) = last {
            rest = rest.strip_suffix(suffix.as_str())?;
            parts = &parts[..parts.len() - 1];
        }
        // Now `parts` is Column (Literal Column)*: read values and separators in turn.
        let mut values = Vec::new();
        let mut parts = parts.iter();
        while let Some(part) = parts.next() {
            let Part::Column(column) = part else {
                return None;
            };
            let separator = match parts.next() {
                Some(Part::Literal(s)) => Some(s.as_str()),
                Some(Part::Column(_)) => return None,
                None => None,
            };
            let (value, after) = self.read_value(rest, separator)?;
            values.push((column.as_str(), value));
            rest = after;
        }
        rest.is_empty().then_some(values)
    }

    /// Reads one escaped value off the front of `text`, up to `separator` (or the end);
    /// returns it unescaped and the text after the separator.
    fn read_value<'k>(&self, text: &'k str, separator: Option<&str>) -> Option<(String, &'k str)> {
        let mut bytes = Vec::new();
        let mut chars = text.char_indices();
        while let Some((at, c)) = chars.next() {
            if c == ESCAPE {
                let hex = text.get(at + 1..at + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                chars.next();
                chars.next();
            } else if self.escaped.contains(c) {
                // Values never hold it raw: this is where the separator begins.
                let after = text[at..].strip_prefix(separator?)?;
                return Some((String::from_utf8(bytes).ok()?, after));
            } else {
                let mut utf8 = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
        // The end of the text: only the last value may end here.
        match separator {
            None => Some((String::from_utf8(bytes).ok()?, "")),
            Some(_) => None,
        }
    }

    /// Binds each placeholder to a position in the rows it will render, so rendering does
    /// no name look-ups. `position` maps a column name to its index in the row.
    pub fn bind(
        &self,
        mut position: impl FnMut(&str) -> Option<usize>,
    ) -> Result<BoundKey, String> {
        let parts = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => Ok(BoundPart::Literal(s.clone())),
                Part::Column(c) => position(c).map(BoundPart::Cell).ok_or_else(|| c.clone()),
            })
            .collect::<Result<_, _>>()?;
        Ok(BoundKey {
            parts,
            escaped: self.escaped.clone(),
        })
    }
}

/// A template bound to row positions; renders keys without look-ups.
#[derive(Debug, Clone)]
pub struct BoundKey {
    parts: Vec<BoundPart>,
    escaped: EscapeSet,
}

#[derive(Debug, Clone)]
enum BoundPart {
    Literal(String),
    Cell(usize),
}

impl BoundKey {
    /// The Redis key of `row`, its values escaped (see the module doc). A NULL
    /// placeholder value (impossible for primary-key columns) renders as empty text.
    pub fn render(&self, row: &[Cell]) -> String {
        let mut key = String::with_capacity(32);
        let mut text = String::new();
        for part in &self.parts {
            match part {
                BoundPart::Literal(s) => key.push_str(s),
                BoundPart::Cell(i) => {
                    text.clear();
                    row[*i].write_key_text(&mut text);
                    self.escaped.push_escaped(&mut key, &text);
                }
            }
        }
        key
    }

    /// Whether rows `a` and `b` have the same key: their placeholder cells are equal
    /// (no rendering: an UPDATE's before and after image are compared on every row
    /// change), or else their keys render the same.
    pub fn same_key(&self, a: &[Cell], b: &[Cell]) -> bool {
        let cells_equal = self.parts.iter().all(|part| match part {
            BoundPart::Literal(_) => true,
            BoundPart::Cell(i) => a.get(*i) == b.get(*i),
        });
        cells_equal || self.render(a) == self.render(b)
    }

    /// The `SCAN MATCH` glob that finds the keys this template renders: literal text with
    /// the glob characters `*?[]\` escaped, and for each placeholder the key text of the
    /// cell `fixed` gives for its row position (escaped too), or `*` when it gives none.
    /// `fixed` narrows a scan to the keys of rows whose key columns hold those values.
    pub fn scan_pattern<'c>(&self, fixed: impl Fn(usize) -> Option<&'c Cell>) -> String {
        fn escaped(text: &str, pattern: &mut String) {
            for c in text.chars() {
                if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
        }
        let mut pattern = String::with_capacity(32);
        for part in &self.parts {
            match part {
                BoundPart::Literal(s) => escaped(s, &mut pattern),
                BoundPart::Cell(i) => match fixed(*i) {
                    Some(cell) => {
                        // The value as rendering escapes it, then glob-escaped.
                        let (mut text, mut key_text) = (String::new(), String::new());
                        cell.write_key_text(&mut text);
                        self.escaped.push_escaped(&mut key_text, &text);
                        escaped(&key_text, &mut pattern);
                    }
                    None => pattern.push('*'),
                },
            }
        }
        pattern
    }

    /// The row positions the placeholders render, in template order.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.parts.iter().filter_map(|p| match p {
            BoundPart::Cell(i) => Some(*i),
            BoundPart::Literal(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, values: &[&str]) -> String {
        KeyTemplate::parse(template)
            .unwrap()
            .render_texts(values)
            .unwrap()
    }

    #[test]
    fn parses_placeholders_and_escapes() {
        let t = KeyTemplate::parse("{{tag}}:order:{shop_id}:{id}").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["shop_id", "id"]);
        let bound = t
            .bind(|c| match c {
                "shop_id" => Some(1),
                "id" => Some(0),
                _ => None,
            })
            .unwrap();
        let row = [Cell::UInt(7), Cell::Text("eu".into())];
        assert_eq!(bound.render(&row), "{tag}:order:eu:7");
    }

    #[test]
    fn binary_placeholders_render_as_hex() {
        let t = KeyTemplate::parse("blob:{k}").unwrap();
        let bound = t.bind(|_| Some(0)).unwrap();
        assert_eq!(
            bound.render(&[Cell::Bytes(vec![0, 1, 0xff])]),
            "blob:0001ff"
        );
    }

    #[test]
    fn scan_patterns_escape_globs_and_narrow_by_fixed_cells() {
        let t = KeyTemplate::parse("a*?[]\\:{shop}:{id}").unwrap();
        let bound = t
            .bind(|c| match c {
                "shop" => Some(0),
                _ => Some(1),
            })
            .unwrap();
        assert_eq!(bound.scan_pattern(|_| None), "a\\*\\?\\[\\]\\\\:*:*");
        let shop = Cell::Text("e*u".into());
        assert_eq!(
            bound.scan_pattern(|i| (i == 0).then_some(&shop)),
            "a\\*\\?\\[\\]\\\\:e\\*u:*"
        );
        assert_eq!(bound.positions().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "user",
            "user:{}",
            "user:{id",
            "user:id}",
            "a{b{c}}",
            "t:{a}{b}",
            "100%:{id}",
        ] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad} should not parse");
        }
        assert!(
            KeyTemplate::parse("t:{a}{b}")
                .unwrap_err()
                .to_string()
                .contains("separated")
        );
    }

    #[test]
    fn bind_names_the_missing_column() {
        let t = KeyTemplate::parse("user:{idd}").unwrap();
        assert_eq!(t.bind(|_| None).unwrap_err(), "idd");
    }

    #[test]
    fn values_escape_separators_braces_colons_and_percent() {
        // The collision: distinct keys now.
        assert_eq!(render("t5:{a}:{b}", &["x:y", "z"]), "t5:x%3Ay:z");
        assert_eq!(render("t5:{a}:{b}", &["x", "y:z"]), "t5:x:y%3Az");
        // Separators other than ':' are escaped too; the prefix and suffix are not.
        assert_eq!(render("o-1/{a}-{b}/x", &["p-q", "r/s"]), "o-1/p%2Dq-r/s/x");
        // Companion-key lookalikes cannot form.
        assert_eq!(
            render("{k}", &["{x}:cachesync:fill"]),
            "%7Bx%7D%3Acachesync%3Afill"
        );
        assert_eq!(render("u:{id}", &["100%"]), "u:100%25");
        // Non-ASCII separators, and values escaped byte by byte.
        assert_eq!(render("{a}é{b}", &["é", "ü"]), "%C3%A9éü");
        // Plain values are unchanged: existing keys of numeric ids stay as they were.
        assert_eq!(render("user:{id}", &["42"]), "user:42");
        assert_eq!(render("{{t}}:{a}:{b}", &["1", "2"]), "{t}:1:2");
    }

    #[test]
    fn split_key_is_the_exact_inverse() {
        for (template, values) in [
            ("t5:{a}:{b}", vec!["x:y", "z"]),
            ("t5:{a}:{b}", vec!["x", "y:z"]),
            ("t5:{a}:{b}", vec!["", ""]),
            ("o-1/{a}-{b}/x", vec!["p-q", "r/s%"]),
            ("{k}", vec!["{x}:cachesync:fill"]),
            ("{a}é{b}::{c}", vec!["é", "::", "%41"]),
        ] {
            let t = KeyTemplate::parse(template).unwrap();
            let key = t.render_texts(&values).unwrap();
            let back: Vec<String> = t
                .split_key(&key)
                .unwrap_or_else(|| panic!("{key} of {template}"))
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            assert_eq!(back, values, "{template} {key}");
        }
        let t = KeyTemplate::parse("t:{a}:{b}").unwrap();
        assert_eq!(
            t.split_key("t:1:2"),
            Some(vec![("a", "1".to_owned()), ("b", "2".to_owned())])
        );
        for not_a_key in ["t:1", "t:1:2:3", "u:1:2", "t:1%3:2", "t:%ZZ:2", "t:%FF:2"] {
            assert_eq!(t.split_key(not_a_key), None, "{not_a_key}");
        }
    }
}
