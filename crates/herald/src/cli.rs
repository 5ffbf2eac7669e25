//! The `herald` command line: serve, migrate, bench, criteria. Shared by the `herald` binary and the
//! integration tests' copy of it (which kill it with SIGKILL).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{Herald, Mode, Settings};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Herald: an event-driven FHIR Subscription hub.
///
/// With no configuration Herald runs the embedded default (SQLite files under --data-dir
/// and an in-process durable bus). Set HERALD_NATS_URL and HERALD_DATABASE_URL (or
/// nats_url and database_url in the --config file) for production mode on NATS JetStream
/// and PostgreSQL. Every setting can also be given as HERALD_<KEY> (nested keys with
/// `__`, e.g. HERALD_DELIVERY__MAX_CONCURRENCY); see the README for the full table.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file (defaults < file < HERALD_* environment < flags).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: FHIR API, matcher and delivery.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Directory for the embedded default's SQLite files [default: ./herald-data].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// FHIR base URL as subscribers see it [default: http://<listen>/fhir].
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Benchmarks that print figures (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(Bench),
    /// Explain whether a resource matches criteria, clause by clause: prints `match` or
    /// `no match` and what each clause compared. Exit status 0 = match, 1 = no match,
    /// 2 = invalid or unsupported criteria (the OperationOutcome is printed) or unreadable
    /// input. Needs no configuration, database or bus.
    Criteria(crate::explain::CriteriaArgs),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The matcher on one core: events/s, p50/p99 per event, memory per subscription and
    /// index build time, with the index and with a linear scan as the baseline.
    Match {
        /// Active subscriptions, one run each [default: 10000 100000 1000000].
        #[arg(value_name = "SUBSCRIPTIONS")]
        sizes: Vec<usize>,
        /// Events per indexed run.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Events for the linear-scan baseline (it is slow at large sizes).
        #[arg(long, default_value_t = 20)]
        linear_events: usize,
    },
}

fn load(cli: &Cli) -> anyhow::Result<Settings> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut settings = Settings::load(cli.config.as_deref(), &env)?;
    if let Command::Serve {
        listen,
        data_dir,
        base_url,
    } = &cli.command
    {
        if let Some(listen) = listen {
            settings.listen = *listen;
        }
        if let Some(dir) = data_dir {
            settings.data_dir = dir.clone();
        }
        if let Some(url) = base_url {
            settings.public_base_url = Some(url.trim_end_matches('/').to_owned());
        }
    }
    settings.validate()?;
    Ok(settings)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Parses the command line and runs it to completion.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // Offline and with its own exit statuses: no settings, logging or runtime.
    if let Command::Criteria(args) = &cli.command {
        return Ok(crate::explain::run(args));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = load(&cli)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&settings.log).context("log filter")?,
        )
        .init();
    match cli.command {
        Command::Bench(Bench::Match {
            sizes,
            events,
            linear_events,
        }) => {
            let sizes = if sizes.is_empty() {
                vec![10_000, 100_000, 1_000_000]
            } else {
                sizes
            };
            for size in sizes {
                println!(
                    "{}",
                    herald_matcher::bench::run_match_benchmark(size, events, true)
                );
                println!(
                    "{}",
                    herald_matcher::bench::run_match_benchmark(size, linear_events, false)
                );
            }
        }
        Command::Migrate => {
            crate::open_store(&settings).await?;
            println!("migrations applied");
        }
        // `main` runs it before settings are read; equally correct here.
        Command::Criteria(args) => return Ok(crate::explain::run(&args)),
        Command::Serve { .. } => {
            let herald = Herald::start(settings.clone()).await?;
            match &herald.mode {
                Mode::Embedded => println!(
                    "Herald {} listening: FHIR base {}\nmode: embedded (SQLite in {}, in-process durable bus)",
                    env!("CARGO_PKG_VERSION"),
                    herald.base_url,
                    settings.data_dir.display()
                ),
                Mode::Production { .. } => println!(
                    "Herald {} listening: FHIR base {}\nmode: production (NATS JetStream stream {}, PostgreSQL)",
                    env!("CARGO_PKG_VERSION"),
                    herald.base_url,
                    settings.nats.stream
                ),
            }
            wait_for_signal().await;
            println!("shutting down");
            herald.shutdown(Duration::from_secs(15)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_valid() {
        super::Cli::command().debug_assert();
    }
}
