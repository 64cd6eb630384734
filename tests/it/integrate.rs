//! Integration tests: integrate.
