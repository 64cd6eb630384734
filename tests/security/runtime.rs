//! Attacker-side tests: runtime.
#![allow(unused_imports)]
use crate::canary;
use crate::common;
