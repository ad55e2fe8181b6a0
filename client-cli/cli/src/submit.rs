//! `jobforge submit`: read a document (BuildRequest, seed job_config, or seed global+build pair),
//! name it, add tags and the version tag, validate (the schema's rules, then the operator's
//! tenancy rules read from `<prefix>/config`, [`crate::tenancy`]), write create-only (or
//! `--replace`), and optionally follow it to the end.

use std::io::Read;
use std::path::Path;

use jobforge_schema::seed::merge_named;
use jobforge_schema::validate::validate;
use jobforge_schema::{
    BuildRequest, BuildSpec, Document, Format, Problems, parse_document, parse_value,
};

use crate::args::{Output, SubmitArgs};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::print_doc;
use crate::tenancy::Rules;
use crate::version;

/// Reads a file, or stdin for `-`.
pub fn read_input(path: &Path) -> CliResult<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::Input(format!("stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}

fn invalid(source: &Path, problems: Problems) -> CliError {
    CliError::Invalid {
        source_name: source.display().to_string(),
        problems,
    }
}

/// Parses a document file into a request (seed documents get `namespace` and an empty name; a
/// BuildRequest naming no namespace, or `default`, gets `namespace`).
pub fn load_document(path: &Path, namespace: &str) -> CliResult<BuildRequest> {
    let mut loaded = load(path, namespace)?;
    if loaded.request.metadata.namespace == jobforge_schema::request::DEFAULT_NAMESPACE {
        loaded.request.metadata.namespace = namespace.to_string();
    }
    Ok(loaded.request)
}

/// A document read for `submit`.
#[derive(Debug)]
pub struct Loaded {
    /// The request (a seed document's has `namespace` and an empty name).
    pub request: BuildRequest,
    /// A seed document's `deploy_dir` (where its version file lives).
    pub deploy_dir: Option<String>,
    /// Whether the document is the seed's (flat job_config, or `--config`/`--global`) rather
    /// than a BuildRequest.
    pub seed: bool,
    /// The namespace a BuildRequest names itself (`metadata.namespace`, when present).
    pub namespace: Option<String>,
}

/// Reads and parses one document file (`-` is stdin).
pub fn load(path: &Path, namespace: &str) -> CliResult<Loaded> {
    let bytes = read_input(path)?;
    let format = if path == Path::new("-") {
        Format::detect(&bytes)
    } else {
        Format::for_file(path, &bytes)
    };
    match parse_document(&bytes, format).map_err(|p| invalid(path, p))? {
        Document::Request(r) => {
            // serde fills an absent namespace with `default`: look at the text for what it says.
            let named = parse_value(&bytes, format).ok().and_then(|v| {
                v.pointer("/metadata/namespace")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
            });
            Ok(Loaded {
                request: r,
                deploy_dir: None,
                seed: false,
                namespace: named,
            })
        }
        Document::Seed(job) => Ok(Loaded {
            request: BuildRequest::new(namespace, "", job.spec),
            deploy_dir: job.deploy_dir,
            seed: true,
            namespace: None,
        }),
    }
}

/// The namespace `submit` writes to: the file's own `metadata.namespace` when it names one, else
/// `ctx_ns`. When the user chose a namespace (`-n`, `JOBFORGE_NAMESPACE`) that differs from the
/// file's, that is refused unless `override_file` (`--namespace-override`), so a request is never
/// moved to another team's namespace silently.
pub fn target_namespace(
    file_ns: Option<&str>,
    ctx_ns: &str,
    chosen: bool,
    override_file: bool,
) -> CliResult<String> {
    match file_ns {
        Some(f) if f != ctx_ns && chosen && !override_file => Err(CliError::Input(format!(
            "the document names namespace `{f}` but --namespace/JOBFORGE_NAMESPACE says `{ctx_ns}`: \
             fix one of them, or pass --namespace-override to submit it to `{ctx_ns}`"
        ))),
        Some(f) if !(chosen && override_file) => Ok(f.to_string()),
        _ => Ok(ctx_ns.to_string()),
    }
}

/// A generated name: `<image_name>-<6 random hex>`, with the image name reduced to a DNS label
/// (last path component, lowercase, other characters → `-`, at most 56 characters).
pub fn generated_name(spec: &BuildSpec) -> String {
    let base = spec.image_name.rsplit('/').next().unwrap_or("build");
    let mut label: String = base
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '-' }
        })
        .collect();
    label.truncate(56);
    let label = label.trim_matches('-');
    let label = if label.is_empty() { "build" } else { label };
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{label}-{}", &rand[..6])
}

/// Adds tags not already present, keeping order.
pub fn add_tags(spec: &mut BuildSpec, tags: impl IntoIterator<Item = String>) {
    for t in tags {
        let t = t.trim().to_string();
        if !t.is_empty() && !spec.image_tags.contains(&t) {
            spec.image_tags.push(t);
        }
    }
}

/// Builds the request `submit` would write (no version bump, no KV access), with the seed
/// document's `deploy_dir` when it has one. `ns_chosen`: see [`target_namespace`].
pub fn build_request(ctx_ns: &str, ns_chosen: bool, a: &SubmitArgs) -> CliResult<Loaded> {
    let mut loaded = match (&a.file, &a.global_file, &a.config) {
        (Some(f), _, _) => load(f, ctx_ns)?,
        (None, Some(g), Some(c)) => {
            let gb = read_input(g)?;
            let cb = read_input(c)?;
            let gname = g.display().to_string();
            let cname = c.display().to_string();
            let job = merge_named((&gname, &gb), (&cname, &cb)).map_err(|p| CliError::Invalid {
                source_name: format!("{gname} + {cname}"),
                problems: p,
            })?;
            Loaded {
                request: BuildRequest::new(ctx_ns, "", job.spec),
                deploy_dir: job.deploy_dir,
                seed: true,
                namespace: None,
            }
        }
        (None, None, Some(c)) => load(c, ctx_ns)?,
        _ => {
            return Err(CliError::Input(
                "nothing to submit: give a FILE (or - for stdin), or --config (with optional --global)"
                    .into(),
            ));
        }
    };
    let req = &mut loaded.request;
    req.metadata.namespace = target_namespace(
        loaded.namespace.as_deref(),
        ctx_ns,
        ns_chosen,
        a.namespace_override,
    )?;
    if let Some(n) = &a.name {
        req.metadata.name = n.clone();
    }
    if req.metadata.name.is_empty() {
        req.metadata.name = generated_name(&req.spec);
    }
    add_tags(&mut req.spec, a.image_tags.iter().cloned());
    Ok(loaded)
}

/// `jobforge submit`.
pub async fn run(ctx: &Ctx, a: SubmitArgs) -> CliResult<()> {
    let loaded = build_request(&ctx.namespace, ctx.namespace_chosen, &a)?;
    let mut req = loaded.request;
    // Validate before touching the version file, so a bad document does not bump it.
    validate(&req).map_err(|p| invalid(Path::new(&source_label(&a)), p))?;
    // The operator's tenancy rules, as the controller will apply them (crate::tenancy).
    let rules = Rules::read(ctx.store.kv(), ctx.store.keys()).await;
    if let Err(p) = rules.check(&req) {
        eprintln!("{}", rules.describe());
        return Err(invalid(Path::new(&source_label(&a)), p));
    }
    // The seed CLI kept version.yaml in `deploy_dir` (default `deploy`) and bumped it on every
    // submit-job; a BuildRequest is a complete document and is only bumped when asked.
    let default_file =
        Path::new(loaded.deploy_dir.as_deref().unwrap_or("deploy")).join("version.yaml");
    let version_file = match (&a.version_file, a.no_version) {
        (_, true) => None,
        (Some(f), false) => Some(f.clone()),
        (None, false) if a.bump && !default_file.exists() => {
            return Err(CliError::Input(format!(
                "--bump: there is no {} (give the file with --version-file)",
                default_file.display()
            )));
        }
        (None, false) if loaded.seed || a.bump => default_file.exists().then_some(default_file),
        (None, false) => None,
    };
    let mut version_tag = None;
    if let Some(f) = &version_file {
        let (_, tag) = version::bump_patch(f)?;
        add_tags(&mut req.spec, [tag.clone()]);
        version_tag = Some(tag);
        validate(&req).map_err(|p| invalid(Path::new(&source_label(&a)), p))?;
    }
    let (ns, name) = (req.metadata.namespace.clone(), req.metadata.name.clone());
    let (generation, verb) = if a.replace {
        (
            ctx.store.replace(&req, None).await?,
            "submitted (new generation)",
        )
    } else {
        (ctx.store.create(&req).await?, "created")
    };
    match ctx.output {
        Output::Json | Output::Yaml => print_doc(
            ctx.output,
            &serde_json::json!({"namespace": ns, "name": name, "generation": generation,
                "result": verb, "imageTags": req.spec.image_tags, "versionTag": version_tag}),
        )?,
        _ => {
            println!("buildrequest {ns}/{name} {verb} (generation {generation})");
            if let Some(t) = &version_tag {
                println!("version tag: {t}");
            }
        }
    }
    if a.wait {
        let sub = Ctx {
            namespace: ns,
            ..ctx.clone()
        };
        crate::watch::follow_one(&sub, &name, Some(generation)).await?;
    }
    Ok(())
}

fn source_label(a: &SubmitArgs) -> String {
    match (&a.file, &a.global_file, &a.config) {
        (Some(f), _, _) => f.display().to_string(),
        (None, Some(g), Some(c)) => format!("{} + {}", g.display(), c.display()),
        (None, None, Some(c)) => c.display().to_string(),
        _ => "request".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_dns_labels_from_the_image_name() {
        let spec = BuildSpec {
            image_name: "Tools/My_App".into(),
            ..Default::default()
        };
        let n = generated_name(&spec);
        assert!(n.starts_with("my-app-"), "{n}");
        assert_eq!(n.len(), "my-app-".len() + 6);
        assert!(jobforge_schema::grammar::dns_label(&n).is_ok(), "{n}");
    }

    #[test]
    fn add_tags_skips_duplicates_and_blanks() {
        let mut spec = BuildSpec {
            image_tags: vec!["latest".into()],
            ..Default::default()
        };
        add_tags(&mut spec, ["v1".into(), "latest".into(), " ".into()]);
        assert_eq!(spec.image_tags, ["latest", "v1"]);
    }
}
