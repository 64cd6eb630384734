//! keel's integration tests: one binary, a module per area. Each test drives the real
//! `keel` binary against a temporary root, the way users and CI do.
// Test code writes fixtures with std::fs and prints diagnostics: exempt from the guard
// rails (clippy.toml, Cargo.toml [lints.clippy]), which are for keel's own code.
#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)]

mod common;

mod btrfs;
mod build;
mod buildpack;
mod commands;
mod crossarch;
mod parity;

mod dockerfile;
mod erofs;
mod execin;
mod glue;
mod integrate;
mod latency;
mod layer;
mod noop;
mod owner;
mod perf;
mod registry;
mod regserver;
mod report;
mod rootless;
mod run;
mod runtime;
mod store;
mod temps;
