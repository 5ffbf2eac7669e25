//! The `herald` command line, built inside this package so the fault tests can run it as a
//! child process and kill it with SIGKILL (`CARGO_BIN_EXE_herald-fault-target`).

fn main() -> anyhow::Result<std::process::ExitCode> {
    herald::cli::main()
}
