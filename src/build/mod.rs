//! `keel build`: walks the build plan, looks up the cache, runs steps in snapshots and
//! commits layers.
pub mod cache;
pub mod copy;
pub mod exec;
pub mod front;
pub mod mounts;
pub mod progress;
pub mod repro;
pub mod step;
