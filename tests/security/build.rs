//! Attacker-side tests: build.
#![allow(unused_imports)]
use crate::canary;
use crate::common;
