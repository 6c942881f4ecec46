//! `vsync-kv`: a Redis-protocol key-value server replicated with virtual
//! synchrony. See `vsync-kv --help` and the README.
use vsync_examples::kv::cli::run;
use vsync_examples::kv::config::{ConfigError, parse};

fn main() -> std::process::ExitCode {
    // Flags, then VSYNC_KV_* variables, then `--config FILE`, then defaults.
    let cli = match parse(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(ConfigError::Message(m)) => {
            eprintln!("vsync-kv: {m}");
            return std::process::ExitCode::from(2);
        }
    };
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
