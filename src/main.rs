//! The `baton` binary: parse the command line, call the library.

mod cli;

// Under load the gateway makes many small, short-lived allocations on
// every worker thread; glibc's malloc spent a fifth of its CPU on them
// (perf, 1,000 req/s), mimalloc's thread-local free lists a fraction.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
