//! Attacker-side tests: faults.
#![allow(unused_imports)]
use crate::canary;
use crate::common;
