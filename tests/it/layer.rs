//! Integration tests: layer.
