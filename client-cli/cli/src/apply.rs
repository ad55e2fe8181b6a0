//! `jobforge apply -f FILE|DIR`: GitOps sync. Every file is parsed and validated first (all
//! problems of all files are reported, nothing is written when one is invalid); then each request
//! is created when missing, replaced (CAS on the generation read) when its parsed document differs
//! from the stored one, and left alone when equal — compared as documents, so formatting, key
//! order and YAML vs JSON do not count. `--prune -l SEL` deletes requests that match the selector
//! and are not in the files, only in the namespaces the files name (plus `-n` when given
//! explicitly), or everywhere the token reaches with `-A`; an empty selector is refused (it
//! would match every request).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jobforge_client::store::LabelSelector;
use jobforge_schema::BuildRequest;
use jobforge_schema::validate::validate;
use serde::Serialize;

use crate::args::{ApplyArgs, Output};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{print_doc, print_table};
use crate::submit::load_document;

/// What apply did (or would do) to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Written create-only.
    Created,
    /// Written as a new generation.
    Updated,
    /// Equal to the stored document; nothing written.
    Unchanged,
    /// Deleted by `--prune`.
    Pruned,
}

#[derive(Debug, Serialize)]
struct Outcome {
    namespace: String,
    name: String,
    action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

/// Every `*.yaml`, `*.yml`, `*.json` below `path` (recursively, sorted), or `path` itself.
pub fn collect_files(path: &Path) -> CliResult<Vec<PathBuf>> {
    let meta =
        std::fs::metadata(path).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| CliError::Input(format!("{}: {e}", dir.display())))?;
        for entry in rd {
            let p = entry
                .map_err(|e| CliError::Input(format!("{}: {e}", dir.display())))?
                .path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A line diff (longest common subsequence) of two texts: ` ` kept, `-` removed, `+` added.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push_str(&format!(" {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] > lcs[i + 1][j]) {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        }
    }
    out
}

fn yaml(r: &BuildRequest) -> String {
    serde_yaml_ng::to_string(r).unwrap_or_default()
}

/// `jobforge apply`.
pub async fn run(ctx: &Ctx, a: ApplyArgs) -> CliResult<()> {
    let selector = match &a.selector {
        Some(s) => LabelSelector::parse(s).map_err(|e| CliError::Input(format!("-l: {e}")))?,
        None => LabelSelector::default(),
    };
    if a.prune && selector.0.is_empty() {
        return Err(CliError::Input(
            "--prune needs a non-empty selector (-l key=value); an empty one would match every request"
                .into(),
        ));
    }
    // 1. Parse and validate everything before writing anything.
    let mut docs: Vec<(PathBuf, BuildRequest)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for root in &a.files {
        for f in collect_files(root)? {
            match load_document(&f, &ctx.namespace) {
                Ok(r) if r.metadata.name.is_empty() => errors.push(format!(
                    "{}: metadata.name: apply needs BuildRequest documents with a name (seed job_config files have none)",
                    f.display()
                )),
                Ok(r) => match validate(&r) {
                    Ok(()) => docs.push((f, r)),
                    Err(p) => errors.extend(p.iter().map(|p| format!("{}: {p}", f.display()))),
                },
                Err(CliError::Invalid { problems, .. }) => {
                    errors.extend(problems.iter().map(|p| format!("{}: {p}", f.display())))
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    let mut keys = BTreeSet::new();
    for (f, r) in &docs {
        if !keys.insert((r.metadata.namespace.clone(), r.metadata.name.clone())) {
            errors.push(format!(
                "{}: request {}/{} is defined twice",
                f.display(),
                r.metadata.namespace,
                r.metadata.name
            ));
        }
    }
    if !errors.is_empty() {
        return Err(CliError::Input(format!(
            "nothing applied; fix these problems:\n{}",
            errors.join("\n")
        )));
    }
    // 2. Compare and write.
    let mut outcomes = Vec::new();
    for (f, r) in &docs {
        let (ns, name) = (&r.metadata.namespace, &r.metadata.name);
        let current = ctx.store.get(ns, name).await?;
        let (action, diff) = match &current {
            None => {
                if !a.dry_run {
                    ctx.store.create(r).await?;
                }
                (Action::Created, a.dry_run.then(|| line_diff("", &yaml(r))))
            }
            Some(cur) if cur.request.as_ref().ok() == Some(r) => (Action::Unchanged, None),
            Some(cur) => {
                let old = cur.request.as_ref().map(yaml).unwrap_or_default();
                if !a.dry_run {
                    ctx.store.replace(r, Some(cur.generation)).await?;
                }
                (
                    Action::Updated,
                    a.dry_run.then(|| line_diff(&old, &yaml(r))),
                )
            }
        };
        outcomes.push(Outcome {
            namespace: ns.clone(),
            name: name.clone(),
            action,
            file: Some(f.display().to_string()),
            diff,
        });
    }
    // 3. Prune.
    if a.prune {
        for r in prune_candidates(ctx, &a, &docs).await? {
            if !selector.matches(&r.labels())
                || keys.contains(&(r.namespace.clone(), r.name.clone()))
            {
                continue;
            }
            if !a.dry_run {
                ctx.store.delete(&r.namespace, &r.name, false).await?;
            }
            outcomes.push(Outcome {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                action: Action::Pruned,
                file: None,
                diff: None,
            });
        }
    }
    report(ctx.output, a.dry_run, &outcomes)
}

/// The stored requests `--prune` may delete: those of every namespace with `-A`, else of the
/// namespaces the applied files name, plus `-n` when the user gave it.
async fn prune_candidates(
    ctx: &Ctx,
    a: &ApplyArgs,
    docs: &[(PathBuf, BuildRequest)],
) -> CliResult<Vec<jobforge_client::store::StoredRequest>> {
    if a.all_namespaces {
        return Ok(ctx.store.list(None).await?);
    }
    let namespaces = prune_namespaces(docs, ctx.namespace_chosen.then_some(ctx.namespace.as_str()));
    let mut out = Vec::new();
    for ns in &namespaces {
        out.extend(ctx.store.list(Some(ns)).await?);
    }
    Ok(out)
}

/// The namespaces of the applied documents, plus `chosen` (the `-n` the user gave).
fn prune_namespaces(docs: &[(PathBuf, BuildRequest)], chosen: Option<&str>) -> BTreeSet<String> {
    docs.iter()
        .map(|(_, r)| r.metadata.namespace.clone())
        .chain(chosen.map(str::to_string))
        .collect()
}

fn report(out: Output, dry_run: bool, outcomes: &[Outcome]) -> CliResult<()> {
    let count = |act: Action| outcomes.iter().filter(|o| o.action == act).count();
    let summary = serde_json::json!({
        "dryRun": dry_run,
        "created": count(Action::Created),
        "updated": count(Action::Updated),
        "unchanged": count(Action::Unchanged),
        "pruned": count(Action::Pruned),
        "items": outcomes,
    });
    if matches!(out, Output::Json | Output::Yaml) {
        return print_doc(out, &summary);
    }
    let suffix = if dry_run { " (dry run)" } else { "" };
    for o in outcomes {
        if let Some(d) = &o.diff {
            println!("--- {}/{}", o.namespace, o.name);
            print!("{d}");
        }
    }
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.namespace.clone(),
                o.name.clone(),
                format!(
                    "{}{suffix}",
                    serde_json::to_value(o.action)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                ),
            ]
        })
        .collect();
    print_table(&["NAMESPACE", "NAME", "RESULT"], &rows);
    println!(
        "{} created, {} updated, {} unchanged, {} pruned{suffix}",
        count(Action::Created),
        count(Action::Updated),
        count(Action::Unchanged),
        count(Action::Pruned)
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_removed_and_added_lines() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), " a\n-b\n+x\n c\n");
        assert_eq!(line_diff("", "a\n"), "+a\n");
    }

    #[test]
    fn prune_covers_the_files_namespaces_and_an_explicit_n() {
        let doc = |ns: &str| {
            let r = BuildRequest::new(ns, "x", jobforge_schema::BuildSpec::default());
            (PathBuf::from("f"), r)
        };
        let docs = vec![doc("team-a"), doc("team-a"), doc("platform")];
        assert_eq!(
            prune_namespaces(&docs, None)
                .into_iter()
                .collect::<Vec<_>>(),
            ["platform", "team-a"]
        );
        assert_eq!(
            prune_namespaces(&[], Some("team-c"))
                .into_iter()
                .collect::<Vec<_>>(),
            ["team-c"]
        );
        assert!(prune_namespaces(&[], None).is_empty());
    }
}
