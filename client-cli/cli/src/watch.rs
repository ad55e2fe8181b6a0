//! `jobforge watch [NAME]` and `submit --wait`: follow status changes with Consul blocking queries
//! on the status key (or the namespace's status prefix). On a terminal an indicatif spinner shows
//! phase, step and elapsed time; otherwise (a pipe, a file, or `-o json`) one line is printed per
//! transition (`-o json`: one JSON object per line).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use jobforge_client::store::{Blocking, Kv, StoredRequest};
use jobforge_schema::{BuildStatus, Phase};

use crate::args::{Output, WatchArgs};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{elapsed, step};
use crate::query::BLOCK_WAIT;

/// What counts as a transition: phase, attempt and the generation the status describes.
type TransitionKey = (Phase, u32, u64);

fn key_of(r: &StoredRequest) -> TransitionKey {
    let st = r.status.as_ref();
    (
        r.phase(),
        st.map(|s| s.attempt).unwrap_or(0),
        st.map(|s| s.observed_generation).unwrap_or(0),
    )
}

fn line(r: &StoredRequest, out: Output) -> String {
    let st = r.status.as_ref();
    if matches!(out, Output::Json | Output::Yaml) {
        return serde_json::json!({
            "time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "namespace": r.namespace, "name": r.name, "generation": r.generation,
            "phase": r.phase(), "step": step(r.phase(), st), "elapsed": elapsed(st),
            "message": failure_message(st),
        })
        .to_string();
    }
    let mut s = format!(
        "{}  {}/{}  {}  {}  elapsed {}",
        Utc::now().format("%H:%M:%S"),
        r.namespace,
        r.name,
        r.phase(),
        step(r.phase(), st),
        elapsed(st)
    );
    if let Some(m) = failure_message(st) {
        s.push_str(&format!("  {m}"));
    }
    s
}

fn failure_message(st: Option<&BuildStatus>) -> Option<String> {
    let st = st?;
    st.failure
        .as_ref()
        .map(|f| format!("{}: {}", f.reason, f.message))
        .or_else(|| {
            (st.phase == Phase::Cancelled).then(|| {
                st.succeeded_condition()
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| "cancelled".into())
            })
        })
}

fn spinner() -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn spinner_msg(r: &StoredRequest) -> String {
    let st = r.status.as_ref();
    format!(
        "{}/{}  {}  {}  elapsed {}",
        r.namespace,
        r.name,
        r.phase(),
        step(r.phase(), st),
        elapsed(st)
    )
}

/// Follows one request until its current generation (at least `min_generation`) is terminal.
/// Returns `Ok` on `Succeeded`; prints the failure message and the logs command and returns
/// [`CliError::Finished`] on `Failed`/`Cancelled`.
pub async fn follow_one(ctx: &Ctx, name: &str, min_generation: Option<u64>) -> CliResult<()> {
    let ns = ctx.namespace.as_str();
    let store = &ctx.store;
    let tty = std::io::stdout().is_terminal() && matches!(ctx.output, Output::Table | Output::Wide);
    let pb = tty.then(spinner);
    let mut idx = 0u64;
    let mut last: Option<TransitionKey> = None;
    loop {
        let r = store.require(ns, name).await?;
        let done = r.phase().is_terminal() && min_generation.is_none_or(|g| r.generation >= g);
        let k = key_of(&r);
        if last != Some(k) {
            last = Some(k);
            match &pb {
                Some(pb) => {
                    pb.println(line(&r, ctx.output));
                    pb.set_message(spinner_msg(&r));
                }
                None => println!("{}", line(&r, ctx.output)),
            }
        } else if let Some(pb) = &pb {
            pb.set_message(spinner_msg(&r));
        }
        if done {
            if let Some(pb) = &pb {
                pb.finish_and_clear();
            }
            return finish(&r, ctx);
        }
        let (new_idx, _) = store.watch_status(ns, name, idx.max(1), BLOCK_WAIT).await?;
        // Consul: reset when the index goes backwards (e.g. a snapshot restore).
        idx = if new_idx < idx { 0 } else { new_idx };
    }
}

fn finish(r: &StoredRequest, ctx: &Ctx) -> CliResult<()> {
    let quiet = matches!(ctx.output, Output::Json | Output::Yaml);
    match r.phase() {
        Phase::Succeeded => {
            if let Some(img) = r.status.as_ref().and_then(|s| s.image.as_ref())
                && !quiet
            {
                println!("published {}", img.reference);
            }
            Ok(())
        }
        p => {
            let st = r.status.as_ref();
            let phase = st
                .and_then(|s| s.failure.as_ref())
                .and_then(|f| f.phase)
                .map(|p| format!(" --phase {}", p.as_str()))
                .unwrap_or_default();
            let msg = format!(
                "{}/{} ended {p}: {}\nlogs: jobforge logs {} -n {}{phase}",
                r.namespace,
                r.name,
                failure_message(st).unwrap_or_else(|| "no failure recorded".into()),
                r.name,
                r.namespace
            );
            eprintln!("{msg}");
            Err(CliError::Finished(msg))
        }
    }
}

/// `jobforge watch [NAME]`.
pub async fn run(ctx: &Ctx, a: WatchArgs) -> CliResult<()> {
    if let Some(name) = &a.name {
        return follow_one(ctx, name, None).await;
    }
    let ns = ctx.namespace.as_str();
    let store = &ctx.store;
    let tty = std::io::stdout().is_terminal() && matches!(ctx.output, Output::Table | Output::Wide);
    let pb = tty.then(spinner);
    let status_prefix = format!("{}{ns}/", store.keys().status_prefix());
    let requests_prefix = store.keys().namespace_requests_prefix(ns);
    let mut seen: BTreeMap<String, TransitionKey> = BTreeMap::new();
    let (mut sidx, mut ridx) = (0u64, 0u64);
    loop {
        let all = store.list(Some(ns)).await?;
        for r in &all {
            let k = key_of(r);
            if seen.get(&r.name) != Some(&k) {
                seen.insert(r.name.clone(), k);
                match &pb {
                    Some(pb) => pb.println(line(r, ctx.output)),
                    None => println!("{}", line(r, ctx.output)),
                }
            }
        }
        seen.retain(|n, _| all.iter().any(|r| &r.name == n));
        if let Some(pb) = &pb {
            let running = all.iter().filter(|r| !r.phase().is_terminal()).count();
            pb.set_message(format!(
                "{ns}: {} requests, {running} in progress",
                all.len()
            ));
        }
        let kv = store.kv();
        tokio::select! {
            res = kv.list(&status_prefix, Blocking { index: sidx.max(1), wait: Some(BLOCK_WAIT) }) => {
                let i = res?.0; sidx = if i < sidx { 0 } else { i };
            }
            res = kv.list(&requests_prefix, Blocking { index: ridx.max(1), wait: Some(BLOCK_WAIT) }) => {
                let i = res?.0; ridx = if i < ridx { 0 } else { i };
            }
        }
    }
}
