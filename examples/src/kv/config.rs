//! `vsync-kv node --config FILE`: options from a TOML file.
//!
//! Why: operators keep a node's settings in a file under configuration
//! management, and containers pass them as environment variables. Every
//! `node` option may come from a flag, from its `VSYNC_KV_<NAME>` variable
//! (clap's `env`), from the file, or from its default, in that order of
//! precedence: [`parse`] parses the command line once, then adds the
//! file's values, as if given on the command line, for exactly the options
//! that neither a flag nor a variable set, and parses again.
//!
//! The file's keys are the long option names (`listen`, `seed`,
//! `checkpoint-secs`, or with underscores); a list gives an option several
//! times (`seed = ["a:1", "b:2"]`); `true` gives a flag, `false` leaves it
//! out. An unknown key, or one of the one-time operator actions
//! (`recover`, `found-new-cluster`), is an error naming the file and the key.

use crate::kv::cli::Cli;
#[cfg(test)]
use crate::kv::cli::Cmd;
use clap::parser::ValueSource;
use clap::{CommandFactory, Parser};
use std::ffi::OsString;
use std::path::Path;

/// Options that are one-time operator actions: never read from a file.
const FLAG_ONLY: &[&str] = &["recover", "found-new-cluster", "config", "standalone"];

/// Parses `args` (the program name first) with the `--config` file, if any,
/// filling what neither a flag nor an environment variable set. `Err` is a
/// message for the user (clap's own errors print themselves through
/// [`clap::Error::exit`]).
pub fn parse(args: Vec<OsString>) -> Result<Cli, ConfigError> {
    let strict = |args: &[OsString]| Cli::try_parse_from(args).map_err(ConfigError::Clap);
    // Options the file may give are not required on the command line:
    // first find out, leniently, whether there is a file and what the
    // flags and variables set.
    let Ok(matches) = lenient_command().try_get_matches_from(&args) else {
        return strict(&args);
    };
    let Some(("node", sub)) = matches.subcommand() else {
        return strict(&args);
    };
    let Some(path) = sub.get_one::<std::path::PathBuf>("config").cloned() else {
        return strict(&args);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::Message(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    let extra = file_args(&path, &text, |id| {
        matches!(
            sub.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    })?;
    let mut all = args;
    all.extend(extra.into_iter().map(OsString::from));
    strict(&all)
}

/// The command line with no option of `node` required.
fn lenient_command() -> clap::Command {
    Cli::command().mut_subcommand("node", |c| {
        let ids: Vec<clap::Id> = c.get_arguments().map(|a| a.get_id().clone()).collect();
        ids.into_iter()
            .fold(c, |c, id| c.mut_arg(id, |a| a.required(false)))
    })
}

/// Why the command line or the file could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// clap's error (usage, a bad value): print it with [`clap::Error::exit`].
    Clap(clap::Error),
    /// A problem with the file, in plain words.
    Message(String),
}

impl From<clap::Error> for ConfigError {
    fn from(e: clap::Error) -> Self {
        ConfigError::Clap(e)
    }
}

/// The arguments the file adds: `--name value` for each key whose option
/// `is_set` does not report as set already. Checks every key against the
/// `node` options.
fn file_args(
    path: &Path,
    text: &str,
    is_set: impl Fn(&str) -> bool,
) -> Result<Vec<String>, ConfigError> {
    let bad = |what: String| ConfigError::Message(format!("{}: {what}", path.display()));
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(format!("not valid TOML: {e}")))?;
    let cmd = Cli::command();
    let node = cmd
        .find_subcommand("node")
        .ok_or_else(|| bad("no node command".into()))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let Some(arg) = node
            .get_arguments()
            .find(|a| a.get_long() == Some(name.as_str()))
        else {
            return Err(bad(format!("unknown option {key:?}")));
        };
        if FLAG_ONLY.contains(&name.as_str()) {
            return Err(bad(format!(
                "{key:?} is a one-time operator action: give it as a flag (--{name}), not in a file"
            )));
        }
        let id = arg.get_id().as_str();
        if is_set(id) {
            continue;
        }
        let flag = format!("--{name}");
        let items = match value {
            toml::Value::Array(v) => v.clone(),
            v => vec![v.clone()],
        };
        for item in items {
            match item {
                toml::Value::Boolean(true) => out.push(flag.clone()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => out.extend([flag.clone(), s]),
                toml::Value::Integer(i) => out.extend([flag.clone(), i.to_string()]),
                toml::Value::Float(f) => out.extend([flag.clone(), f.to_string()]),
                other => {
                    return Err(bad(format!(
                        "{key:?} must be a string, a number, a boolean or a list of them, not {}",
                        other.type_str()
                    )));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Vec<OsString> {
        ["vsync-kv", "node"]
            .iter()
            .chain(extra)
            .map(OsString::from)
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn node(c: Cli) -> Box<crate::kv::cli::NodeArgs> {
        match c.cmd {
            Cmd::Node(n) => n,
            _ => panic!("not node"),
        }
    }

    const FILE: &str = r#"
        id = 5
        listen = "127.0.0.1:7001"
        resp = "127.0.0.1:6381"
        data = "/tmp/kv5"
        seed = ["127.0.0.1:7002", "127.0.0.1:7003"]
        insecure = true
        checkpoint_secs = 9
        group = "from-file"
    "#;

    /// Flag over file, file over default; lists repeat, booleans are flags.
    /// (The environment's place, between flag and file, is tested with a
    /// real process in tests/kv_config.rs, since a test must not set the
    /// variables of its own process.)
    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let f = write(FILE);
        let p = f.path().to_str().unwrap();
        let n = node(parse(args(&["--config", p, "--group", "from-flag"])).unwrap());
        assert_eq!(n.id, 5);
        assert_eq!(n.group, "from-flag");
        assert_eq!(n.checkpoint_secs, 9);
        assert_eq!(n.max_clients, crate::kv::server::DEFAULT_MAX_CLIENTS);
        assert!(n.insecure);
        assert_eq!(n.seeds.len(), 2);
        let n = node(parse(args(&["--config", p, "--id", "7"])).unwrap());
        assert_eq!((n.id, n.group.as_str()), (7, "from-file"));
    }

    #[test]
    fn unknown_keys_and_one_time_actions_in_a_file_are_refused_by_name() {
        for (text, want) in [
            ("bogus = 1", "unknown option \"bogus\""),
            ("found-new-cluster = true", "one-time operator action"),
            ("recover = 3", "one-time operator action"),
            ("id = [[1]]", "must be a string"),
            ("id = ", "not valid TOML"),
        ] {
            let f = write(text);
            let e = parse(args(&["--config", f.path().to_str().unwrap()])).unwrap_err();
            match e {
                ConfigError::Message(m) => assert!(m.contains(want), "{text}: {m}"),
                ConfigError::Clap(e) => panic!("{text}: clap error {e}"),
            }
        }
    }
}
