//! The `baton` binary: parse the command line, call the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
