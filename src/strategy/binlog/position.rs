//! Binlog coordinates: where a change is in the server's history, and the version it
//! carries into Redis.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// A position in the server's binlog: the file and the byte offset of the next event.
///
/// Ordering: by the file's sequence number (`binlog.000042` → 42), then by offset.
/// File names share one base name on a server, and the sequence only grows (until
/// `RESET MASTER`, after which cachesync must re-snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
}

impl BinlogPosition {
    pub fn new(file: impl Into<String>, pos: u64) -> BinlogPosition {
        BinlogPosition {
            file: file.into(),
            pos,
        }
    }

    /// Reads `file:pos`, the checkpoint format.
    pub fn parse(text: &str) -> Option<BinlogPosition> {
        let (file, pos) = text.rsplit_once(':')?;
        if file.is_empty() {
            return None;
        }
        Some(BinlogPosition::new(file, pos.parse().ok()?))
    }

    /// The number after the file name's last dot (`mysql-bin.000042` → 42).
    pub fn file_sequence(&self) -> u64 {
        self.file
            .rsplit_once('.')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0)
    }

    /// The version of a change logged by the event that ends here: file sequence in the
    /// high 32 bits, offset in the low 32. Offsets in event headers are 32-bit, so
    /// versions grow strictly along the binlog; a snapshot taken at position P writes
    /// version(P), below every change logged after it.
    pub fn version(&self) -> u64 {
        (self.file_sequence() << 32) | (self.pos & 0xffff_ffff)
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.file_sequence(), self.pos, &self.file).cmp(&(
            other.file_sequence(),
            other.pos,
            &other.file,
        ))
    }
}

/// The last GTID seen per replication domain (MariaDB `domain-server-seq`) or per source
/// (MySQL `uuid:gno`) up to a position: what an operator needs to point a GTID-based
/// replica, or cachesync after a failover, at the same place. Resuming itself uses the
/// file and offset, which every server has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(BTreeMap<String, String>);

impl GtidSet {
    /// Records MariaDB's `domain-server-seq`.
    pub fn record_mariadb(&mut self, domain: u32, server: u32, seq: u64) {
        use std::fmt::Write as _;
        // Once per transaction on the tailer's hot path: rewrite the domain's entry in
        // place rather than allocate a key and a value each time.
        let mut name = itoa::Buffer::new();
        let name = name.format(domain);
        match self.0.get_mut(name) {
            Some(gtid) => {
                gtid.clear();
                let _ = write!(gtid, "{domain}-{server}-{seq}");
            }
            None => {
                self.0
                    .insert(name.to_owned(), format!("{domain}-{server}-{seq}"));
            }
        }
    }

    /// Records MySQL's `uuid:gno`.
    pub fn record_mysql(&mut self, uuid: &str, gno: u64) {
        self.0.insert(uuid.to_owned(), format!("{uuid}:{gno}"));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the comma-separated form [`fmt::Display`] writes.
    pub fn parse(text: &str) -> Option<GtidSet> {
        let mut set = GtidSet::default();
        for gtid in text.split(',').filter(|g| !g.is_empty()) {
            let key = match gtid.split_once(':') {
                Some((uuid, gno)) if gno.parse::<u64>().is_ok() => uuid.to_owned(),
                _ => {
                    let mut parts = gtid.splitn(3, '-');
                    let domain = parts.next()?;
                    let (_, _) = (
                        parts.next()?.parse::<u32>().ok()?,
                        parts.next()?.parse::<u64>().ok()?,
                    );
                    domain.parse::<u32>().ok()?.to_string()
                }
            };
            set.0.insert(key, gtid.to_owned());
        }
        Some(set)
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, gtid) in self.0.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(gtid)?;
        }
        Ok(())
    }
}

/// What the checkpoint key holds: `file:pos`, then ` gtid=<set>` when the server logs
/// GTIDs, e.g. `binlog.000004:1234 gtid=0-1-57`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: BinlogPosition,
    pub gtids: GtidSet,
}

impl Checkpoint {
    pub fn at(position: BinlogPosition) -> Checkpoint {
        Checkpoint {
            position,
            gtids: GtidSet::default(),
        }
    }

    pub fn parse(text: &str) -> Option<Checkpoint> {
        let mut words = text.split_whitespace();
        let position = BinlogPosition::parse(words.next()?)?;
        let gtids = match words.next() {
            Some(word) => GtidSet::parse(word.strip_prefix("gtid=")?)?,
            None => GtidSet::default(),
        };
        if words.next().is_some() {
            return None;
        }
        Some(Checkpoint { position, gtids })
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.position)?;
        if !self.gtids.is_empty() {
            write!(f, " gtid={}", self.gtids)?;
        }
        Ok(())
    }
}

/// The checkpoint as stored in Redis: the [`Checkpoint`], then what it is a checkpoint
/// *of* — ` server=<identity>` (the MySQL server the position belongs to, see
/// [`super::server::identity`]) and ` tables=<db.t,…>` (the tables synced up to it) —
/// e.g. `binlog.000004:1234 gtid=0-1-57 server=id:1@db1:3306 tables=shop.users`.
///
/// Words after the position are `key=value`; keys this version does not know are
/// skipped (a newer cachesync may add some), and the old form without `server` and
/// `tables` still reads (both `None`). Table names are written with `%`, `,` and
/// white space percent-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub checkpoint: Checkpoint,
    pub server: Option<String>,
    pub tables: Option<Vec<String>>,
}

impl StoredCheckpoint {
    pub fn parse(text: &str) -> Option<StoredCheckpoint> {
        let mut words = text.split_whitespace();
        let position = BinlogPosition::parse(words.next()?)?;
        let mut stored = StoredCheckpoint {
            checkpoint: Checkpoint::at(position),
            server: None,
            tables: None,
        };
        for word in words {
            let (key, value) = word.split_once('=')?;
            match key {
                "gtid" => stored.checkpoint.gtids = GtidSet::parse(value)?,
                "server" => stored.server = Some(percent_decode(value)?),
                "tables" => {
                    stored.tables = Some(
                        value
                            .split(',')
                            .filter(|t| !t.is_empty())
                            .map(percent_decode)
                            .collect::<Option<_>>()?,
                    )
                }
                _ => {}
            }
        }
        Some(stored)
    }

    /// What follows the position in a checkpoint of `server` covering `tables`:
    /// ` server=… tables=…`.
    pub fn suffix(server: &str, tables: &[String]) -> String {
        let tables: Vec<String> = tables.iter().map(|t| percent_encode(t)).collect();
        format!(
            " server={} tables={}",
            percent_encode(server),
            tables.join(",")
        )
    }
}

impl fmt::Display for StoredCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.checkpoint)?;
        if let Some(server) = &self.server {
            write!(f, " server={}", percent_encode(server))?;
        }
        if let Some(tables) = &self.tables {
            let tables: Vec<String> = tables.iter().map(|t| percent_encode(t)).collect();
            write!(f, " tables={}", tables.join(","))?;
        }
        Ok(())
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '%' || c == ',' || c == '=' || c.is_whitespace() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_checkpoints_name_their_server_and_tables_and_read_the_old_form() {
        let old = StoredCheckpoint::parse("binlog.000004:99 gtid=0-1-57").unwrap();
        assert_eq!(old.checkpoint.to_string(), "binlog.000004:99 gtid=0-1-57");
        assert_eq!((old.server, old.tables), (None, None));
        let text = format!(
            "binlog.000004:99 gtid=0-1-57{}",
            StoredCheckpoint::suffix(
                "id:1@db 1:3306",
                &["shop.users".to_owned(), "odd,db.t=%".to_owned()]
            )
        );
        assert_eq!(
            text,
            "binlog.000004:99 gtid=0-1-57 server=id:1@db%201:3306 tables=shop.users,odd%2Cdb.t%3D%25"
        );
        let stored = StoredCheckpoint::parse(&text).unwrap();
        assert_eq!(stored.server.as_deref(), Some("id:1@db 1:3306"));
        assert_eq!(
            stored.tables,
            Some(vec!["shop.users".to_owned(), "odd,db.t=%".to_owned()])
        );
        assert_eq!(stored.to_string(), text);
        // A field a newer version adds is skipped; a bare word is not a checkpoint.
        assert!(StoredCheckpoint::parse("binlog.000004:99 epoch=7").is_some());
        assert_eq!(StoredCheckpoint::parse("binlog.000004:99 junk"), None);
        let empty = StoredCheckpoint::parse("binlog.000004:99 tables=").unwrap();
        assert_eq!(empty.tables, Some(Vec::new()));
    }

    #[test]
    fn parses_and_prints_checkpoints() {
        let p = BinlogPosition::parse("binlog.000042:1234").unwrap();
        assert_eq!(p, BinlogPosition::new("binlog.000042", 1234));
        assert_eq!(p.to_string(), "binlog.000042:1234");
        assert_eq!(BinlogPosition::parse("nonsense"), None);
        assert_eq!(BinlogPosition::parse(":12"), None);
    }

    #[test]
    fn orders_by_file_sequence_then_offset() {
        let a = BinlogPosition::new("binlog.000009", 999_999);
        let b = BinlogPosition::new("binlog.000010", 4);
        let c = BinlogPosition::new("binlog.000010", 5);
        assert!(a < b && b < c);
        assert!(a.version() < b.version() && b.version() < c.version());
    }

    #[test]
    fn checkpoints_carry_gtids_per_domain() {
        let mut cp = Checkpoint::at(BinlogPosition::new("binlog.000004", 99));
        assert_eq!(cp.to_string(), "binlog.000004:99");
        cp.gtids.record_mariadb(0, 1, 56);
        cp.gtids.record_mariadb(0, 1, 57);
        cp.gtids.record_mariadb(2, 9, 3);
        assert_eq!(cp.to_string(), "binlog.000004:99 gtid=0-1-57,2-9-3");
        assert_eq!(Checkpoint::parse(&cp.to_string()), Some(cp.clone()));
        let mut mysql = Checkpoint::at(BinlogPosition::new("binlog.000001", 4));
        mysql
            .gtids
            .record_mysql("3e11fa47-71ca-11e1-9e33-c80aa9429562", 23);
        assert_eq!(Checkpoint::parse(&mysql.to_string()), Some(mysql));
        assert_eq!(Checkpoint::parse("binlog.000004:99 junk"), None);
        assert_eq!(
            Checkpoint::parse("binlog.000004:99"),
            Some(Checkpoint::at(BinlogPosition::new("binlog.000004", 99)))
        );
    }
}
