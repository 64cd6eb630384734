//! keel's fuzz targets, one per parser that reads untrusted input: Dockerfiles (and the
//! shell-word lexer), `.dockerignore`, keel.toml, image references, layer tars (the header
//! guard and the unpacker) and image archives. Each target runs its seed corpus
//! (`testdata/fuzz/<target>/`, plus the conformance files it names), then searches for a
//! failing input for a share of `KEEL_FUZZ_SECS` (default 12 s in all), asserting no
//! panic, bounded time and memory, and the parser's own invariants. It runs on stable
//! Rust as part of `cargo test`; see `testdata/fuzz/README.md` to replay a failure.
// Test code writes fixtures with std::fs and prints diagnostics: exempt from the guard
// rails (clippy.toml, Cargo.toml [lints.clippy]), which are for keel's own code.
#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)]

mod harness;

mod archive;

mod dockerfile;
mod ignore;
mod project;
mod reference;
mod tar;

#[global_allocator]
static ALLOC: harness::CountingAlloc = harness::CountingAlloc;
