//! Talking to Redis: the one connection type ([`connection`]), every key layout
//! cachesync writes ([`keyspace`]), the version-guarded applier with its Lua script
//! ([`applier`], `apply.lua`), the Bloom filter the applier and the read path share
//! ([`bloom`]), reading stored rows back ([`rows`]), and the write-back queue ([`queue`],
//! `write_back.lua`).

pub mod applier;
pub mod bloom;
pub mod connection;
pub mod keyspace;
pub mod queue;
pub mod rows;

pub use applier::Applier;
pub use connection::RedisConn;
