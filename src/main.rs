//! The `regauth` command line. See `regauth --help`.

#![forbid(unsafe_code)]

mod cli;

fn main() {
    std::process::exit(cli::main());
}
