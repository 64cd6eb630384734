//! keel's binary: parse the command line, run the command, map the outcome to an exit code.
//! A closed stdout (`keel images | head -1`) ends the command with 0 and no message, even
//! when a `println!` slipped in somewhere (see `report::install_broken_pipe_hook`).
#![deny(unsafe_code)]

fn main() {
    keel::report::install_broken_pipe_hook();
    std::process::exit(keel::cli::main());
}
