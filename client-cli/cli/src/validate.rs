//! `jobforge validate FILE...`: parses each file (a BuildRequest, or the seed's flat job_config) and
//! prints every problem as `FILE: path: message`, one per line. Exit 0 when every file is valid,
//! 1 otherwise. `-` reads stdin. The format comes from the extension (`.json`, `.yaml`, `.yml`),
//! else from the content.
//!
//! Besides the schema's rules, each request is checked against the operator's tenancy rules
//! ([`crate::tenancy`]): read from `<prefix>/config` when Consul answers, the defaults otherwise
//! (or with `--offline`); one line on stderr says which. A seed document is checked as a request of
//! `--namespace`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jobforge_client::store::consul_kv;
use jobforge_schema::{
    BuildRequest, BuildSpec, Document, Format, KeyLayout, MAX_DOCUMENT_BYTES, Problems,
    merge_named, parse_document,
};

use crate::args::Global;
use crate::tenancy::Rules;

/// Arguments of `jobforge validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to check; `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The seed's global.yaml: each FILE is then a per-build YAML merged over it (per-build values
    /// win whenever present, lists replace, maps merge key by key).
    #[arg(long, value_name = "GLOBAL_YAML")]
    pub global: Option<PathBuf>,
    /// Do not read the operator's tenancy rules from Consul (`<prefix>/config`); check against
    /// the default rules.
    #[arg(long)]
    pub offline: bool,
}

/// The tenancy rules to check against: from Consul unless `offline` (see [`Rules::read`]).
fn tenancy_rules(g: &Global, offline: bool) -> anyhow::Result<Rules> {
    if offline {
        return Ok(Rules::defaults("--offline"));
    }
    let kv = match consul_kv::client(&g.consul_addr, g.token.as_deref(), g.consul_ssl) {
        Ok(kv) => kv,
        Err(e) => return Ok(Rules::defaults(e)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(Rules::read(&kv, &KeyLayout::new(&g.prefix))))
}

/// Runs the command; the exit code is 1 when any file has a problem.
pub fn run(args: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let rules = tenancy_rules(g, args.offline)?;
    eprintln!("{}", rules.describe());
    let ns = match g.namespace.as_slice() {
        [] => jobforge_schema::request::DEFAULT_NAMESPACE,
        [one] => one.as_str(),
        many => anyhow::bail!(
            "--namespace given {} times; only `jobforge mcp` takes several",
            many.len()
        ),
    };
    let global = match &args.global {
        Some(path) => match read_input(path) {
            Ok(bytes) => Some((label(path), bytes)),
            Err(e) => {
                println!("{}: cannot read: {e}", label(path));
                return Ok(ExitCode::FAILURE);
            }
        },
        None => None,
    };
    let mut all_valid = true;
    for path in &args.files {
        let name = label(path);
        let outcome = match read_input(path) {
            Err(e) => Err(vec![format!("{name}: cannot read: {e}")]),
            Ok(bytes) => match &global {
                Some((gname, gbytes)) => check_merged(gname, gbytes, &name, &bytes, ns, &rules),
                None => check(&name, path, &bytes, ns, &rules),
            },
        };
        match outcome {
            Ok(summary) => println!("{summary}"),
            Err(lines) => {
                all_valid = false;
                for line in lines {
                    println!("{line}");
                }
            }
        }
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn label(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

/// Largest input read at all (64 MiB); anything larger is reported without reading it whole.
const READ_CAP: u64 = 64 * 1024 * 1024;

/// Reads a file or stdin. The parser reports documents over the 512 KiB limit with their size;
/// input past [`READ_CAP`] is an error here.
fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(READ_CAP + 1)
            .read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(path)?
            .take(READ_CAP + 1)
            .read_to_end(&mut bytes)?;
    }
    if bytes.len() as u64 > READ_CAP {
        return Err(std::io::Error::other(format!(
            "document is larger than {READ_CAP} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes \
             (512 KiB, Consul's kv_max_value_size)"
        )));
    }
    Ok(bytes)
}

/// One file: `Ok("NAME: valid (...)")`, or one `NAME: path: message` line per problem.
fn check(
    name: &str,
    path: &Path,
    bytes: &[u8],
    ns: &str,
    rules: &Rules,
) -> Result<String, Vec<String>> {
    let format = if path == Path::new("-") {
        Format::detect(bytes)
    } else {
        Format::for_file(path, bytes)
    };
    match parse_document(bytes, format) {
        Ok(Document::Request(r)) => {
            tenancy(name, &r, rules)?;
            Ok(format!(
                "{name}: valid (BuildRequest {}/{})",
                r.metadata.namespace, r.metadata.name
            ))
        }
        Ok(Document::Seed(job)) => {
            tenancy(name, &seed_request(ns, job.spec), rules)?;
            Ok(format!("{name}: valid (seed job_config)"))
        }
        Err(p) => {
            // Every problem at once: a request whose values break the grammar is still read as
            // a typed request when its shape allows, and its tenancy problems join the others.
            let mut lines = problem_lines(&p.prefixed(name));
            if let Ok(value) = jobforge_schema::parse_value(bytes, format)
                && let Ok(req) = serde_json::from_value::<BuildRequest>(value)
                && let Err(more) = tenancy(name, &req, rules)
            {
                lines.extend(more);
            }
            Err(lines)
        }
    }
}

/// A per-build seed file merged over the global one; problem paths name the file of the value.
fn check_merged(
    gname: &str,
    gbytes: &[u8],
    name: &str,
    bytes: &[u8],
    ns: &str,
    rules: &Rules,
) -> Result<String, Vec<String>> {
    match merge_named((gname, gbytes), (name, bytes)) {
        Ok(job) => {
            tenancy(name, &seed_request(ns, job.spec), rules)?;
            Ok(format!(
                "{name}: valid (seed job_config merged over {gname})"
            ))
        }
        Err(p) => Err(problem_lines(&p)),
    }
}

/// A seed document as the request `jobforge submit` makes of it in namespace `ns`.
fn seed_request(ns: &str, spec: BuildSpec) -> BuildRequest {
    BuildRequest::new(ns, "seed", spec)
}

/// The tenancy problems of `req`, as `NAME: path: message` lines.
fn tenancy(name: &str, req: &BuildRequest, rules: &Rules) -> Result<(), Vec<String>> {
    rules
        .check(req)
        .map_err(|p| problem_lines(&p.prefixed(name)))
}

fn problem_lines(p: &Problems) -> Vec<String> {
    // One problem per line, even if a parser message had a newline in it.
    p.iter()
        .map(|pr| pr.to_string().replace(['\n', '\r'], " "))
        .collect()
}
