//! keel's attacker-side suite: hostile images, Dockerfiles, archives, names and inputs,
//! each test written from the attacker's side. Host canaries (`canary.rs`) prove that
//! nothing outside the container, build or store was read, written, signalled or reached.
//! One module per area; each test names the break it guards in its doc comment.
// Test code writes fixtures with std::fs and prints diagnostics: exempt from the guard
// rails (clippy.toml, Cargo.toml [lints.clippy]), which are for keel's own code.
#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)]

#[path = "../it/common.rs"]
mod common;
#[path = "../it/regserver.rs"]
mod regserver;

mod canary;
mod hostile;

mod archive;
mod build;
mod buildpack;
mod context;
mod cp;
mod faults;
mod registry;
mod runtime;
mod store;
