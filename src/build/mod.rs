//! `keel build`: executes a `plan::Plan`. `front.rs` turns Dockerfile bytes into the plan
//! (through `dockerfile::` and `plan::`, never a parse of its own); `exec/` walks it, one
//! dispatch function per instruction; `cache.rs` keys and stores step results; `copy.rs`
//! and `step.rs` write trees and layers; `mounts.rs` serves RUN's secrets and agents;
//! `output.rs` exports a result outside the store (`--output`); `remote.rs` fetches
//! ADD's URLs and git repositories; `behind.rs` makes the writes only later builds read
//! off the critical path.
pub mod behind;
pub mod cache;
pub mod copy;
pub mod copy_archive;
pub mod exec;
pub mod front;
pub mod mounts;
pub mod output;
pub mod progress;
pub mod remote;
pub mod repro;
pub mod step;
