//! `keel build`: walks the build plan, looks up the cache, runs steps in snapshots and
//! commits layers. (The executor lands with the Dockerfile front end.)
pub mod cache;
pub mod copy;
pub mod exec;
pub mod front;
pub mod plan;
pub mod repro;
pub mod step;
