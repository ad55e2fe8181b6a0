//! Supply chain (issue 20): the time signing and provenance add to a real build. One dev stack
//! with the REAL tools (host `git`, `buildah`, `skopeo`; not `tests/fakes`), one controller, one
//! `docker-registry` on loopback, Vault transit with the key `jobforge`, and the hello-world
//! (`examples/hello-world` + the host's static busybox) at one commit. After one untimed warm-up
//! build (the first push of the blobs), `trials` pairs of builds run one at a time, alternating
//! signing on and off (`signing` in `<prefix>/config`, toggled on the same stack and controller;
//! the next build waits until the controller's `/status` `config_index` is the new document's
//! ModifyIndex), so both sides see the same machine load drift.
//!
//! A build's time is its request's PUT → its status `Succeeded` seen by a blocking query (signing
//! runs before the controller commits `Succeeded`, so it is inside). Reported: p50 of each side,
//! the added time (p50 on − p50 off; also the p50 of the differences within each back-to-back
//! pair) and its share of the unsigned build against the target
//! ≤ 15 %, and the signing step's own duration from the controller's histogram
//! `jobforge_signing_duration_seconds` (`_sum`/`_count` per signed build). Only run when named
//! (`jobforge-bench supply`): it needs the real tools and minutes.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jobforge_tests::{GitRepo, Kv, Registry};
use serde_json::json;

use crate::report::{Cmp, Report, quantile};
use crate::stack::{Binaries, Controller, Stack};

/// How long one build may take before the scenario fails.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// The root token of the dev stack's Vault.
const VAULT_ROOT: &str = "root";

async fn vault_post(stack: &Stack, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/{path}", stack.vault))
        .header("X-Vault-Token", VAULT_ROOT)
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("vault {path}: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}

/// Writes `<prefix>/config` and waits until the controller runs with it.
async fn set_config(
    kv: &Kv,
    ctl: &Controller,
    stack: &Stack,
    doc: &serde_json::Value,
) -> anyhow::Result<()> {
    kv.put("jobforge/config", doc.to_string().as_bytes())
        .await
        .context("writing jobforge/config")?;
    let meta: serde_json::Value = reqwest::get(format!("{}/v1/kv/jobforge/config", stack.consul))
        .await?
        .json()
        .await?;
    let index = meta[0]["ModifyIndex"]
        .as_u64()
        .context("no ModifyIndex for jobforge/config")?;
    jobforge_tests::wait_until(
        Duration::from_secs(20),
        "the controller runs with the new config",
        || async {
            let st: serde_json::Value = reqwest::get(format!("{}/status", ctl.http))
                .await?
                .json()
                .await?;
            Ok(st["config_index"].as_u64() == Some(index))
        },
    )
    .await
}

/// `(sum, count)` of `jobforge_signing_duration_seconds` on the controller's `/metrics` (zeros
/// before the first signature).
async fn signing_histogram(ctl: &Controller) -> anyhow::Result<(f64, f64)> {
    let text = reqwest::get(format!("{}/metrics", ctl.http))
        .await?
        .text()
        .await?;
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        read("jobforge_signing_duration_seconds_sum "),
        read("jobforge_signing_duration_seconds_count "),
    ))
}

/// One build of the hello-world as `name`; its duration in seconds.
async fn build(
    kv: &Kv,
    registry: &Registry,
    repo: &GitRepo,
    name: &str,
    signed: bool,
) -> anyhow::Result<f64> {
    let spec = json!({
        "repo_url": repo.url,
        "git_ref": "main",
        "dockerfile_path": "Containerfile",
        "image_name": "supply-bench",
        "image_tags": [name],
        "registry_url": format!("{}/bench", registry.addr),
    });
    let started = Instant::now();
    kv.put(
        &format!("jobforge/requests/default/{name}"),
        &jobforge_tests::request_json("default", name, spec),
    )
    .await?;
    let st = kv
        .wait_json(
            &format!("jobforge/status/default/{name}"),
            BUILD_TIMEOUT,
            |v| {
                matches!(
                    v["phase"].as_str(),
                    Some("Succeeded" | "Failed" | "Cancelled")
                )
            },
        )
        .await?;
    let took = started.elapsed().as_secs_f64();
    if st["phase"] != "Succeeded" {
        bail!("{name} ended {}: {st}", st["phase"]);
    }
    let has_sig = st["image"]["signature"].is_string();
    if has_sig != signed {
        bail!("{name}: signing {signed} but the status says signature {has_sig}: {st}");
    }
    Ok(took)
}

/// Runs the scenario (module docs) with `trials` builds per side.
pub async fn run(bins: &Binaries, trials: usize, report: &mut Report) -> anyhow::Result<()> {
    eprintln!(
        "[supply] hello-world with real buildah, {trials} builds signed and {trials} unsigned, alternating"
    );
    let stack = Stack::start_real_tools(bins)?;
    vault_post(&stack, "sys/mounts/transit", json!({"type": "transit"})).await?;
    vault_post(
        &stack,
        "transit/keys/jobforge",
        json!({"type": "ecdsa-p256"}),
    )
    .await?;
    let kv = Kv::new(stack.consul.clone());
    let off = json!({"registry_tls_verify": false});
    let on = json!({"registry_tls_verify": false,
        "signing": {"transit_key": "jobforge", "builder_id": "https://bench.example/jobforge"}});
    kv.put("jobforge/config", off.to_string().as_bytes())
        .await?;
    let registry = Registry::start().await?;
    let repo = GitRepo::hello_world()?;
    let ctl = Controller::start(bins, &stack).await?;
    ctl.wait_leader(Duration::from_secs(60)).await?;
    set_config(&kv, &ctl, &stack, &off).await?;
    build(&kv, &registry, &repo, "warmup", false).await?;

    let (mut t_on, mut t_off, mut t_sign) = (Vec::new(), Vec::new(), Vec::new());
    let mut paired = Vec::new();
    for i in 0..trials {
        // Alternate which side goes first, so neither always follows the other.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for signed in order {
            set_config(&kv, &ctl, &stack, if signed { &on } else { &off }).await?;
            let name = format!("t{i}-{}", if signed { "on" } else { "off" });
            let (sum0, n0) = signing_histogram(&ctl).await?;
            let took = build(&kv, &registry, &repo, &name, signed).await?;
            eprintln!("[supply] {name}: {took:.2} s");
            if signed {
                t_on.push(took);
                let (sum1, n1) = signing_histogram(&ctl).await?;
                if n1 > n0 {
                    t_sign.push((sum1 - sum0) / (n1 - n0));
                }
            } else {
                t_off.push(took);
            }
        }
        if let (Some(on), Some(off)) = (t_on.last(), t_off.last()) {
            paired.push(on - off);
        }
    }
    let p_on = quantile(&t_on, 0.5);
    let p_off = quantile(&t_off, 0.5);
    let note = format!("{trials} builds per side, alternating; PUT -> Succeeded");
    report.add("supply.build_unsigned.p50_s", p_off, "s", &note);
    report.add("supply.build_signed.p50_s", p_on, "s", &note);
    report.add(
        "supply.added.p50_s",
        p_on - p_off,
        "s",
        "p50 signed - p50 unsigned",
    );
    report.add(
        "supply.added.paired_p50_s",
        quantile(&paired, 0.5),
        "s",
        "p50 of (signed - unsigned) within each back-to-back pair: less sensitive to load drift",
    );
    report.add_target(
        "supply.added_pct",
        100.0 * (p_on - p_off) / p_off,
        "%",
        Cmp::AtMost,
        15.0,
        "added time / unsigned hello-world build (issue 20)",
    );
    if t_sign.is_empty() {
        bail!("the controller's jobforge_signing_duration_seconds never counted a signature");
    }
    report.add(
        "supply.signing_step.p50_s",
        quantile(&t_sign, 0.5),
        "s",
        "the controller's own signing step (jobforge_signing_duration_seconds)",
    );
    Ok(())
}
