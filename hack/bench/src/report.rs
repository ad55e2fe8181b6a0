//! Results: named figures with units and targets, percentiles, the printed table and the JSON file.
//!
//! JSON shape (`--out`): `{"mode": "quick"|"full"|"smoke", "machine": {"nproc", "cpu_model",
//! "mem_total_mb"}, "config": {...}, "metrics": [{"name", "value", "unit", "target", "pass",
//! "note"}]}`; `target` and `pass` are `null` for figures without a target.

use serde::Serialize;

/// How a figure compares with its target.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Cmp {
    /// The figure must be at most the bound.
    AtMost,
    /// The figure must be at least the bound.
    AtLeast,
}

/// A target from the issue ("reaction latency p50 ≤ 10 ms").
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Target {
    /// Direction.
    pub cmp: Cmp,
    /// Bound, in the figure's unit.
    pub bound: f64,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// Stable name (`reaction.p50_ms`).
    pub name: String,
    /// The value, in `unit`.
    pub value: f64,
    /// `ms`, `s`, `MB`, `req/min`, `x`, `count`.
    pub unit: String,
    /// The target, if the issue sets one.
    pub target: Option<Target>,
    /// Whether the value meets the target (`None` without a target).
    pub pass: Option<bool>,
    /// Context: sample size, parameters.
    pub note: String,
}

/// Every figure of a run, in order.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// `full`, `quick` or `smoke`.
    pub mode: String,
    /// Machine description.
    pub machine: serde_json::Value,
    /// Parameters of the run.
    pub config: serde_json::Value,
    /// Figures.
    pub metrics: Vec<Metric>,
}

impl Report {
    /// Adds a figure without a target.
    pub fn add(&mut self, name: &str, value: f64, unit: &str, note: impl Into<String>) {
        self.push(name, value, unit, None, note.into());
    }

    /// Adds `<prefix>.p50_<unit>` and `<prefix>.p99_<unit>` of `samples` (in `unit`), without
    /// targets; returns the p50.
    pub fn add_p50_p99(&mut self, prefix: &str, samples: &[f64], unit: &str, note: &str) -> f64 {
        let p50 = quantile(samples, 0.5);
        self.add(&format!("{prefix}.p50_{unit}"), p50, unit, note);
        let p99 = quantile(samples, 0.99);
        self.add(&format!("{prefix}.p99_{unit}"), p99, unit, note);
        p50
    }

    /// Adds a figure with a target.
    pub fn add_target(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        cmp: Cmp,
        bound: f64,
        note: impl Into<String>,
    ) {
        self.push(name, value, unit, Some(Target { cmp, bound }), note.into());
    }

    fn push(&mut self, name: &str, value: f64, unit: &str, target: Option<Target>, note: String) {
        let pass = target.map(|t| match t.cmp {
            Cmp::AtMost => value <= t.bound,
            Cmp::AtLeast => value >= t.bound,
        });
        let m = Metric {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
            target,
            pass,
            note,
        };
        eprintln!("  {}", row(&m));
        self.metrics.push(m);
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<34} {:>12} {:<8} {:<12} {:<6} {}\n",
            "metric", "value", "unit", "target", "result", "note"
        );
        for m in &self.metrics {
            out.push_str(&row(m));
            out.push('\n');
        }
        out
    }
}

fn row(m: &Metric) -> String {
    let target = m
        .target
        .map(|t| match t.cmp {
            Cmp::AtMost => format!("<= {}", fmt_num(t.bound)),
            Cmp::AtLeast => format!(">= {}", fmt_num(t.bound)),
        })
        .unwrap_or_default();
    let result = match m.pass {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "",
    };
    format!(
        "{:<34} {:>12} {:<8} {:<12} {:<6} {}",
        m.name,
        fmt_num(m.value),
        m.unit,
        target,
        result,
        m.note
    )
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The `q`-quantile (0..=1, nearest rank) of `samples`, in their unit; NaN when empty.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// The median of `samples` (the mean of the middle two when their count is even), in their
/// unit; NaN when empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `nproc`, CPU model and total memory, from `/proc`.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "mem_total_mb": (mem_kb * 1024.0 / 1e6).round(),
        "load_avg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_uses_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert_eq!(quantile(&s, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn targets_decide_pass_and_miss() {
        let mut r = Report::default();
        r.add_target("a", 5.0, "ms", Cmp::AtMost, 10.0, "");
        r.add_target("b", 15.0, "ms", Cmp::AtMost, 10.0, "");
        r.add_target("c", 25.0, "x", Cmp::AtLeast, 20.0, "");
        let pass: Vec<_> = r.metrics.iter().map(|m| m.pass).collect();
        assert_eq!(pass, [Some(true), Some(false), Some(true)]);
        assert!(r.table().contains("MISS"));
    }
}
