//! Command-line syntax of `jobforge` (clap derive). Each subcommand's `after_help` shows examples.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jobforge_schema::PipelinePhase;

/// Submit, watch and manage container builds stored in Consul KV.
///
/// jobforge never talks to Nomad: every command reads or writes the KV records
/// `<prefix>/requests|status|logs/<namespace>/<name>` that the jobforge controller reconciles.
#[derive(Debug, Parser)]
#[command(name = "jobforge", version, propagate_version = true)]
#[command(after_help = "Examples:
  jobforge submit build.yaml --wait
  jobforge list --all-namespaces -o wide
  jobforge logs myapp-1x2y3z --phase build --follow
  jobforge apply -f examples/gitops/ --dry-run")]
pub struct Cli {
    /// Global connection and output options.
    #[command(flatten)]
    pub global: Global,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Consul HTTP address (`host:port` or URL).
    #[arg(
        long,
        global = true,
        env = "CONSUL_HTTP_ADDR",
        default_value = "127.0.0.1:8500"
    )]
    pub consul_addr: String,
    /// Consul ACL token.
    #[arg(long, global = true, env = "CONSUL_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long one Consul request may take before the command fails with a timeout naming the
    /// address (blocking reads of `watch`, `--wait` and `logs --follow` wait longer: their
    /// blocking wait plus a margin).
    #[arg(
        long,
        global = true,
        env = "JOBFORGE_CONSUL_TIMEOUT",
        default_value = "10s",
        value_parser = parse_timeout
    )]
    pub timeout: std::time::Duration,
    /// Use https when the address has no scheme.
    #[arg(long, global = true, env = "CONSUL_HTTP_SSL", default_value_t = false)]
    pub consul_ssl: bool,
    /// KV prefix under which jobforge keeps its records.
    #[arg(
        long,
        global = true,
        env = "JOBFORGE_PREFIX",
        default_value = "jobforge"
    )]
    pub prefix: String,
    /// Namespace of the requests to act on (a DNS label). `jobforge mcp` takes it several
    /// times: the namespaces its tools may use.
    #[arg(
        short = 'n',
        long = "namespace",
        global = true,
        env = "JOBFORGE_NAMESPACE",
        default_value = "default",
        action = clap::ArgAction::Append
    )]
    pub namespace: Vec<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Whether the namespace came from `-n`/`--namespace` or `JOBFORGE_NAMESPACE` (not the
    /// default); set after parsing. `submit` refuses a file naming another namespace then.
    #[arg(skip)]
    pub namespace_chosen: bool,
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".to_string()),
        Err(e) => Err(format!("{s:?} is not a duration like 10s or 1m: {e}")),
    }
}

/// The command names of the seed's `submit-job` (ours is `submit`, with `submit-job` an alias).
pub const SEED_SUBMIT_COMMANDS: [&str; 2] = ["submit-job", "submit"];

/// The long flags of `submit` the seed README writes with one dash (`-global`, `-config`; the
/// seed CLI used Go's `flag` package, which accepts `-name` and `--name` alike), plus
/// `-image-tags`, the seed's other flag of that command.
pub const SEED_SINGLE_DASH_FLAGS: [&str; 3] = ["global", "config", "image-tags"];

/// Global options that take a value as the next argument (skipped when looking for the command).
const GLOBAL_VALUE_OPTIONS: [&str; 8] = [
    "--consul-addr",
    "--timeout",
    "--token",
    "--prefix",
    "-n",
    "--namespace",
    "-o",
    "--output",
];

/// Rewrites the seed's single-dash long flags to clap's double-dash form, so the seed README's
/// `jobforge submit-job -global deploy/global.yaml -config build.yaml` works as written.
///
/// Only after the `submit-job`/`submit` command word, only the exact names in
/// [`SEED_SINGLE_DASH_FLAGS`] (`-config` and `-config=FILE`), and never after `--`. None of them
/// can mean anything else there: `submit` has no short flags `-g`, `-c` or `-i`, so clap would
/// otherwise reject them. Every other argument, including the real short flags (`-n`, `-o`), is
/// passed through untouched.
pub fn normalize_seed_flags(mut argv: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1;
    let command_at = loop {
        let Some(arg) = argv.get(i).and_then(|a| a.to_str()) else {
            return argv;
        };
        if arg == "--" {
            return argv;
        }
        if !arg.starts_with('-') {
            break i;
        }
        i += if GLOBAL_VALUE_OPTIONS.contains(&arg) {
            2
        } else {
            1
        };
    };
    if !argv[command_at]
        .to_str()
        .is_some_and(|c| SEED_SUBMIT_COMMANDS.contains(&c))
    {
        return argv;
    }
    for arg in argv.iter_mut().skip(command_at + 1) {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        let Some(body) = text.strip_prefix('-').filter(|b| !b.starts_with('-')) else {
            continue;
        };
        let name = body.split_once('=').map_or(body, |(n, _)| n);
        if SEED_SINGLE_DASH_FLAGS.contains(&name) {
            *arg = OsString::from(format!("--{body}"));
        }
    }
    argv
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable table.
    Table,
    /// Table with more columns (owner, image, generation, labels).
    Wide,
    /// JSON (one document; stable field names).
    Json,
    /// YAML.
    Yaml,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a build request (BuildRequest YAML/JSON, seed job_config JSON, or seed global+build pair).
    #[command(visible_alias = "submit-job")]
    #[command(after_help = "Examples:
  jobforge submit request.yaml                 # BuildRequest document
  jobforge submit job_config.json --name app-1 # seed flat job_config
  jobforge submit --global deploy/global.yaml --config build.yaml --image-tags v1.0.0,latest
  jobforge submit-job -global deploy/global.yaml -config build.yaml   # the seed's spelling
  cat request.json | jobforge submit - --wait  # follow until the build ends

The seed's single-dash long flags (-global, -config, -image-tags, also -config=FILE) are
accepted after submit/submit-job; every other flag keeps its usual meaning.
Without --name the request is named after the document, or <image_name>-<random>.
A BuildRequest naming a namespace other than -n/JOBFORGE_NAMESPACE is refused unless
--namespace-override (then -n wins); one naming none goes to -n.
For a seed document (job_config, --config/--global) whose deploy/version.yaml (or
<deploy_dir>/version.yaml) exists, as the seed did, and for any document with --bump or
--version-file, the patch version is incremented
and a branch-aware tag such as feature-auth-v0.1.5 is added to image_tags.
With --wait the exit code is 0 on Succeeded and 1 on Failed or Cancelled.")]
    Submit(SubmitArgs),
    /// Show one request: its spec, generation and status.
    #[command(visible_alias = "get-status")]
    #[command(
        after_help = "Examples:\n  jobforge get myapp-1x2y3z\n  jobforge get myapp-1x2y3z -o json | jq .status.phase"
    )]
    Get(NameArg),
    /// List requests with their phase.
    #[command(visible_alias = "ls")]
    #[command(after_help = "Examples:
  jobforge list
  jobforge list --phase Failed --owner team-a
  jobforge list -l app=myapp --all-namespaces -o wide")]
    List(ListArgs),
    /// Follow one request (or every request of the namespace) live until it finishes.
    #[command(after_help = "Examples:
  jobforge watch myapp-1x2y3z   # exits 0 on Succeeded, 1 on Failed/Cancelled
  jobforge watch                # every request of the namespace, until interrupted

On a terminal a spinner shows phase, step and elapsed time; in a pipe one line is printed per
transition. Driven by Consul blocking queries, never by polling.")]
    Watch(WatchArgs),
    /// Print the log tail the controller captured for a request's phases.
    #[command(visible_alias = "get-logs")]
    #[command(after_help = "Examples:
  jobforge logs myapp-1x2y3z
  jobforge logs myapp-1x2y3z --phase test
  jobforge logs myapp-1x2y3z --follow    # until the request finishes")]
    Logs(LogsArgs),
    /// Cancel a request (sets spec.cancel; the controller stops its Nomad jobs).
    #[command(visible_alias = "kill-job")]
    #[command(after_help = "Example:
  jobforge cancel myapp-1x2y3z

A request whose current generation already finished (Succeeded, Failed or Cancelled) is left
unchanged: the command prints \"already Succeeded; nothing to cancel\" and exits 0.")]
    Cancel(NameArg),
    /// Delete a request (its spec key; the controller then removes status, logs and jobs).
    #[command(visible_alias = "cleanup")]
    #[command(after_help = "Examples:
  jobforge delete myapp-1x2y3z
  jobforge delete myapp-1x2y3z --purge   # also remove status and logs now (no controller needed)")]
    Delete(DeleteArgs),
    /// Finished requests, newest first.
    #[command(visible_alias = "get-history")]
    #[command(
        after_help = "Examples:\n  jobforge history --limit 10\n  jobforge history --owner team-a --offset 10 -o json"
    )]
    History(HistoryArgs),
    /// GitOps: create or update the requests described by files, only where they changed.
    #[command(after_help = "Examples:
  jobforge apply -f examples/gitops/
  jobforge apply -f examples/gitops/ --dry-run
  jobforge apply -f examples/gitops/ --prune -l managed-by=gitops

A second run over the same files writes nothing (every request reported unchanged).
--prune deletes requests that match the selector but are not in the files, only in the
namespaces the files name (plus -n when given), unless -A/--all-namespaces. The selector must
not be empty: `-l ''` would match every request and is refused.")]
    Apply(ApplyArgs),
    /// Print the Nomad jobs the controller would create for a request (for review; no Nomad access).
    #[command(after_help = "Examples:
  jobforge render request.yaml
  jobforge render myapp-1x2y3z --profile docker

Prints a JSON array of Nomad jobs (build, test when the request has tests, publish), rendered with
the controller's default configuration (profile docker, as jobforge-controller without --profile),
overridable with the options listed above.")]
    Render(RenderArgs),
    /// Verify an image's cosign signature and SLSA provenance (made by the controller with Vault
    /// transit) and print the provenance summary; exit 0 only when both verify.
    #[command(after_help = "Examples:
  jobforge verify registry.example:5000/team-a/app:v1.4.2
  jobforge verify registry.example:5000/team-a/app@sha256:<hex> --key-file jobforge.pem

The public key is read from Vault (VAULT_ADDR, VAULT_TOKEN; `read` on transit/keys/<key>) unless
--key-file names a PEM file (`vault read transit/keys/<key>` gives it).")]
    Verify(VerifyArgs),
    /// Show the version in deploy/version.yaml and the branch-aware tag.
    #[command(
        after_help = "Example:\n  jobforge version-info\n  Version: 0.1.5\n  Tag: v0.1.5\n  Branch: feature-auth\n  Branch Tag: feature-auth-v0.1.5"
    )]
    VersionInfo(VersionFileArg),
    /// Set the major version (minor and patch reset to 0).
    #[command(after_help = "Example:\n  jobforge version-major 1   # 1.0.0")]
    VersionMajor(VersionSetArgs),
    /// Set the minor version (patch reset to 0).
    #[command(after_help = "Example:\n  jobforge version-minor 2   # 0.2.0")]
    VersionMinor(VersionSetArgs),
    /// Serve the same operations to AI agents over the Model Context Protocol.
    #[command(after_help = "Examples:
  jobforge mcp --stdio
  jobforge mcp --http 127.0.0.1:8080
  JOBFORGE_MCP_TOKEN=s3cret jobforge mcp --http 0.0.0.0:8080

Streamable HTTP is served at /mcp (health at /healthz). Binding a non-loopback address requires a
bearer token (--token-file, JOBFORGE_MCP_TOKEN or --tokens-file).

Scope: tools may only use the namespaces given with -n/--namespace (repeatable; every namespace
when none is given):
  jobforge mcp --stdio -n team-a -n team-b
Over HTTP each bearer token can have its own namespaces:
  jobforge mcp --http 0.0.0.0:8080 --tokens-file /etc/jobforge/mcp-tokens.yaml
  # tokens: [{token: \"<32 random chars>\", namespaces: [team-a]}]
A call naming another namespace is a tool error naming the allowed ones; listRequests and
getHistory cover only the namespaces in scope, at most 500 items a page (limit, cursor,
next_cursor).")]
    Mcp(McpArgs),
    /// Check BuildRequest files (YAML or JSON) or seed job_config files; exit 1 listing every problem.
    #[command(after_help = "Examples:
  jobforge validate request.yaml
  jobforge validate --global deploy/global.yaml build.yaml")]
    Validate(crate::validate::Args),
    /// Print the JSON Schema of the BuildRequest document.
    #[command(after_help = "Example:\n  jobforge schema > buildrequest.schema.json")]
    Schema(crate::schema::Args),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  jobforge completions bash > /etc/bash_completion.d/jobforge"
    )]
    Completions {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
}

/// A request name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Request name (in --namespace).
    pub name: String,
}

/// `submit` options.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Request file (YAML or JSON), or `-` for stdin.
    #[arg(conflicts_with_all = ["global_file", "config"])]
    pub file: Option<PathBuf>,
    /// Seed global.yaml (with --config).
    #[arg(long = "global", value_name = "GLOBAL", requires = "config")]
    pub global_file: Option<PathBuf>,
    /// Seed per-build YAML (alone, or over --global).
    #[arg(long, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Extra image tags, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub image_tags: Vec<String>,
    /// Request name (default: the document's, or <image_name>-<random>).
    #[arg(long)]
    pub name: Option<String>,
    /// Write a new generation when the request exists (default: create only).
    #[arg(long)]
    pub replace: bool,
    /// Follow the request until it ends; exit 1 unless it Succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Version file to bump (default for seed documents: `<deploy_dir or deploy>/version.yaml`
    /// when it exists).
    #[arg(long)]
    pub version_file: Option<PathBuf>,
    /// Also bump `deploy/version.yaml` for a BuildRequest document (seed documents always do).
    #[arg(long, conflicts_with = "no_version")]
    pub bump: bool,
    /// Do not bump the version or add the branch tag.
    #[arg(long)]
    pub no_version: bool,
    /// Submit to --namespace even when the document names another namespace (refused otherwise).
    #[arg(long)]
    pub namespace_override: bool,
}

/// `list` options.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only requests in this phase (Pending, Building, Testing, Publishing, Succeeded, Failed, Cancelled).
    #[arg(long)]
    pub phase: Option<String>,
    /// Only requests of this owner (spec.owner).
    #[arg(long)]
    pub owner: Option<String>,
    /// Label selector `key=value[,key=value]`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Every namespace instead of --namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `watch` options.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Request to follow; every request of the namespace when absent.
    pub name: Option<String>,
}

/// `logs` options.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Request name.
    pub name: String,
    /// Phase (seed style positional): build, test or publish.
    #[arg(value_name = "PHASE", value_parser = parse_phase, conflicts_with = "phase")]
    pub phase_pos: Option<PipelinePhase>,
    /// Phase: build, test or publish (default: every phase with logs).
    #[arg(long, value_parser = parse_phase)]
    pub phase: Option<PipelinePhase>,
    /// Keep printing new output until the request finishes.
    #[arg(short, long)]
    pub follow: bool,
}

fn parse_phase(s: &str) -> Result<PipelinePhase, String> {
    PipelinePhase::parse(&s.to_ascii_lowercase())
        .ok_or_else(|| format!("`{s}` is not a phase; use build, test or publish"))
}

/// `delete` options.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Request name.
    pub name: String,
    /// Also delete status and logs now (for use without a running controller).
    #[arg(long)]
    pub purge: bool,
}

/// `history` options.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Seed style positional limit.
    #[arg(value_name = "LIMIT", conflicts_with = "limit")]
    pub limit_pos: Option<usize>,
    /// Seed style positional offset.
    #[arg(value_name = "OFFSET", conflicts_with = "offset")]
    pub offset_pos: Option<usize>,
    /// Page size.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Finished requests to skip.
    #[arg(long)]
    pub offset: Option<usize>,
    /// Only requests of this owner.
    #[arg(long)]
    pub owner: Option<String>,
    /// Every namespace instead of --namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `apply` options.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// File or directory (every *.yaml, *.yml, *.json below it, recursively).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Show what would change (with a diff) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete requests matching --selector that are not in the files, in the namespaces of the
    /// applied files (and -n when given) only.
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector limiting --prune (`key=value[,key=value]`; must not be empty).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// With --prune: prune in every namespace the token can reach, not only the files'.
    #[arg(short = 'A', long, requires = "prune")]
    pub all_namespaces: bool,
}

/// `render` options.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Request name (in --namespace) or a request file.
    pub target: String,
    /// Task profile: raw_exec or docker (default: the controller's default, docker).
    #[arg(long)]
    pub profile: Option<String>,
    /// Nomad datacenters (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub datacenters: Vec<String>,
    /// Generation to render with (default: the stored one, or 1 for a file).
    #[arg(long)]
    pub generation: Option<u64>,
}

/// `verify` options.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image, by tag (`registry/repo:tag`) or digest (`registry/repo@sha256:<hex>`).
    pub image: String,
    /// The public key (PKIX PEM) instead of reading it from Vault.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The transit key whose public key is read from Vault.
    #[arg(long, default_value = "jobforge")]
    pub transit_key: String,
    /// Mount of the transit engine.
    #[arg(long, default_value = "transit")]
    pub transit_mount: String,
    /// Talk plain HTTP to the registry (a loopback development registry).
    #[arg(long)]
    pub insecure_registry: bool,
    /// The registry credentials file (containers-auth.json(5) / docker `config.json` format).
    /// Without it and without `--username`: `REGISTRY_AUTH_FILE`, then
    /// `${XDG_RUNTIME_DIR}/containers/auth.json`, then `~/.docker/config.json`; the first with
    /// an entry for the image's registry is used, else the registry is read anonymously.
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Registry user name; the password comes from `--password-stdin` or `--password-file`
    /// (never from the command line).
    #[arg(long, requires = "password_source")]
    pub username: Option<String>,
    /// Read the registry password from standard input (one line).
    #[arg(long, group = "password_source")]
    pub password_stdin: bool,
    /// Read the registry password from this file (first line).
    #[arg(long, group = "password_source")]
    pub password_file: Option<PathBuf>,
}

/// Version file location.
#[derive(Debug, Args)]
pub struct VersionFileArg {
    /// The version file.
    #[arg(long, default_value = "deploy/version.yaml")]
    pub version_file: PathBuf,
}

/// `version-major` / `version-minor`.
#[derive(Debug, Args)]
pub struct VersionSetArgs {
    /// The new value.
    pub value: u64,
    /// The version file.
    #[arg(long, default_value = "deploy/version.yaml")]
    pub version_file: PathBuf,
}

/// `mcp` options.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// Serve over stdin/stdout.
    #[arg(long, conflicts_with = "http")]
    pub stdio: bool,
    /// Serve streamable HTTP on this address (port 0 picks one; the bound address is printed).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// File holding the bearer token clients must send (required on a non-loopback address,
    /// unless --tokens-file is given); its callers get the -n scope.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// YAML or JSON file mapping bearer tokens to namespaces (HTTP only):
    /// `tokens: [{token: "...", namespaces: [team-a]}]`; `"*"` means every namespace.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Extra allowed Host values (besides loopback names), for a server behind a name.
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// Allowed browser Origins (`scheme://host:port`); other Origins are refused.
    #[arg(long = "allowed-origin")]
    pub allowed_origins: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        let argv = std::iter::once("jobforge")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        normalize_seed_flags(argv)
            .into_iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn seed_single_dash_flags_become_long_flags_only_after_the_seed_command() {
        assert_eq!(
            norm(&[
                "submit-job",
                "-global",
                "g.yaml",
                "-config=b.yaml",
                "-image-tags",
                "a,b"
            ]),
            [
                "submit-job",
                "--global",
                "g.yaml",
                "--config=b.yaml",
                "--image-tags",
                "a,b"
            ]
        );
        // Global options before the command, with their values, are skipped over.
        assert_eq!(
            norm(&[
                "-n", "submit", "-o", "json", "submit", "-config", "b.yaml", "-n", "x"
            ]),
            [
                "-n", "submit", "-o", "json", "submit", "--config", "b.yaml", "-n", "x"
            ]
        );
        // Other commands, unknown names and anything after `--` stay as they are.
        assert_eq!(norm(&["list", "-config"]), ["list", "-config"]);
        assert_eq!(
            norm(&["submit", "-configs", "--", "-global"]),
            ["submit", "-configs", "--", "-global"]
        );
        assert_eq!(norm(&["-n"]), ["-n"]);
    }

    #[test]
    fn the_seed_readme_line_parses() {
        use clap::Parser;
        let argv = normalize_seed_flags(
            [
                "jobforge",
                "submit-job",
                "-global",
                "deploy/global.yaml",
                "-config",
                "build.yaml",
                "--image-tags",
                "v1.0.0,latest",
            ]
            .map(OsString::from)
            .to_vec(),
        );
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::Submit(a),
            ..
        }) = cli
        else {
            panic!("not parsed as submit: {cli:?}");
        };
        assert_eq!(a.global_file, Some(PathBuf::from("deploy/global.yaml")));
        assert_eq!(a.config, Some(PathBuf::from("build.yaml")));
        assert_eq!(a.image_tags, ["v1.0.0", "latest"]);
    }
}
