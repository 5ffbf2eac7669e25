//! The `herald` binary; see [`herald::cli`].

fn main() -> anyhow::Result<()> {
    herald::cli::main()
}
