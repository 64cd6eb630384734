//! Attacker-side tests: store.
#![allow(unused_imports)]
use crate::canary;
use crate::common;
