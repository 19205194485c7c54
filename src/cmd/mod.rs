//! The commands, one module each: `run` (and the [`run::Daemon`] the benchmark starts
//! the same way), `snapshot`, `doctor` and `verify`, and the continuous verification
//! `run` starts next to the strategy ([`anti_entropy`], built on `verify`); [`connect`]
//! is what they all start with. `main.rs`
//! parses arguments and calls these; `bench` has its own folder.

pub mod anti_entropy;
pub mod connect;
pub mod doctor;
pub mod run;
pub mod snapshot;
pub mod verify;
