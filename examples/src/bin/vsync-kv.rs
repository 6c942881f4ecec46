//! `vsync-kv`: a Redis-protocol key-value server replicated with virtual
//! synchrony. See `vsync-kv --help` and the README.
use vsync_examples::kv::cli::{Cmd, LogFormat, run};
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
    // A node logs its membership events (info); the other commands, tools
    // for people, only warnings. RUST_LOG overrides either.
    let (level, json) = match &cli.cmd {
        Cmd::Node(a) => ("info", a.log_format == LogFormat::Json),
        _ => ("warn", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        log.json().init();
    } else {
        log.init();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("vsync-kv: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
