//! `vsync-kv`: a Redis-protocol key-value server replicated with virtual
//! synchrony. See `vsync-kv --help` and the README.
use clap::Parser;
use vsync_examples::kv::cli::{Cli, run};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("vsync-kv: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
