//! Foreign keys between tables, as `information_schema` describes them
//! (`REFERENTIAL_CONSTRAINTS` joined with `KEY_COLUMN_USAGE`), and which of their rules
//! change rows behind the binlog's back.
//!
//! InnoDB carries out `ON UPDATE` / `ON DELETE` `CASCADE` and `SET NULL` itself, inside
//! the parent's statement, and logs only the parent's row change: the child rows it
//! updates or deletes never appear in the row binlog (MySQL bug #32506; MariaDB alike).
//! `RESTRICT` and `NO ACTION` change nothing (the parent's statement fails while
//! children exist), and InnoDB refuses `SET DEFAULT`. So a relation matters to cachesync
//! exactly when one of its rules is `CASCADE` or `SET NULL` ([`ForeignKey::cascades`]).

use std::fmt;

/// What a foreign key does to the child rows when the parent's referenced key changes
/// (`ON UPDATE`) or the parent row is deleted (`ON DELETE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FkRule {
    /// The children follow: their foreign-key columns take the new value, or they are
    /// deleted with the parent.
    Cascade,
    /// The children's foreign-key columns become NULL.
    SetNull,
    /// `RESTRICT` / `NO ACTION`: the parent's change is refused while children exist.
    Restrict,
    /// `SET DEFAULT`: parsed by MySQL, refused by InnoDB.
    SetDefault,
}

impl FkRule {
    /// Reads `UPDATE_RULE` / `DELETE_RULE` (`CASCADE`, `SET NULL`, `RESTRICT`,
    /// `NO ACTION`, `SET DEFAULT`).
    pub fn parse(rule: &str) -> FkRule {
        match rule.trim().to_ascii_uppercase().as_str() {
            "CASCADE" => FkRule::Cascade,
            "SET NULL" => FkRule::SetNull,
            "SET DEFAULT" => FkRule::SetDefault,
            _ => FkRule::Restrict,
        }
    }

    /// Whether the rule changes child rows without logging them.
    pub fn changes_children(self) -> bool {
        matches!(self, FkRule::Cascade | FkRule::SetNull)
    }

    pub fn as_sql(self) -> &'static str {
        match self {
            FkRule::Cascade => "CASCADE",
            FkRule::SetNull => "SET NULL",
            FkRule::Restrict => "RESTRICT",
            FkRule::SetDefault => "SET DEFAULT",
        }
    }
}

/// One foreign key: `child(child_columns) REFERENCES parent(parent_columns)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The constraint's name.
    pub name: String,
    /// `(database, table)` of the referencing table.
    pub child: (String, String),
    /// The referencing columns, in constraint order.
    pub child_columns: Vec<String>,
    /// `(database, table)` of the referenced table.
    pub parent: (String, String),
    /// The referenced columns, in the same order as `child_columns`.
    pub parent_columns: Vec<String>,
    pub on_update: FkRule,
    pub on_delete: FkRule,
}

impl ForeignKey {
    /// Whether either rule changes child rows the binlog does not show.
    pub fn cascades(&self) -> bool {
        self.on_update.changes_children() || self.on_delete.changes_children()
    }

    /// `db.child` as written in the config.
    pub fn child_name(&self) -> String {
        format!("{}.{}", self.child.0, self.child.1)
    }

    /// `db.parent`.
    pub fn parent_name(&self) -> String {
        format!("{}.{}", self.parent.0, self.parent.1)
    }

    /// The rule for a parent change: `ON UPDATE` when the parent row still exists after
    /// it, `ON DELETE` when it was deleted.
    pub fn rule(&self, parent_deleted: bool) -> FkRule {
        if parent_deleted {
            self.on_delete
        } else {
            self.on_update
        }
    }
}

/// `shop.city(country_id) → shop.country(id) ON UPDATE CASCADE ON DELETE SET NULL`.
impl fmt::Display for ForeignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({}) → {}({}) ON UPDATE {} ON DELETE {}",
            self.child_name(),
            self.child_columns.join(", "),
            self.parent_name(),
            self.parent_columns.join(", "),
            self.on_update.as_sql(),
            self.on_delete.as_sql()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_display() {
        assert_eq!(FkRule::parse("SET NULL"), FkRule::SetNull);
        assert_eq!(FkRule::parse("NO ACTION"), FkRule::Restrict);
        assert!(!FkRule::parse("RESTRICT").changes_children());
        let fk = ForeignKey {
            name: "fk".into(),
            child: ("shop".into(), "city".into()),
            child_columns: vec!["country_id".into()],
            parent: ("shop".into(), "country".into()),
            parent_columns: vec!["id".into()],
            on_update: FkRule::Cascade,
            on_delete: FkRule::Restrict,
        };
        assert!(fk.cascades());
        assert_eq!(fk.rule(true), FkRule::Restrict);
        assert_eq!(
            fk.to_string(),
            "shop.city(country_id) → shop.country(id) ON UPDATE CASCADE ON DELETE RESTRICT"
        );
    }
}
