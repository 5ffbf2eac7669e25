//! The `herald` binary; see [`herald::cli`].

/// mimalloc rather than glibc malloc: the delivery pipeline allocates per request (JSON
/// bundles, HTTP), and glibc's allocator cost a fifth of its CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    herald::cli::main()
}
