//! Redis key templates: `user:{id}`, `order:{shop_id}:{id}`.
//!
//! A template is literal text with `{column}` placeholders over primary-key columns;
//! `{{` and `}}` stand for literal braces. Placeholder values are written as their
//! canonical text (the same text as the `hash` encoding), except binary values, which
//! are written as lowercase hex so keys stay printable.

use std::fmt;

use super::cell::Cell;

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    source: String,
    parts: Vec<Part>,
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

impl KeyTemplate {
    /// Parses `template`; it must hold at least one `{column}` placeholder.
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
                    }
                    parts.push(Part::Column(column));
                }
                '}' => {
                    return Err(TemplateError(format!(
                        "unmatched }} in {template:?} (write }}}} for a literal brace)"
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
        Ok(KeyTemplate {
            source: template.to_owned(),
            parts,
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
        Ok(BoundKey { parts })
    }
}

/// A template bound to row positions; renders keys without look-ups.
#[derive(Debug, Clone)]
pub struct BoundKey {
    parts: Vec<BoundPart>,
}

#[derive(Debug, Clone)]
enum BoundPart {
    Literal(String),
    Cell(usize),
}

impl BoundKey {
    /// The Redis key of `row`. A NULL placeholder value (impossible for primary-key
    /// columns) renders as empty text.
    pub fn render(&self, row: &[Cell]) -> String {
        let mut key = String::with_capacity(32);
        for part in &self.parts {
            match part {
                BoundPart::Literal(s) => key.push_str(s),
                BoundPart::Cell(i) => row[*i].write_key_text(&mut key),
            }
        }
        key
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
                        let mut text = String::new();
                        cell.write_key_text(&mut text);
                        escaped(&text, &mut pattern);
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
        for bad in ["user", "user:{}", "user:{id", "user:id}", "a{b{c}}"] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn bind_names_the_missing_column() {
        let t = KeyTemplate::parse("user:{idd}").unwrap();
        assert_eq!(t.bind(|_| None).unwrap_err(), "idd");
    }
}
