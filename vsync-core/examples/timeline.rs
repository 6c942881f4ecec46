//! Draws history files as a timeline (SVG or HTML), optionally also as PNG.
//!
//! ```text
//! cargo run -p vsync-core --example timeline -- FILES... -o run.svg [--from MS --to MS] [--html] [--png run.png]
//! ```
//!
//! Everything but `--png` and `--sim` is `vsync_core::timeline::cli` (run
//! with `--help`); `--png PATH` also rasterises the SVG with resvg (for docs
//! and for looking at a run without a browser). `--sim SEED [--size N]
//! [--mutation deliver_unstable|flush_drops_unordered|ignore_quorum]` first
//! runs the simulator, writes its histories as JSON lines next to the output
//! (`OUT.jsonl`) and draws those, checked with liveness as the simulator
//! does:
//!
//! ```text
//! cargo run --release -p vsync-core --example timeline -- --sim 3 --size 4 --mutation deliver_unstable -o bad.svg --png bad.png
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use vsync_core::engine::Mutations;
use vsync_core::history;
use vsync_core::sim::{self, SimOptions};
use vsync_core::timeline::cli;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut png = None;
    if let Some(i) = args.iter().position(|a| a == "--png") {
        if i + 1 >= args.len() {
            eprintln!("--png needs a file name");
            return ExitCode::from(2);
        }
        png = Some(PathBuf::from(args.remove(i + 1)));
        args.remove(i);
    }
    if args.iter().any(|a| a == "--sim") {
        match simulate(&mut args) {
            Ok(msg) => println!("{msg}"),
            Err(e) => {
                eprintln!("timeline: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let line = match cli::run(&args) {
        Ok(line) => line,
        Err(e) => {
            eprintln!("timeline: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{line}");
    if let Some(png) = png {
        let svg = output_of(&args);
        match rasterise(&svg, &png) {
            Ok(()) => println!("wrote {}", png.display()),
            Err(e) => {
                eprintln!("timeline: cannot render {} as PNG: {e}", svg.display());
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

/// Takes `--sim SEED [--size N] [--mutation M]` out of `args`, runs the
/// seed, writes its histories to `OUT.jsonl` and puts that file (and
/// `--liveness`) in `args` for the cli.
fn simulate(args: &mut Vec<String>) -> Result<String, String> {
    let mut take = |flag: &str| -> Result<Option<String>, String> {
        let Some(i) = args.iter().position(|a| a == flag) else {
            return Ok(None);
        };
        if i + 1 >= args.len() {
            return Err(format!("{flag} needs a value"));
        }
        let v = args.remove(i + 1);
        args.remove(i);
        Ok(Some(v))
    };
    let num = |v: String| v.parse::<u64>().map_err(|_| format!("not a number: {v}"));
    let seed = num(take("--sim")?.unwrap_or_default())?;
    let mut opts = SimOptions::default();
    if let Some(n) = take("--size")? {
        opts.size = Some(num(n)? as usize);
    }
    if let Some(m) = take("--mutation")? {
        opts.mutations = match m.as_str() {
            "deliver_unstable" => Mutations {
                deliver_unstable: true,
                ..Mutations::default()
            },
            "flush_drops_unordered" => Mutations {
                flush_drops_unordered: true,
                ..Mutations::default()
            },
            "ignore_quorum" => Mutations {
                ignore_quorum: true,
                ..Mutations::default()
            },
            _ => return Err(format!("unknown mutation {m}")),
        };
    }
    let r = sim::run(seed, &opts);
    let dump = output_of(args).with_extension("jsonl");
    let mut f = std::fs::File::create(&dump).map_err(|e| format!("{}: {e}", dump.display()))?;
    for rec in r.histories.iter().flat_map(|h| &h.records) {
        writeln!(f, "{}", history::to_json_line(rec)).map_err(|e| e.to_string())?;
    }
    args.push(dump.display().to_string());
    args.push("--liveness".into());
    Ok(format!(
        "seed {seed}: {} deliveries, {} violations; histories in {}",
        r.deliveries,
        r.violations.len(),
        dump.display()
    ))
}

/// The SVG file the cli wrote (same default and rule as the cli).
fn output_of(args: &[String]) -> PathBuf {
    args.iter()
        .position(|a| a == "-o" || a == "--output")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| PathBuf::from("timeline.svg"), PathBuf::from)
}

fn rasterise(svg: &std::path::Path, png: &std::path::Path) -> Result<(), String> {
    let data = std::fs::read(svg).map_err(|e| e.to_string())?;
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_data(&data, &opt).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or("the picture has no area")?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap.save_png(png).map_err(|e| e.to_string())
}
