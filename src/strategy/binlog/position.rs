//! Binlog coordinates: where a change is in the server's history, and the version it
//! carries into Redis.

use std::cmp::Ordering;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
