//! `cargo xtask bench`: runs the criterion benches, then turns criterion's
//! estimates into the results table of `docs/benchmarks.md`, with every benchmark's
//! ratio to the physical baseline measured in the same group and run.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::{Error, cargo, root};

const TABLE_START: &str = "<!-- bench-table:start -->";
const TABLE_END: &str = "<!-- bench-table:end -->";

/// One benchmark's result, as criterion wrote it.
#[derive(Debug)]
struct Measurement {
    group: String,
    function: String,
    parameter: String,
    /// Mean nanoseconds per iteration.
    mean_ns: f64,
    /// Bytes or elements per iteration.
    per_iter: Option<(f64, &'static str)>,
}

impl Measurement {
    /// Units per second, if a throughput was declared.
    fn rate(&self) -> Option<f64> {
        self.per_iter.map(|(n, _)| n / (self.mean_ns / 1e9))
    }

    fn is_baseline(&self) -> bool {
        self.function.starts_with("baseline")
    }
}

pub(crate) fn run(args: &[String]) -> Result<(), Error> {
    let mut command = cargo(&["bench", "--workspace"]);
    if !args.is_empty() {
        command.arg("--").args(args);
    }
    crate::run(command)?;
    let measurements = collect(&root().join("target/criterion"))?;
    let table = render(&measurements);
    println!("{table}");
    let readme = root().join("docs").join("benchmarks.md");
    let text = fs::read_to_string(&readme)?;
    if let (Some(start), Some(end)) = (text.find(TABLE_START), text.find(TABLE_END)) {
        let updated = format!("{}{TABLE_START}\n{table}{}", &text[..start], &text[end..]);
        fs::write(&readme, updated)?;
        println!("xtask bench: docs/benchmarks.md table updated");
    } else {
        return Err(format!(
            "docs/benchmarks.md lacks the {TABLE_START} / {TABLE_END} markers: table not written"
        )
        .into());
    }
    Ok(())
}

fn collect(dir: &Path) -> Result<Vec<Measurement>, Error> {
    let mut found = Vec::new();
    // Criterion writes each benchmark's latest run to `.../new/`.
    for path in crate::walk(vec![dir.to_path_buf()], &["base", "report"]) {
        let Some(run_dir) = path.parent().filter(|d| d.ends_with("new")) else {
            continue;
        };
        if path.file_name().is_some_and(|n| n == "benchmark.json")
            && let Some(m) = read_measurement(run_dir)?
        {
            found.push(m);
        }
    }
    found.sort_by(|a, b| {
        (&a.group, &a.parameter, &a.function).cmp(&(&b.group, &b.parameter, &b.function))
    });
    Ok(found)
}

fn read_measurement(dir: &Path) -> Result<Option<Measurement>, Error> {
    let (Ok(benchmark), Ok(estimates)) = (
        fs::read_to_string(dir.join("benchmark.json")),
        fs::read_to_string(dir.join("estimates.json")),
    ) else {
        return Ok(None);
    };
    let benchmark: Value = serde_json::from_str(&benchmark)?;
    let estimates: Value = serde_json::from_str(&estimates)?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let per_iter = match &benchmark["throughput"] {
        Value::Object(map) => map.iter().next().and_then(|(kind, n)| {
            let unit = if kind.starts_with("Bytes") {
                "B"
            } else {
                "elem"
            };
            n.as_f64().map(|n| (n, unit))
        }),
        _ => None,
    };
    Ok(estimates["mean"]["point_estimate"]
        .as_f64()
        .map(|mean_ns| Measurement {
            group: text(&benchmark["group_id"]),
            function: text(&benchmark["function_id"]),
            parameter: text(&benchmark["value_str"]),
            mean_ns,
            per_iter,
        }))
}

fn render(measurements: &[Measurement]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Machine: {}. Command: `cargo xtask bench`.\n",
        machine()
    );
    let _ = writeln!(
        out,
        "| group | benchmark | parameter | time / iter | throughput | vs baseline |"
    );
    let _ = writeln!(out, "| --- | --- | --- | ---: | ---: | ---: |");
    for m in measurements {
        let baseline = measurements
            .iter()
            .filter(|b| b.group == m.group && b.is_baseline())
            .min_by_key(|b| b.parameter != m.parameter);
        let ratio = match (baseline, m.rate()) {
            (Some(b), Some(rate)) if !m.is_baseline() => {
                b.rate().map(|br| format!("{:.0}%", 100.0 * rate / br))
            }
            _ => None,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            m.group,
            m.function,
            m.parameter,
            human_time(m.mean_ns),
            m.per_iter
                .and_then(|(_, unit)| m.rate().map(|r| human_rate(r, unit)))
                .unwrap_or_default(),
            ratio.unwrap_or_else(|| "-".into()),
        );
    }
    out
}

fn human_time(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.2} s", n / 1e9),
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} us", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

fn human_rate(per_second: f64, unit: &str) -> String {
    if unit == "B" {
        format!("{:.0} MiB/s", per_second / f64::from(1u32 << 20))
    } else if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else {
        format!("{per_second:.0} /s")
    }
}

/// Cores, CPU model and compiler, so a reader knows what the numbers mean.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores, {cpu}, {rustc}")
}
