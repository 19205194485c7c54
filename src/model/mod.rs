//! What a row is, with no I/O: canonical cells and their two Redis encodings, decoding
//! from SQL, binlog and JSON (numbers kept exact, spatial values as Extended WKT), key
//! templates, a configured table's plan and SQL, foreign keys between tables, and the
//! changes that travel from MySQL to Redis. Everything above builds on these types; this
//! folder imports nothing of cachesync's but [`crate::error`].

pub mod cell;
pub mod change;
pub mod column;
pub mod decode;
pub mod event;
pub mod geometry;
pub mod json;
pub mod key;
pub mod params;
pub mod relation;
pub mod table;
