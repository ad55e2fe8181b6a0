//! The template subset jobforge renders (consul-template syntax, Nomad `template` block):
//! text, `{{ with secret "PATH" }}…{{ end }}` (a Vault read over HTTP), `{{ .Data.data.KEY }}`
//! field access on the current context, `{{ env "NAME" }}`, string literals (so `{{ "{{" }}`
//! renders `{{`), trim markers `{{-`/`-}}`, and custom delimiters. Anything else is a parse error,
//! as an unknown function is in Go's text/template. No general-purpose evaluation.

use std::collections::BTreeMap;

use serde_json::Value;

/// A template failure; the message becomes the task event text after `Template failed: `.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    /// Malformed template.
    #[error("parse: template: {0}")]
    Parse(String),
    /// A secret the template reads does not exist (consul-template's missing dependency).
    #[error("vault.read({0}): no secret exists at {0} (Missing: vault.read({0}))")]
    MissingSecret(String),
    /// Vault could not be read.
    #[error("vault.read({path}): {reason}")]
    Vault {
        /// Secret path.
        path: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Literal(String),
    Field(Vec<String>),
    Env(String),
    WithSecret(String, Vec<Node>),
}

fn parse_string(s: &str) -> Option<String> {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        serde_json::from_str::<String>(s).ok()
    } else if s.len() >= 2 && s.starts_with('`') && s.ends_with('`') {
        Some(s[1..s.len() - 1].to_string())
    } else {
        None
    }
}

/// Parses `text` with delimiters `left`/`right` (`{{`/`}}` when empty).
fn parse(text: &str, left: &str, right: &str) -> Result<Vec<Node>, TemplateError> {
    let left = if left.is_empty() { "{{" } else { left };
    let right = if right.is_empty() { "}}" } else { right };
    let mut stack: Vec<(String, Vec<Node>)> = vec![(String::new(), Vec::new())];
    let mut rest = text;
    let mut trim_next = false;
    loop {
        let (mut chunk, after) = match rest.find(left) {
            Some(i) => (&rest[..i], Some(&rest[i + left.len()..])),
            None => (rest, None),
        };
        if trim_next {
            chunk = chunk.trim_start();
        }
        let Some(after) = after else {
            push_text(&mut stack, chunk);
            break;
        };
        let end = find_action_end(after, right)
            .ok_or_else(|| TemplateError::Parse(format!("unclosed action (missing {right:?})")))?;
        let mut action = &after[..end];
        rest = &after[end + right.len()..];
        if let Some(a) = action.strip_prefix("- ") {
            chunk = chunk.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix(" -") {
            trim_next = true;
            action = a;
        }
        push_text(&mut stack, chunk);
        let action = action.trim();
        let words: Vec<&str> = action.splitn(2, char::is_whitespace).collect();
        let node = match words.as_slice() {
            ["end"] => {
                let (path, body) = stack
                    .pop()
                    .filter(|_| !stack.is_empty())
                    .ok_or_else(|| TemplateError::Parse("unexpected {{end}}".into()))?;
                Node::WithSecret(path, body)
            }
            ["with", arg] => {
                let arg = arg.trim();
                let path = arg
                    .strip_prefix("secret")
                    .and_then(parse_string)
                    .ok_or_else(|| {
                        TemplateError::Parse(format!(
                            "unsupported with argument {arg:?}; allowed: secret \"PATH\""
                        ))
                    })?;
                stack.push((path, Vec::new()));
                continue;
            }
            // `index .Data.data "key"` (Go's text/template builtin, used for keys that are not
            // identifiers): the field path plus one string key.
            ["index", arg] => {
                let arg = arg.trim();
                let (field, key) = arg.split_once(char::is_whitespace).ok_or_else(|| {
                    TemplateError::Parse(format!("index needs a field and a key, got {arg:?}"))
                })?;
                let key = parse_string(key.trim()).ok_or_else(|| {
                    TemplateError::Parse(format!("index key must be a string literal, got {key:?}"))
                })?;
                let mut path: Vec<String> = field
                    .strip_prefix('.')
                    .ok_or_else(|| {
                        TemplateError::Parse(format!("index needs a .Field, got {field:?}"))
                    })?
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                path.push(key);
                Node::Field(path)
            }
            ["env", arg] => Node::Env(parse_string(arg).ok_or_else(|| {
                TemplateError::Parse(format!("env needs a string argument, got {arg:?}"))
            })?),
            _ if action.starts_with('.') => Node::Field(
                action[1..]
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            _ => match parse_string(action) {
                Some(lit) => Node::Literal(lit),
                None => {
                    return Err(TemplateError::Parse(format!(
                        "unsupported action {action:?}; allowed: with secret, end, .Field, index .Field \"key\", env, \"literal\""
                    )));
                }
            },
        };
        if let Some(top) = stack.last_mut() {
            top.1.push(node);
        }
    }
    if stack.len() != 1 {
        return Err(TemplateError::Parse(
            "unexpected EOF (missing {{end}})".into(),
        ));
    }
    Ok(stack.pop().map(|s| s.1).unwrap_or_default())
}

/// Position of the closing delimiter, skipping quoted strings (so `{{ "}}" }}` works, as in Go's
/// lexer).
fn find_action_end(s: &str, right: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => quote = Some(c),
            None if s[i..].starts_with(right) => return Some(i),
            None => {}
        }
    }
    None
}

fn push_text(stack: &mut [(String, Vec<Node>)], s: &str) {
    if !s.is_empty()
        && let Some(top) = stack.last_mut()
    {
        top.1.push(Node::Text(s.to_string()));
    }
}

/// Reads secrets for templates.
pub trait SecretSource {
    /// Reads `path` (`secret/data/x`); `Ok(None)` = no secret there. The value is Vault's response
    /// body (`{"data": {...}, ...}`).
    fn read(
        &self,
        path: &str,
    ) -> impl std::future::Future<Output = Result<Option<Value>, TemplateError>> + Send;
}

/// Vault over HTTP with a token.
#[derive(Debug, Clone)]
pub struct VaultSource {
    /// `http://host:port`, or `None` when the emulator has no Vault.
    pub addr: Option<String>,
    /// Token.
    pub token: Option<String>,
    /// Client.
    pub http: reqwest::Client,
}

impl SecretSource for VaultSource {
    async fn read(&self, path: &str) -> Result<Option<Value>, TemplateError> {
        let err = |reason: String| TemplateError::Vault {
            path: path.to_string(),
            reason,
        };
        let addr = self
            .addr
            .as_deref()
            .ok_or_else(|| err("Vault is not configured for the Nomad emulator".into()))?;
        let url = format!(
            "{}/v1/{}",
            addr.trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        let mut req = self.http.get(url);
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t);
        }
        let resp = req.send().await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(err(format!("Vault returned {status}: {body}")));
        }
        resp.json::<Value>()
            .await
            .map(Some)
            .map_err(|e| err(e.to_string()))
    }
}

/// Renders `text` with the given delimiters, task environment and secret source.
///
/// Errors: [`TemplateError`] for a parse error, a missing secret or a Vault failure.
pub async fn render<S: SecretSource>(
    text: &str,
    left: &str,
    right: &str,
    env: &BTreeMap<String, String>,
    secrets: &S,
) -> Result<String, TemplateError> {
    let nodes = parse(text, left, right)?;
    let mut out = String::new();
    // Iterative walk: (nodes, context) frames.
    let mut frames: Vec<(std::vec::IntoIter<Node>, Value)> = vec![(nodes.into_iter(), Value::Null)];
    while let Some((iter, ctx)) = frames.last_mut() {
        let Some(node) = iter.next() else {
            frames.pop();
            continue;
        };
        match node {
            Node::Text(t) | Node::Literal(t) => out.push_str(&t),
            Node::Env(name) => out.push_str(env.get(&name).map_or("", String::as_str)),
            Node::Field(path) => {
                let mut v = &*ctx;
                let mut missing = false;
                for p in &path {
                    match v.get(p) {
                        Some(x) => v = x,
                        None => {
                            missing = true;
                            break;
                        }
                    }
                }
                match (missing, v) {
                    (true, _) | (false, Value::Null) => out.push_str("<no value>"),
                    (false, Value::String(s)) => out.push_str(s),
                    (false, other) => out.push_str(&other.to_string()),
                }
            }
            Node::WithSecret(path, body) => {
                let secret = secrets
                    .read(&path)
                    .await?
                    .ok_or_else(|| TemplateError::MissingSecret(path.clone()))?;
                // consul-template's Secret: {RequestID, LeaseID, LeaseDuration, Renewable, Data, Warnings}.
                let mut c = serde_json::Map::new();
                c.insert(
                    "Data".into(),
                    secret.get("data").cloned().unwrap_or(Value::Null),
                );
                c.insert(
                    "LeaseID".into(),
                    secret.get("lease_id").cloned().unwrap_or(Value::Null),
                );
                c.insert(
                    "LeaseDuration".into(),
                    secret.get("lease_duration").cloned().unwrap_or(Value::Null),
                );
                c.insert(
                    "Renewable".into(),
                    secret.get("renewable").cloned().unwrap_or(Value::Null),
                );
                frames.push((body.into_iter(), Value::Object(c)));
            }
        }
    }
    Ok(out)
}

/// Parses rendered `Envvars` template output (`KEY=value` lines; `#` comments, `export `
/// prefixes and single/double quotes allowed, as Nomad's env-file parser).
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Fake;
    impl SecretSource for Fake {
        async fn read(&self, path: &str) -> Result<Option<Value>, TemplateError> {
            Ok((path == "secret/data/git")
                .then(|| serde_json::json!({"data": {"data": {"token": "s3cr3t"}}})))
        }
    }

    fn r(text: &str, l: &str, rd: &str) -> Result<String, TemplateError> {
        let mut env = BTreeMap::new();
        env.insert("HOME".to_string(), "/h".to_string());
        futures::executor::block_on(render(text, l, rd, &env, &Fake))
    }

    #[test]
    fn secret_fields_env_and_escaped_braces_render() {
        let t = "{{ with secret \"secret/data/git\" }}TOKEN={{ .Data.data.token }}{{ end }}\nH={{ env \"HOME\" }} {{ \"{{\" }}x}}";
        assert_eq!(r(t, "", "").unwrap(), "TOKEN=s3cr3t\nH=/h {{x}}");
    }

    #[test]
    fn index_reads_a_key_of_the_secret_data() {
        let t = "{{ with secret \"secret/data/git\" }}T={{ index .Data.data \"token\" }}{{ end }}";
        assert_eq!(r(t, "{{", "}}").expect("render"), "T=s3cr3t");
    }

    #[test]
    fn custom_delimiters_leave_braces_alone() {
        let t = "[[ with secret \"secret/data/git\" ]]{{ [[ .Data.data.token ]] }}[[ end ]]";
        assert_eq!(r(t, "[[", "]]").unwrap(), "{{ s3cr3t }}");
    }

    #[test]
    fn missing_secret_is_a_missing_dependency_error() {
        let e = r("{{ with secret \"secret/data/nope\" }}{{ end }}", "", "").unwrap_err();
        assert!(
            e.to_string()
                .contains("Missing: vault.read(secret/data/nope)")
        );
    }

    #[test]
    fn unknown_functions_and_unbalanced_blocks_are_parse_errors() {
        assert!(matches!(
            r("{{ exec \"rm\" }}", "", ""),
            Err(TemplateError::Parse(_))
        ));
        assert!(matches!(
            r("{{ with secret \"a\" }}", "", ""),
            Err(TemplateError::Parse(_))
        ));
        assert!(matches!(
            r("{{ end }}", "", ""),
            Err(TemplateError::Parse(_))
        ));
    }

    #[test]
    fn trim_markers_and_env_files() {
        assert_eq!(r("a  {{- \"b\" -}}  c", "", "").unwrap(), "abc");
        let env = parse_env_file("# c\nexport A=1\nB=\"two words\"\n\nC='x'");
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "x");
    }

    proptest::proptest! {
        #[test]
        fn text_without_delimiters_renders_unchanged(t in "[^{}]{0,200}") {
            proptest::prop_assert_eq!(r(&t, "", "").unwrap(), t);
        }

        #[test]
        fn arbitrary_input_never_panics(t in ".{0,200}") {
            let _ = r(&t, "", "");
            let _ = parse_env_file(&t);
        }

        #[test]
        fn string_literals_render_verbatim(lit in "[a-zA-Z0-9 {}\\[\\]\"]{0,40}") {
            let quoted = serde_json::to_string(&lit).unwrap();
            proptest::prop_assert_eq!(r(&format!("{{{{ {quoted} }}}}"), "", "").unwrap(), lit.clone());
            proptest::prop_assert_eq!(r(&format!("[[ {quoted} ]]"), "[[", "]]").unwrap(), lit);
        }
    }
}
