//! keel's integration tests: one binary, a module per area. Each test drives the real
//! `keel` binary against a temporary root, the way users and CI do.
mod common;

mod build;
mod commands;
mod parity;

mod dockerfile;
mod execin;
mod glue;
mod integrate;
mod layer;
mod registry;
mod regserver;
mod report;
mod run;
mod runtime;
mod store;
