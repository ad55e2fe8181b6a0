//! `get`, `list`, `logs`, `history`, `cancel`, `delete`.

use std::time::Duration;

use jobforge_client::store::{Blocking, LabelSelector};
use jobforge_schema::{Phase, PipelinePhase};

use crate::args::{HistoryArgs, ListArgs, LogsArgs, Output};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{elapsed, print_doc, print_requests, print_table, view};

/// How long one blocking query waits before it is re-issued (Consul's default is 5 minutes).
pub const BLOCK_WAIT: Duration = Duration::from_secs(300);

/// `jobforge get NAME`.
pub async fn get(ctx: &Ctx, name: &str) -> CliResult<()> {
    let r = ctx.store.require(&ctx.namespace, name).await?;
    match ctx.output {
        Output::Json | Output::Yaml => print_doc(ctx.output, &view(&r)),
        _ => {
            let v = view(&r);
            println!("Name:        {}/{}", r.namespace, r.name);
            println!("Generation:  {}", r.generation);
            match &r.request {
                Ok(q) => {
                    println!("Owner:       {}", q.spec.owner);
                    println!("Source:      {} @ {}", q.spec.repo_url, q.spec.git_ref);
                    println!("Image:       {}", v.image);
                    if q.spec.cancel {
                        println!("Cancel:      requested");
                    }
                }
                Err(_) => println!("Invalid:     {}", r.invalid_message().unwrap_or_default()),
            }
            println!("Phase:       {}", v.phase);
            println!("Step:        {}", v.step);
            println!("Elapsed:     {}", elapsed(r.status.as_ref()));
            if let Some(st) = &r.status {
                if st.observed_generation != r.generation {
                    println!(
                        "Note:        status describes generation {}; the controller has not observed {} yet",
                        st.observed_generation, r.generation
                    );
                }
                if let Some(src) = &st.source {
                    println!("Commit:      {}", src.commit_sha);
                }
                if let Some(img) = &st.image {
                    println!("Published:   {}", img.reference);
                    if let Some(d) = &img.digest {
                        println!("Digest:      {d}");
                    }
                    if let Some(sig) = &img.signature {
                        println!("Signature:   {sig}");
                    }
                    if let Some(att) = &img.provenance {
                        println!("Provenance:  {att}");
                    }
                    if img.signature.is_some() || img.provenance.is_some() {
                        println!("Verify:      jobforge verify {}", img.reference);
                    }
                    if let Some(e) = &img.signing_error {
                        println!("Not signed:  {e}");
                    }
                }
                if let Some(f) = &st.failure {
                    println!("Failure:     {} {}", f.reason, f.message);
                }
            }
            Ok(())
        }
    }
}

/// `jobforge list`.
pub async fn list(ctx: &Ctx, a: ListArgs) -> CliResult<()> {
    let phase = match &a.phase {
        Some(p) => Some(Phase::parse(p).ok_or_else(|| {
            CliError::Input(format!(
                "--phase `{p}` is not a phase; use one of Pending, Building, Testing, Publishing, Succeeded, Failed, Cancelled"
            ))
        })?),
        None => None,
    };
    let sel = match &a.selector {
        Some(s) => LabelSelector::parse(s).map_err(|e| CliError::Input(format!("-l: {e}")))?,
        None => LabelSelector::default(),
    };
    let ns = (!a.all_namespaces).then_some(ctx.namespace.as_str());
    let items: Vec<_> = ctx
        .store
        .list(ns)
        .await?
        .into_iter()
        .filter(|r| phase.is_none_or(|p| r.phase() == p))
        .filter(|r| a.owner.as_deref().is_none_or(|o| r.owner() == o))
        .filter(|r| sel.matches(&r.labels()))
        .collect();
    print_requests(ctx.output, &items)
}

/// `jobforge logs NAME [--phase P] [--follow]`.
pub async fn logs(ctx: &Ctx, a: LogsArgs) -> CliResult<()> {
    let ns = ctx.namespace.as_str();
    let r = ctx.store.require(ns, &a.name).await?;
    let phases: Vec<PipelinePhase> = match a.phase.or(a.phase_pos) {
        Some(p) => vec![p],
        None => PipelinePhase::ALL.to_vec(),
    };
    if !a.follow {
        let mut any = false;
        let mut out = serde_json::Map::new();
        for p in &phases {
            let (_, text) = ctx.store.logs(ns, &a.name, *p, Blocking::default()).await?;
            if let Some(t) = text {
                any = true;
                if matches!(ctx.output, Output::Json | Output::Yaml) {
                    out.insert(p.as_str().to_string(), t.into());
                } else {
                    if phases.len() > 1 {
                        println!("==> {} <==", p.as_str());
                    }
                    print!("{t}");
                    if !t.ends_with('\n') {
                        println!();
                    }
                }
            }
        }
        if matches!(ctx.output, Output::Json | Output::Yaml) {
            return print_doc(ctx.output, &out);
        }
        if !any {
            eprintln!(
                "no logs yet for {ns}/{} (phase {}); the controller writes them as phases run",
                a.name,
                r.phase()
            );
        }
        return Ok(());
    }
    follow_logs(ctx, &a.name, &phases).await
}

/// Prints what was appended to each phase's log tail until the request is terminal. The log key
/// holds a bounded tail that the controller rewrites, so new text is what follows the previous
/// content (or the whole value when the tail moved past it).
async fn follow_logs(ctx: &Ctx, name: &str, phases: &[PipelinePhase]) -> CliResult<()> {
    let ns = ctx.namespace.as_str();
    let store = &ctx.store;
    let mut seen: Vec<String> = vec![String::new(); phases.len()];
    let logs_prefix = store.keys().logs_prefix(ns, name);
    let status_key = store.keys().status_key(ns, name);
    let mut log_idx = 0u64;
    let mut status_idx = 0u64;
    loop {
        // Print new output of every phase.
        for (i, p) in phases.iter().enumerate() {
            let (_, text) = store.logs(ns, name, *p, Blocking::default()).await?;
            if let Some(t) = text {
                let new = appended(&seen[i], &t);
                if !new.is_empty() {
                    print!("{new}");
                }
                seen[i] = t;
            }
        }
        let r = store.require(ns, name).await?;
        if r.phase().is_terminal() {
            return Ok(());
        }
        // Wait for a change to the logs or the status, whichever comes first.
        let kv = store.kv();
        use jobforge_client::store::Kv;
        tokio::select! {
            res = kv.list(&logs_prefix, Blocking { index: log_idx.max(1), wait: Some(BLOCK_WAIT) }) => {
                log_idx = res?.0;
            }
            res = kv.get(&status_key, Blocking { index: status_idx.max(1), wait: Some(BLOCK_WAIT) }) => {
                status_idx = res?.0;
            }
        }
    }
}

/// The part of `new` not already printed from `old` (see [`follow_logs`]): `new` minus its
/// longest prefix that is a suffix of `old`; all of `new` when they do not overlap.
pub fn appended<'a>(old: &str, new: &'a str) -> &'a str {
    if let Some(rest) = new.strip_prefix(old) {
        return rest;
    }
    let Some(first) = new.chars().next() else {
        return new;
    };
    // Candidates start where `old` holds `new`'s first character; the earliest match is the
    // longest overlap. Each check is a memcmp, so even a pathological 64 KiB tail stays cheap.
    for (p, _) in old.match_indices(first) {
        if let Some(rest) = new.strip_prefix(&old[p..]) {
            return rest;
        }
    }
    new
}

/// `jobforge history`.
pub async fn history(ctx: &Ctx, a: HistoryArgs) -> CliResult<()> {
    let limit = a.limit.or(a.limit_pos).unwrap_or(20);
    let offset = a.offset.or(a.offset_pos).unwrap_or(0);
    let ns = (!a.all_namespaces).then_some(ctx.namespace.as_str());
    let page = ctx
        .store
        .history(ns, a.owner.as_deref(), limit, offset)
        .await?;
    match ctx.output {
        Output::Json | Output::Yaml => {
            let items: Vec<_> = page.items.iter().map(view).collect();
            print_doc(
                ctx.output,
                &serde_json::json!({"total": page.total, "offset": offset, "limit": limit, "items": items}),
            )
        }
        _ => {
            let rows: Vec<Vec<String>> = page
                .items
                .iter()
                .map(|r| {
                    let st = r.status.as_ref();
                    vec![
                        r.namespace.clone(),
                        r.name.clone(),
                        r.phase().to_string(),
                        st.and_then(|s| s.completion_time)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_default(),
                        elapsed(st),
                        r.owner().to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAMESPACE",
                    "NAME",
                    "PHASE",
                    "COMPLETED",
                    "DURATION",
                    "OWNER",
                ],
                &rows,
            );
            if page.total > offset + page.items.len() {
                eprintln!(
                    "({} of {} finished requests; next page: --offset {})",
                    page.items.len(),
                    page.total,
                    offset + page.items.len()
                );
            }
            Ok(())
        }
    }
}

/// `jobforge cancel NAME`: see [`jobforge_client::store::RequestStore::cancel`] for the rule
/// (a finished request is left alone and that is not an error: exit 0).
pub async fn cancel(ctx: &Ctx, name: &str) -> CliResult<()> {
    let outcome = ctx.store.cancel(&ctx.namespace, name).await?;
    report(ctx, name, &outcome.message(), outcome.generation())
}

/// `jobforge delete NAME`.
pub async fn delete(ctx: &Ctx, name: &str, purge: bool) -> CliResult<()> {
    ctx.store.delete(&ctx.namespace, name, purge).await?;
    report(
        ctx,
        name,
        if purge { "deleted (purged)" } else { "deleted" },
        0,
    )
}

fn report(ctx: &Ctx, name: &str, what: &str, generation: u64) -> CliResult<()> {
    match ctx.output {
        Output::Json | Output::Yaml => print_doc(
            ctx.output,
            &serde_json::json!({"namespace": ctx.namespace, "name": name, "result": what, "generation": generation}),
        ),
        _ => {
            println!("buildrequest {}/{name} {what}", ctx.namespace);
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::appended;

    #[test]
    fn appended_returns_only_new_text_even_when_the_tail_was_trimmed() {
        assert_eq!(appended("", "abc"), "abc");
        assert_eq!(appended("abc", "abcdef"), "def");
        assert_eq!(appended("0123456789", "456789XYZ"), "XYZ");
        assert_eq!(appended("old", "entirely new"), "entirely new");
    }
}
