//! The command line: clap definitions and dispatch. The only module that prints to the
//! user (through `Reporter`) and the only one that uses `anyhow`.
pub fn main() -> i32 {
    0
}
