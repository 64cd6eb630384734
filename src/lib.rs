//! keel: build container images from Dockerfiles and run containers, without a daemon.
//!
//! The engine is a pipeline of modules, one per stage; `cli` is the only place that
//! talks to the user and the only place that uses `anyhow`.
pub mod cli;
pub mod digest;
pub mod layer;
pub mod reference;
pub mod storage;
pub mod store;
pub mod sys;
