//! The `herald` binary; see [`herald::cli`].

fn main() -> anyhow::Result<std::process::ExitCode> {
    herald::cli::main()
}
