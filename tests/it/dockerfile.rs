//! Integration tests: dockerfile.
