//! Rendering of requests as tables, JSON or YAML. JSON/YAML field names are stable:
//! `{namespace, name, generation, phase, step, owner, image, labels, request, status}`.

use std::collections::BTreeMap;

use chrono::Utc;
use jobforge_client::store::StoredRequest;
use jobforge_schema::{BuildStatus, Phase};
use serde::Serialize;

use crate::args::Output;
use crate::error::{CliError, CliResult};

/// The machine-readable view of one request.
#[derive(Debug, Serialize)]
pub struct RequestView<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Spec ModifyIndex.
    pub generation: u64,
    /// Effective phase (`Pending` until the controller observed this generation).
    pub phase: Phase,
    /// Pipeline step, for example `build 1/3`.
    pub step: String,
    /// spec.owner.
    pub owner: &'a str,
    /// `registry/image:first-tag`.
    pub image: String,
    /// metadata.labels.
    pub labels: BTreeMap<String, String>,
    /// The failure message, when Failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The stored document, or `{invalid: "..."}`.
    pub request: serde_json::Value,
    /// The controller's status document.
    pub status: Option<&'a BuildStatus>,
}

/// Builds the view of `r`.
pub fn view(r: &StoredRequest) -> RequestView<'_> {
    let image = match &r.request {
        Ok(q) => format!(
            "{}/{}:{}",
            q.spec.registry_url,
            q.spec.image_name,
            q.spec.effective_tags().first().cloned().unwrap_or_default()
        ),
        Err(_) => String::new(),
    };
    let request = match (&r.request, r.invalid_message()) {
        (Ok(q), _) => serde_json::to_value(q).unwrap_or(serde_json::Value::Null),
        (Err(_), message) => serde_json::json!({ "invalid": message }),
    };
    RequestView {
        namespace: &r.namespace,
        name: &r.name,
        generation: r.generation,
        phase: r.phase(),
        step: step(r.phase(), r.status.as_ref()),
        owner: r.owner(),
        image,
        labels: r.labels(),
        message: r
            .status
            .as_ref()
            .and_then(|s| s.failure.as_ref())
            .map(|f| f.message.clone()),
        request,
        status: r.status.as_ref(),
    }
}

/// The pipeline step shown by `list` and `watch`: `build 1/3`, `test 2/3`, `publish 3/3`, with
/// the attempt when it is past the first (`build 1/3 (attempt 2)`); `-` otherwise.
pub fn step(phase: Phase, status: Option<&BuildStatus>) -> String {
    let s = match phase {
        Phase::Building => "build 1/3",
        Phase::Testing => "test 2/3",
        Phase::Publishing => "publish 3/3",
        _ => return "-".to_string(),
    };
    match status.map(|s| s.attempt) {
        Some(a) if a > 1 => format!("{s} (attempt {a})"),
        _ => s.to_string(),
    }
}

/// Elapsed time since `startTime` (until `completionTime` when finished), like `1m05s`; `-` before start.
pub fn elapsed(status: Option<&BuildStatus>) -> String {
    let Some(st) = status else { return "-".into() };
    let Some(start) = st.start_time else {
        return "-".into();
    };
    let end = st.completion_time.unwrap_or_else(Utc::now);
    let secs = (end - start).num_seconds().max(0);
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// Prints a serializable value as JSON or YAML.
pub fn print_doc<T: Serialize>(out: Output, v: &T) -> CliResult<()> {
    let text = match out {
        Output::Yaml => serde_yaml_ng::to_string(v).map_err(|e| CliError::Input(e.to_string()))?,
        _ => {
            let mut s =
                serde_json::to_string_pretty(v).map_err(|e| CliError::Input(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    print!("{text}");
    Ok(())
}

/// Prints rows as an aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Prints requests in `out` format (a JSON/YAML list, or a table; `wide` adds columns).
pub fn print_requests(out: Output, items: &[StoredRequest]) -> CliResult<()> {
    match out {
        Output::Json | Output::Yaml => {
            let views: Vec<_> = items.iter().map(view).collect();
            print_doc(out, &views)
        }
        Output::Table | Output::Wide => {
            let wide = out == Output::Wide;
            let mut header = vec!["NAMESPACE", "NAME", "PHASE", "STEP", "ELAPSED"];
            if wide {
                header.extend(["OWNER", "GENERATION", "IMAGE", "LABELS"]);
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|r| {
                    let v = view(r);
                    // The phase the controller wrote, for valid and invalid documents alike.
                    let mut row = vec![
                        r.namespace.clone(),
                        r.name.clone(),
                        v.phase.to_string(),
                        v.step.clone(),
                        elapsed(r.status.as_ref()),
                    ];
                    if wide {
                        let labels: Vec<String> =
                            v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        row.extend([
                            v.owner.to_string(),
                            r.generation.to_string(),
                            v.image.clone(),
                            labels.join(","),
                        ]);
                    }
                    row
                })
                .collect();
            print_table(&header, &rows);
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn step_names_the_running_pipeline_phase_and_retries() {
        assert_eq!(step(Phase::Building, None), "build 1/3");
        let st = BuildStatus {
            attempt: 2,
            ..Default::default()
        };
        assert_eq!(step(Phase::Testing, Some(&st)), "test 2/3 (attempt 2)");
        assert_eq!(step(Phase::Succeeded, Some(&st)), "-");
    }
}
