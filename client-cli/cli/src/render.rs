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

/// The profile `jobforge-controller` uses when started without `--profile`/`JOBFORGE_PROFILE`:
/// read from the controller's own flag definition (`ControllerArgs`, its `--profile` default), so
/// `render` shows what the controller would run and cannot drift from it.
pub fn controller_default_profile() -> CliResult<String> {
    use clap::CommandFactory;
    let cmd = jobforge_controller::config::ControllerArgs::command();
    cmd.get_arguments()
        .find(|a| a.get_id() == "profile")
        .and_then(|a| a.get_default_values().first())
        .and_then(|v| v.to_str())
        .map(str::to_string)
        .ok_or_else(|| CliError::Input("the controller defines no default --profile".into()))
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
    let chosen = match &a.profile {
        Some(p) => profile(p)?,
        None => profile(&controller_default_profile()?)?,
    };
    let mut cfg = RenderConfig {
        profile: chosen,
        ..RenderConfig::default()
    };
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_is_the_controllers() {
        let p = controller_default_profile().unwrap();
        assert_eq!(p, "docker");
        assert_eq!(profile(&p).unwrap(), Profile::Docker);
    }
}
