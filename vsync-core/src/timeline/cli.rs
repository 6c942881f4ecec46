//! The command line of the timeline tool, without a CLI crate.
//!
//! `run` takes the arguments after the program (or subcommand) name, so
//! that any binary can expose it: the `timeline` example of vsync-core
//! does, and `vsync-kv timeline` can hand its arguments straight over. It
//! prints nothing: it returns the line to show the user (or the usage text
//! for `--help`), and a [`TimelineError`] whose message says what to fix.

use super::{TimelineError, TimelineOptions, write_timeline};
use crate::checker::{CheckOptions, Policy};
use std::path::PathBuf;

/// How to call the tool.
pub const USAGE: &str = "\
usage: timeline HISTORY_FILES... -o OUT.svg [options]

Draws the JSON-lines history files of a run (docs/HISTORY.md) as one
timeline: a lane per process incarnation, views as coloured bands,
deliveries coloured by sender, crashes, removals, joins with state
transfer and blocked periods; whatever the checker finds is marked in red.

options:
  -o, --output PATH   where to write (default timeline.svg); a name ending
                      in .html writes a self-contained HTML page
  --html              write an HTML page whatever the output's name
  --from MS           start of the window, ms since the run's first record
  --to MS             end of the window, ms since the run's first record
  --title TEXT        the picture's title
  --width PX          width in pixels (default 1200)
  --max-marks N       draw at most N sends and deliveries one by one, bin
                      them per time slice beyond (default 3000)
  --partitionable     check under the partitionable policy (default:
                      primary component)
  --liveness          also check liveness (only for runs that ended quiet)
  --no-check          do not run the checker
  -h, --help          this text";

/// Parses `args` (not including the program name), draws the timeline and
/// returns a line saying what was written, or the usage text for `--help`.
pub fn run(args: &[String]) -> Result<String, TimelineError> {
    let mut inputs: Vec<PathBuf> = Vec::new();
    let mut output = PathBuf::from("timeline.svg");
    let mut html = false;
    let mut opts = TimelineOptions::default();
    let mut check = CheckOptions::default();
    let mut no_check = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(USAGE.to_string()),
            "-o" | "--output" => output = PathBuf::from(value(a)?),
            "--html" => html = true,
            "--from" => opts.from_ms = Some(number(a, &value(a)?)?),
            "--to" => opts.to_ms = Some(number(a, &value(a)?)?),
            "--title" => opts.title = Some(value(a)?),
            "--width" => {
                let v = value(a)?;
                opts.width = v
                    .parse()
                    .map_err(|_| usage(&format!("--width wants a number of pixels, not {v:?}")))?;
            }
            "--max-marks" => {
                let v = value(a)?;
                opts.max_marks = v
                    .parse()
                    .map_err(|_| usage(&format!("--max-marks wants a count, not {v:?}")))?;
            }
            "--partitionable" => check.policy = Policy::Partitionable,
            "--liveness" => check.liveness = true,
            "--no-check" => no_check = true,
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(usage(&format!("unknown option {s}")));
            }
            s => inputs.push(PathBuf::from(s)),
        }
    }
    if inputs.is_empty() {
        return Err(usage("give at least one history file"));
    }
    opts.check = (!no_check).then_some(check);
    if html
        && !output
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
    {
        output.set_extension("html");
    }
    let t = write_timeline(&inputs, &output, &opts)?;
    let mut line = format!(
        "wrote {}: {} lanes, {} views, {} deliveries{}",
        output.display(),
        t.lanes,
        t.views,
        t.deliveries,
        if t.binned { " (binned)" } else { "" }
    );
    if opts.check.is_some() {
        if t.violations.is_empty() {
            line.push_str("; checker: no violation");
        } else {
            line.push_str(&format!(
                "; checker: {} violation(s), first: {}",
                t.violations.len(),
                t.violations[0]
            ));
        }
    }
    Ok(line)
}

fn usage(what: &str) -> TimelineError {
    TimelineError::Usage(format!("{what}\n\n{USAGE}"))
}

fn number(flag: &str, v: &str) -> Result<f64, TimelineError> {
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| {
            usage(&format!(
                "{flag} wants milliseconds (a number >= 0), not {v:?}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bad_command_lines_say_what_to_fix() {
        for (a, want) in [
            (vec![], "at least one history file"),
            (vec!["f", "--from"], "--from needs a value"),
            (vec!["f", "--from", "x"], "wants milliseconds"),
            (vec!["f", "--width", "-3"], "--width wants"),
            (vec!["f", "--bogus"], "unknown option --bogus"),
        ] {
            match run(&args(&a)) {
                Err(TimelineError::Usage(m)) => assert!(m.contains(want), "{a:?}: {m}"),
                other => panic!("{a:?}: expected a usage error, got {other:?}"),
            }
        }
        assert!(run(&args(&["--help"])).unwrap().starts_with("usage:"));
        match run(&args(&[
            "/nonexistent/vsync-history.jsonl",
            "-o",
            "/tmp/x.svg",
        ])) {
            Err(TimelineError::Read { path, .. }) => {
                assert!(path.ends_with("vsync-history.jsonl"))
            }
            other => panic!("expected a read error, got {other:?}"),
        }
    }
}
