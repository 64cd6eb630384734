//! The only caller of nix/libc: one small function per kernel operation.
pub mod fs;
