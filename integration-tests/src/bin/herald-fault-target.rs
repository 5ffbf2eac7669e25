//! The `herald` command line, built inside this package so the fault tests can run it as a
//! child process and kill it with SIGKILL (`CARGO_BIN_EXE_herald-fault-target`).

/// The allocator the `herald` binary uses, so the hub in this process runs as it does there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    herald::cli::main()
}
