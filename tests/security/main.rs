//! keel's attacker-side suite: hostile images, Dockerfiles, archives, names and inputs,
//! each test written from the attacker's side. Host canaries (`canary.rs`) prove that
//! nothing outside the container, build or store was read, written, signalled or reached.
//! One module per area; each test names the break it guards in its doc comment.
#[path = "../it/common.rs"]
mod common;
#[path = "../it/regserver.rs"]
mod regserver;

mod canary;

mod build;
mod context;
mod cp;
mod faults;
mod runtime;
mod store;
