//! Nomad's allocation directory layout and task environment (Nomad `client/allocdir` and
//! `client/taskenv`): `<alloc>/alloc/{data,logs,tmp}`, `<alloc>/<task>/{local,secrets,tmp}`;
//! `NOMAD_*` variables; `VAULT_TOKEN`; `${VAR}` interpolation of driver config.
//!
//! The environment is built in `client/taskenv/env.go`'s order: the agent's own environment
//! (raw_exec/exec pass it on) minus the deny list, then `NOMAD_*`, then `VAULT_TOKEN` and
//! `VAULT_NAMESPACE` of the task's Vault block, then the task's `env` values, each interpolated
//! (`helper/args.ReplaceEnv`) against the map built so far — so `${VAULT_TOKEN}` in an `env`
//! value becomes the task's token, exactly as unsafe as real Nomad.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::model::TaskResources;
use super::placement::Node;
use super::spec::{JobSpec, TaskSpec};

/// Creates the shared alloc dirs. Errors: I/O.
pub fn build_alloc_dir(alloc_dir: &Path) -> std::io::Result<()> {
    for d in ["alloc/data", "alloc/logs", "alloc/tmp"] {
        std::fs::create_dir_all(alloc_dir.join(d))?;
    }
    Ok(())
}

/// Creates `<alloc>/<task>/{local,secrets,tmp}` and returns the task dir. Errors: I/O.
pub fn build_task_dir(alloc_dir: &Path, task: &str) -> std::io::Result<PathBuf> {
    let td = alloc_dir.join(task);
    for d in ["local", "secrets", "tmp"] {
        std::fs::create_dir_all(td.join(d))?;
    }
    Ok(td)
}

/// What the environment of a task is built from.
pub struct EnvInput<'a> {
    /// Job.
    pub job: &'a JobSpec,
    /// Group name.
    pub group: &'a str,
    /// Task.
    pub task: &'a TaskSpec,
    /// Allocation ID.
    pub alloc_id: &'a str,
    /// Allocation index within the group.
    pub alloc_index: usize,
    /// Allocation dir.
    pub alloc_dir: &'a Path,
    /// Resources.
    pub resources: TaskResources,
    /// The node.
    pub node: &'a Node,
    /// The task's Vault token, when its Vault block puts it in the environment (`Env`).
    pub vault_token: Option<&'a str>,
    /// The Vault block's `Namespace` (`VAULT_NAMESPACE` when not empty).
    pub vault_namespace: &'a str,
}

/// Variables of the agent's environment never passed to tasks: Nomad's default
/// `client.options["env.denylist"]` (`command/agent/host/host.go` `DefaultEnvDenyList`, client
/// configuration docs "env.denylist").
pub const ENV_DENYLIST: &[&str] = &[
    "CONSUL_TOKEN",
    "CONSUL_HTTP_TOKEN",
    "VAULT_TOKEN",
    "NOMAD_TOKEN",
    "NOMAD_LICENSE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// Variables that configure the dev stack's other servers, which share its process: a real
/// Nomad agent's environment would not hold the Vault server's configuration, so no task sees it.
pub const SERVER_ENV: &[&str] = &["VAULT_DEV_ROOT_TOKEN_ID", "VAULT_DEV_LISTEN_ADDRESS"];

/// Whether a variable of the agent's environment reaches tasks.
pub fn passes_to_tasks(name: &str) -> bool {
    !ENV_DENYLIST.contains(&name) && !SERVER_ENV.contains(&name) && !name.starts_with("NOMAD_")
}

/// The task's environment, as a Nomad client builds it for `raw_exec`/`exec`: the agent's own
/// environment minus [`ENV_DENYLIST`] and [`SERVER_ENV`] (and minus `NOMAD_*`, which Nomad sets
/// itself), then `NOMAD_*`, then `VAULT_TOKEN`/`VAULT_NAMESPACE`, then the task `Env`
/// (interpolated against everything before it).
pub fn task_env(i: &EnvInput<'_>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| passes_to_tasks(k))
        .collect();
    let td = i.alloc_dir.join(&i.task.name);
    let ns = if i.job.namespace.is_empty() {
        "default"
    } else {
        &i.job.namespace
    };
    let region = if i.job.region.is_empty() {
        "global"
    } else {
        &i.job.region
    };
    let name = if i.job.name.is_empty() {
        &i.job.id
    } else {
        &i.job.name
    };
    for (k, v) in [
        ("NOMAD_ALLOC_ID", i.alloc_id.to_string()),
        ("NOMAD_SHORT_ALLOC_ID", i.alloc_id.chars().take(8).collect()),
        (
            "NOMAD_ALLOC_NAME",
            format!("{}.{}[{}]", i.job.id, i.group, i.alloc_index),
        ),
        ("NOMAD_ALLOC_INDEX", i.alloc_index.to_string()),
        (
            "NOMAD_ALLOC_DIR",
            i.alloc_dir.join("alloc").display().to_string(),
        ),
        ("NOMAD_TASK_DIR", td.join("local").display().to_string()),
        (
            "NOMAD_SECRETS_DIR",
            td.join("secrets").display().to_string(),
        ),
        ("NOMAD_TASK_NAME", i.task.name.clone()),
        ("NOMAD_GROUP_NAME", i.group.to_string()),
        ("NOMAD_JOB_ID", i.job.id.clone()),
        ("NOMAD_JOB_NAME", name.to_string()),
        ("NOMAD_CPU_LIMIT", i.resources.cpu.to_string()),
        ("NOMAD_MEMORY_LIMIT", i.resources.memory_mb.to_string()),
        ("NOMAD_DC", i.node.datacenter.clone()),
        ("NOMAD_REGION", region.to_string()),
        ("NOMAD_NAMESPACE", ns.to_string()),
        ("NOMAD_NODE_ID", i.node.id.clone()),
        ("NOMAD_NODE_NAME", i.node.name.clone()),
    ] {
        env.insert(k.to_string(), v);
    }
    if let Some(t) = i.vault_token {
        env.insert("VAULT_TOKEN".to_string(), t.to_string());
    }
    if !i.vault_namespace.is_empty() {
        env.insert("VAULT_NAMESPACE".to_string(), i.vault_namespace.to_string());
    }
    for (k, v) in &i.job.meta {
        env.insert(
            format!("NOMAD_META_{}", k.replace(['.', '-'], "_")),
            v.clone(),
        );
    }
    let base = env.clone();
    for (k, v) in &i.task.env {
        env.insert(k.clone(), interpolate(v, &base, i.node));
    }
    env
}

/// Nomad's `helper/args.ReplaceEnv(s, nodeAttrs, envMap)`, used for task `env` values
/// (`client/taskenv/env.go`, `buildEnv`), driver `command`/`args`/config
/// (`TaskEnv.ReplaceEnv`) and template destinations: every match of the regular expression
/// `\$\{[a-zA-Z0-9_\-\.]+\}` (leftmost first, non-overlapping, as Go's
/// `ReplaceAllStringFunc`) whose inner name is a node attribute (`attr.X`, `meta.X`,
/// `node.*`, looked up first) or an environment variable is replaced by its value; any other
/// match stays as written. One pass: values are never re-parsed. So in `${a ${VAULT_TOKEN}`
/// the first `${` is no match (a space is outside the class) and `${VAULT_TOKEN}` is replaced,
/// exactly as in Nomad.
pub fn interpolate(s: &str, env: &BTreeMap<String, String>, node: &Node) -> String {
    let is_name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] != b'$' || bytes[i + 1] != b'{' {
            i += 1;
            continue;
        }
        let start = i + 2;
        let len = bytes[start..].iter().take_while(|&&b| is_name(b)).count();
        let end = start + len;
        if len == 0 || bytes.get(end) != Some(&b'}') {
            i += 1;
            continue;
        }
        // Only ASCII bytes were matched, so these are char boundaries.
        let name = &s[start..end];
        let node_value =
            (name.starts_with("attr.") || name.starts_with("meta.") || name.starts_with("node."))
                .then(|| node.resolve(&format!("${{{name}}}")))
                .flatten();
        if let Some(v) = node_value.or_else(|| env.get(name).cloned()) {
            out.push_str(&s[copied..i]);
            out.push_str(&v);
            copied = end + 1;
        }
        i = end + 1;
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_the_agent_and_of_the_dev_stacks_servers_never_reach_tasks() {
        for k in [
            "VAULT_TOKEN",
            "CONSUL_HTTP_TOKEN",
            "NOMAD_TOKEN",
            "VAULT_DEV_ROOT_TOKEN_ID",
            "NOMAD_ADDR",
        ] {
            assert!(!passes_to_tasks(k), "{k}");
        }
        assert!(passes_to_tasks("PATH"));
    }

    #[test]
    fn an_env_value_naming_vault_token_becomes_the_token_as_in_nomad() {
        let node = Node::local();
        let mut task = TaskSpec {
            name: "t".into(),
            ..TaskSpec::default()
        };
        task.env.insert("LEAK".into(), "x-${VAULT_TOKEN}".into());
        let job = JobSpec {
            id: "j".into(),
            ..JobSpec::default()
        };
        let input = |token| EnvInput {
            job: &job,
            group: "g",
            task: &task,
            alloc_id: "a",
            alloc_index: 0,
            alloc_dir: Path::new("/alloc"),
            resources: TaskResources {
                cpu: 100,
                memory_mb: 300,
            },
            node: &node,
            vault_token: token,
            vault_namespace: "",
        };
        let env = task_env(&input(Some("hvs.task")));
        assert_eq!(env["VAULT_TOKEN"], "hvs.task");
        assert_eq!(env["LEAK"], "x-hvs.task");
        let env = task_env(&input(None));
        assert!(!env.contains_key("VAULT_TOKEN"));
        assert_eq!(env["LEAK"], "x-${VAULT_TOKEN}");
    }

    #[test]
    fn interpolation_replaces_known_and_keeps_unknown() {
        let node = Node::local();
        let mut env = BTreeMap::new();
        env.insert("NOMAD_TASK_DIR".to_string(), "/a/t/local".to_string());
        assert_eq!(
            interpolate(
                "${NOMAD_TASK_DIR}/x ${nope} ${node.datacenter} ${",
                &env,
                &node
            ),
            "/a/t/local/x ${nope} dc1 ${"
        );
    }

    /// Go's `regexp` finds the leftmost match: a `${` that cannot start a match (a character
    /// outside `[a-zA-Z0-9_.-]` before the `}`) does not hide a later `${NAME}`.
    #[test]
    fn interpolation_matches_nomads_regexp_not_the_first_closing_brace() {
        let node = Node::local();
        let mut env = BTreeMap::new();
        env.insert("VAULT_TOKEN".to_string(), "hvs.T".to_string());
        env.insert("A-B.C".to_string(), "dash".to_string());
        for (input, want) in [
            ("${a ${VAULT_TOKEN}", "${a hvs.T"),
            ("${x${VAULT_TOKEN}}", "${xhvs.T}"),
            ("$${VAULT_TOKEN}", "$hvs.T"),
            ("${}${VAULT_TOKEN", "${}${VAULT_TOKEN"),
            ("${A-B.C}", "dash"),
            ("${attr.kernel.name}", std::env::consts::OS),
            ("${VAULT_TOKEN }", "${VAULT_TOKEN }"),
            ("é${VAULT_TOKEN}é", "éhvs.Té"),
        ] {
            assert_eq!(interpolate(input, &env, &node), want, "{input}");
        }
    }
}
