//! keel: build container images from Dockerfiles and run containers, without a daemon.
//!
//! The engine is a pipeline of modules, one per stage; `cli` is the only place that
//! talks to the user and the only place that uses `anyhow`.
//!
//! Guard rails (docs/architecture.md): `unsafe` and the methods `clippy.toml` disallows
//! (kernel operations, filesystem writes) are allowed in `sys` only. Test code is exempt
//! from the method list: fixtures are written with std::fs directly.
#![deny(unsafe_code)]
#![cfg_attr(
    test,
    allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)
)]
pub mod archive;
pub mod bootstrap;
pub mod build;
pub mod buildpack;
pub mod cli;
pub mod container;
pub mod context;
pub mod deploy;
pub mod digest;
pub mod dockerfile;
pub mod fault;
pub mod image;
pub mod integrate;
pub mod layer;
pub mod plan;
pub mod platform;
pub mod project;
pub mod reclaim;
pub mod reference;
pub mod registry;
pub mod report;
pub mod runtime;
pub mod storage;
pub mod store;
#[allow(unsafe_code, clippy::disallowed_methods)]
pub mod sys;
#[cfg(test)]
mod testing;
