//! `jobforge render NAME|FILE`: the Nomad jobs `jobforge_controller::jobspec::render_all` would
//! register for a request (build, test when it has tests, publish), as a JSON array in Nomad's
//! job API shape. Pure: no Nomad access; reads KV only for a stored request.

use std::path::Path;

use jobforge_controller::jobspec::{Profile, RenderConfig, render_all};
use jobforge_schema::validate::validate;

use crate::args::{Output, RenderArgs};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::print_doc;
use crate::submit::load_document;

fn profile(s: &str) -> CliResult<Profile> {
    match s {
        "raw_exec" | "raw-exec" => Ok(Profile::RawExec),
        "docker" => Ok(Profile::Docker),
        other => Err(CliError::Input(format!(
            "--profile `{other}` is not a profile; use raw_exec or docker"
        ))),
    }
}

/// `jobforge render`.
pub async fn run(ctx: &Ctx, a: RenderArgs) -> CliResult<()> {
    let path = Path::new(&a.target);
    let (req, generation) = if path.exists() || a.target == "-" {
        let mut req = load_document(path, &ctx.namespace)?;
        if req.metadata.name.is_empty() {
            req.metadata.name = "render".into();
        }
        validate(&req).map_err(|p| CliError::Invalid {
            source_name: a.target.clone(),
            problems: p,
        })?;
        (req, a.generation.unwrap_or(1))
    } else {
        let r = ctx.store.require(&ctx.namespace, &a.target).await?;
        let req = r.request.map_err(|e| {
            CliError::Input(format!(
                "request {}/{} holds an invalid document: {e}",
                r.namespace, r.name
            ))
        })?;
        (req, a.generation.unwrap_or(r.generation))
    };
    let mut cfg = RenderConfig::default();
    if let Some(p) = &a.profile {
        cfg.profile = profile(p)?;
    }
    if !a.datacenters.is_empty() {
        cfg.datacenters = a.datacenters.clone();
    }
    let jobs = render_all(&req, generation, 1, &cfg)
        .map_err(|e| CliError::Input(format!("cannot render {}: {e}", a.target)))?;
    let out = if ctx.output == Output::Yaml {
        Output::Yaml
    } else {
        Output::Json
    };
    print_doc(out, &jobs)
}
