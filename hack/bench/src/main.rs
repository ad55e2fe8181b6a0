//! `jobforge-bench`: control-plane benchmarks against the dev stack with instant tasks (its mock
//! driver by default; `--tasks process` runs the phase scripts with the no-op build tools of
//! `tests/fakes`), printing a table and writing JSON.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p jobforge-bench -- [--quick|--smoke] [--out bench-results.json] [scenario...]
//! ```
//!
//! Scenarios (all when none is named): `floor`, `reaction`, `status`, `throughput` (includes the
//! idle cost with the finished requests stored), `failover`, `baseline`, `fairness` (one
//! namespace's backlog against another's next builds, issue 17), `scale` (reaction, bytes read,
//! RSS and idle cost with many requests stored across many namespaces, issue 17), and, only when
//! named, `build` (real buildah builds of `examples/multi-stage`, jobforge cold and warm against
//! the same steps by hand, issue 19; needs the real tools and the Debian base image) and `supply`
//! (real buildah builds of the hello-world with signing on and off, alternating: the time signing
//! adds, issue 20; needs `git`, `buildah`, `skopeo`, `docker-registry`, `busybox`). The
//! polling-baseline ratio
//! is reported when both `reaction` and `baseline` run. Exit status 1 when a scenario failed to run
//! (a MISS against a target is a measurement, not a failure). See `docs/performance.md`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

mod api;
mod build;
mod failover;
mod fairness;
mod latency;
mod load;
mod naive;
mod report;
mod scale;
mod stack;
mod supply;

use report::{Cmp, Report};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "jobforge-bench",
    about = "Control-plane benchmarks against the dev stack"
)]
struct Args {
    /// Smaller workloads (minutes instead of tens of minutes); see docs/performance.md.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// Tiny workloads proving the harness works (CI; under a minute).
    #[arg(long)]
    smoke: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// Folder of `jobforge-devstack` and `jobforge-controller` (default: this binary's folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Controllers' `--session-ttl`, whole seconds with an `s` suffix (Consul allows 10s..=86400s).
    /// The default is the controller's own, so the idle cost is what a default deployment pays.
    #[arg(long, default_value = "15s")]
    session_ttl: String,
    /// Controllers' `--lock-delay`, whole seconds with an `s` suffix (0s..=60s). The default is
    /// the controller's own (0s: every write is fenced).
    #[arg(long, default_value = "0s")]
    lock_delay: String,
    /// How tasks run: `mock` (the dev stack's mock driver: no process, the control plane alone)
    /// or `process` (the phase scripts with no-op buildah/skopeo, competing for the same cores).
    #[arg(long, value_enum, default_value = "mock")]
    tasks: stack::Tasks,
    /// Idle window of the `scale` scenario's leader, seconds (default per mode: smoke 5, quick
    /// 30, full 640 = one whole 10-min re-arm period of the blocking reads plus Consul's jitter).
    #[arg(long)]
    scale_idle_secs: Option<u64>,
    /// Controllers' `--watch-park-after` (a namespace unchanged this long is parked; the `scale`
    /// scenario's idle window starts once every namespace is). Default: the controller's own,
    /// 60s, except with `--smoke`, 5s (so CI does not wait a minute for it).
    #[arg(long)]
    watch_park_after: Option<String>,
    /// Scenarios to run: floor, reaction, status, throughput, failover, baseline, fairness,
    /// scale (default: all of these), and `build`, `supply` (only when named: real buildah builds).
    scenarios: Vec<String>,
}

const ALL: [&str; 8] = [
    "floor",
    "reaction",
    "status",
    "throughput",
    "failover",
    "baseline",
    "fairness",
    "scale",
];

/// Scenarios run only when named (real builds, minutes).
const ON_REQUEST: [&str; 2] = ["build", "supply"];

/// Workload sizes of one mode.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    floor: usize,
    reaction: usize,
    status: usize,
    baseline: usize,
    throughput: usize,
    idle_window: Duration,
    finish_timeout: Duration,
    failover_trials: usize,
    fairness: fairness::FairSizes,
    scale: scale::ScaleSizes,
    supply_trials: usize,
}

impl Sizes {
    fn of(mode: &str) -> Sizes {
        match mode {
            "smoke" => Sizes {
                floor: 20,
                reaction: 20,
                status: 3,
                baseline: 3,
                throughput: 20,
                idle_window: Duration::from_secs(3),
                finish_timeout: Duration::from_secs(120),
                failover_trials: 1,
                fairness: fairness::FairSizes {
                    backlog: 40,
                    late: 3,
                },
                scale: scale::ScaleSizes {
                    stored: 1_000,
                    namespaces: 10,
                    samples: 10,
                    idle_window: Duration::from_secs(5),
                },
                supply_trials: 2,
            },
            "quick" => Sizes {
                floor: 200,
                reaction: 200,
                status: 30,
                baseline: 20,
                throughput: 1_000,
                idle_window: Duration::from_secs(20),
                finish_timeout: Duration::from_secs(30 * 60),
                failover_trials: 3,
                fairness: fairness::FairSizes {
                    backlog: 300,
                    late: 10,
                },
                scale: scale::ScaleSizes {
                    stored: 10_000,
                    namespaces: 100,
                    samples: 100,
                    idle_window: Duration::from_secs(30),
                },
                supply_trials: 8,
            },
            _ => Sizes {
                floor: 1_000,
                reaction: 1_000,
                status: 100,
                baseline: 100,
                throughput: 10_000,
                idle_window: Duration::from_secs(60),
                finish_timeout: Duration::from_secs(120 * 60),
                failover_trials: 20,
                fairness: fairness::FairSizes {
                    backlog: 1_000,
                    late: 10,
                },
                scale: scale::ScaleSizes {
                    stored: 100_000,
                    namespaces: 100,
                    samples: 200,
                    // One whole period of the namespace reads: Consul's longest blocking wait
                    // (10 min) plus its wait/16 jitter, so every read is re-armed once inside.
                    idle_window: Duration::from_secs(640),
                },
                supply_trials: 20,
            },
        }
    }
}

/// `"10s"` → 10.0.
fn seconds(flag: &str, v: &str) -> anyhow::Result<f64> {
    v.strip_suffix('s')
        .and_then(|n| n.parse::<u32>().ok())
        .map(f64::from)
        .with_context(|| format!("--{flag} {v:?}: expected whole seconds such as \"10s\""))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mode = if args.smoke {
        "smoke"
    } else if args.quick {
        "quick"
    } else {
        "full"
    };
    for s in &args.scenarios {
        if !ALL.contains(&s.as_str()) && !ON_REQUEST.contains(&s.as_str()) {
            bail!(
                "unknown scenario {s:?}; expected one of {}, {}",
                ALL.join(", "),
                ON_REQUEST.join(", ")
            );
        }
    }
    let run = |s: &str| {
        (args.scenarios.is_empty() && !ON_REQUEST.contains(&s))
            || args.scenarios.iter().any(|x| x == s)
    };
    let ttl_s = seconds("session-ttl", &args.session_ttl)?;
    let lock_delay_s = seconds("lock-delay", &args.lock_delay)?;
    let mut sizes = Sizes::of(mode);
    if let Some(secs) = args.scale_idle_secs {
        sizes.scale.idle_window = Duration::from_secs(secs);
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => stack::default_bin_dir()?,
    };
    let park_after = match (&args.watch_park_after, args.smoke) {
        (Some(d), _) => d.clone(),
        (None, true) => "5s".to_string(),
        (None, false) => "60s".to_string(),
    };
    let mut bins = stack::Binaries::new(bin_dir, &args.session_ttl, &args.lock_delay, args.tasks)?;
    bins.park_after = park_after;
    let repo = jobforge_tests::GitRepo::from_dir(
        &jobforge_tests::workspace_root().join("examples/hello-world"),
        |_| Ok(()),
    )
    .context("creating the fixture git repository")?;

    let mut report = Report {
        mode: mode.to_string(),
        machine: report::machine(),
        config: serde_json::json!({
            "sizes": format!("{sizes:?}"),
            "session_ttl": args.session_ttl,
            "lock_delay": args.lock_delay,
            "watch_park_after": bins.park_after,
            "bin_dir": bins.dir,
            "tasks": match args.tasks {
                stack::Tasks::Mock => "dev stack mock driver (no task process)",
                stack::Tasks::Process => "tests/fakes (no-op buildah/skopeo); git clone of a local file:// repo per build",
            },
        }),
        ..Report::default()
    };
    eprintln!("jobforge-bench ({mode}) machine: {}", report.machine);
    let mut errors: Vec<String> = Vec::new();
    let mut note = |what: &str, r: anyhow::Result<()>| {
        if let Err(e) = r {
            eprintln!("[{what}] FAILED: {e:#}");
            errors.push(format!("{what}: {e:#}"));
        }
    };

    if run("floor") {
        let r = async {
            let st = stack::Stack::start(&bins, &[])?;
            st.warm_up().await?;
            latency::floor(&st, sizes.floor, &mut report).await
        }
        .await;
        note("floor", r);
    }
    let mut ours = None;
    if run("reaction") {
        let r = latency::reaction(&bins, &repo.url, sizes.reaction, &mut report).await;
        ours = r.as_ref().ok().copied();
        note("reaction", r.map(|_| ()));
    }
    if run("status") {
        let r = latency::alloc_to_status(&bins, &repo.url, sizes.status, &mut report).await;
        note("status", r);
    }
    if run("throughput") {
        let load = load::LoadSizes {
            requests: sizes.throughput,
            idle_window: sizes.idle_window,
            finish_timeout: sizes.finish_timeout,
        };
        let r = load::run(&bins, &repo.url, load, &mut report).await;
        note("throughput", r);
    }
    if run("failover") {
        let r = failover::run(
            &bins,
            &repo.url,
            sizes.failover_trials,
            ttl_s,
            lock_delay_s,
            &mut report,
        )
        .await;
        note("failover", r);
    }
    if run("baseline") {
        let r = latency::baseline(&bins, &repo.url, sizes.baseline, &mut report).await;
        if let (Ok(naive), Some(ours)) = (&r, ours) {
            report.add_target(
                "baseline.ratio_x",
                naive / ours,
                "x",
                Cmp::AtLeast,
                20.0,
                "polling p50 / controller reaction p50, both with requests submitted one at a time as independent events",
            );
        }
        note("baseline", r.map(|_| ()));
    }

    if run("fairness") {
        let r = fairness::run(&bins, &repo.url, sizes.fairness, &mut report).await;
        note("fairness", r);
    }
    if run("scale") {
        let r = scale::run(&bins, &repo.url, sizes.scale, &mut report).await;
        note("scale", r);
    }
    if args.scenarios.iter().any(|x| x == "build") {
        let r = build::run(&bins, &mut report).await;
        note("build", r);
    }

    if run("supply") {
        let r = supply::run(&bins, sizes.supply_trials, &mut report).await;
        note("supply", r);
    }

    let mut doc = serde_json::to_value(&report)?;
    doc["errors"] = serde_json::json!(errors);
    std::fs::write(&args.out, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", report.table());
    println!("results written to {}", args.out.display());
    if !errors.is_empty() {
        bail!("{} scenario(s) failed: {}", errors.len(), errors.join("; "));
    }
    Ok(())
}
