//! Escaping of user input that reaches Nomad template text (consul-template, Go `text/template`).
//!
//! The only user input that reaches a template is a Vault path, a Vault field name and an
//! environment variable name (in a destination file name). Paths and field names become Go string literals built by
//! [`escape_template_string`]; variable names must match `[A-Za-z_][A-Za-z0-9_]*`
//! ([`validate_env_name`]). Nothing else from a request is ever placed in template text.

use crate::nomad::job_spec::Template;

use super::RenderError;

/// Quotes `s` as a Go interpreted string literal (the Go spec's "String literals") whose decoded
/// value is exactly `s`, and whose text contains only ASCII letters, digits and `/-_.:@+=,~ `
/// besides its escapes. Every other character, including `{`, `}`, `"`, `\`, `$`, control
/// characters and non-ASCII, is written as `\xNN` or `\UNNNNNNNN`, so the literal can never close
/// early nor contain a template delimiter (`{{`, `}}`).
///
/// Example: `secret/data/a{{b` → `"secret/data/a\x7b\x7bb"`.
pub fn escape_template_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || "/-_.:@+=,~ ".contains(c) {
            out.push(c);
        } else if c.is_ascii() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\U{:08x}", c as u32));
        }
    }
    out.push('"');
    out
}

/// Checks an environment variable name against `[A-Za-z_][A-Za-z0-9_]*`.
///
/// Errors: [`RenderError::InvalidField`] naming `field` and the allowed syntax.
pub fn validate_env_name(field: &str, name: &str) -> Result<(), RenderError> {
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(RenderError::InvalidField {
            field: field.to_string(),
            value: name.to_string(),
            allowed: "an environment variable name matching [A-Za-z_][A-Za-z0-9_]*",
        })
    }
}

/// A template that reads the Vault KV v2 secret at `path` and exports `ENV=<field value>` lines
/// into the task environment (`Envvars: true`), rendered to `secrets/<file_stem>.env` with mode
/// `0600`. `fields` pairs each Vault field with its variable name; names are checked by
/// [`validate_env_name`] (with `field` naming the spec field for errors), path and fields are
/// quoted by [`escape_template_string`].
///
/// Text shape: `{{ with secret "PATH" }}ENV={{ index .Data.data "field" }}\n...{{ end }}`.
pub fn env_template(
    field: &str,
    file_stem: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Result<Template, RenderError> {
    let mut text = format!("{{{{ with secret {} }}}}\n", escape_template_string(path));
    for (vault_field, env) in fields {
        validate_env_name(field, env)?;
        text.push_str(&format!(
            "{env}={{{{ index .Data.data {} }}}}\n",
            escape_template_string(vault_field)
        ));
    }
    text.push_str("{{ end }}\n");
    Ok(Template {
        dest_path: format!("secrets/{file_stem}.env"),
        embedded_tmpl: text,
        change_mode: "noop".to_string(),
        envvars: true,
        perms: "0600".to_string(),
        left_delim: None,
        right_delim: None,
    })
}

/// A template that writes one field of the Vault KV v2 secret at `path` verbatim to
/// `secrets/<file_name>` with mode `0600` (for an SSH private key).
pub fn file_template(file_name: &str, path: &str, vault_field: &str) -> Template {
    Template {
        dest_path: format!("secrets/{file_name}"),
        embedded_tmpl: format!(
            "{{{{ with secret {} }}}}{{{{ index .Data.data {} }}}}\n{{{{ end }}}}",
            escape_template_string(path),
            escape_template_string(vault_field)
        ),
        change_mode: "noop".to_string(),
        envvars: false,
        perms: "0600".to_string(),
        left_delim: None,
        right_delim: None,
    }
}

/// A template that writes one field of the Vault KV v2 secret at `path` to `dest` (relative to
/// the task directory, for example `secrets/registry_password`) with mode `0600`, byte for byte:
/// no trailing newline is added, so a script reading the file gets exactly the secret. Never
/// `Envvars`: the value is in no process environment.
pub fn value_file_template(dest: &str, path: &str, vault_field: &str) -> Template {
    Template {
        dest_path: dest.to_string(),
        embedded_tmpl: format!(
            "{{{{ with secret {} }}}}{{{{ index .Data.data {} }}}}{{{{ end }}}}",
            escape_template_string(path),
            escape_template_string(vault_field)
        ),
        change_mode: "noop".to_string(),
        envvars: false,
        perms: "0600".to_string(),
        left_delim: None,
        right_delim: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes a literal made by `escape_template_string` the way Go's `strconv.Unquote` does
    /// for the escapes we emit.
    fn go_unquote(lit: &str) -> String {
        let inner = &lit[1..lit.len() - 1];
        let mut out = String::new();
        let mut it = inner.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let (n, kind) = match it.next() {
                Some('x') => (2, 'x'),
                Some('U') => (8, 'U'),
                other => panic!("unexpected escape {other:?}"),
            };
            let hex: String = it.by_ref().take(n).collect();
            let v = u32::from_str_radix(&hex, 16).unwrap();
            assert!(kind == 'U' || v < 0x80);
            out.push(char::from_u32(v).unwrap());
        }
        out
    }

    #[test]
    fn braces_quotes_and_backslashes_are_hex_escaped() {
        assert_eq!(
            escape_template_string(r#"a{{b}}"c\d"#),
            r#""a\x7b\x7bb\x7d\x7d\x22c\x5cd""#
        );
    }

    #[test]
    fn plain_vault_path_is_kept_readable() {
        assert_eq!(
            escape_template_string("secret/data/jobforge/git"),
            "\"secret/data/jobforge/git\""
        );
    }

    #[test]
    fn env_template_rejects_a_variable_name_that_is_not_an_identifier() {
        let err = env_template(
            "spec.test.vault_secrets[0].fields",
            "t",
            "p",
            &[("f", "A=B")],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.test.vault_secrets[0].fields")
        );
    }

    proptest! {
        #[test]
        fn escaped_literal_never_contains_a_delimiter_or_an_unescaped_quote(s in any::<String>()) {
            let lit = escape_template_string(&s);
            prop_assert!(lit.starts_with('"') && lit.ends_with('"'));
            let inner = &lit[1..lit.len() - 1];
            prop_assert!(!inner.contains(['{', '}']), "brace in {}", inner);
            prop_assert!(!inner.contains('"'));
            prop_assert!(inner.chars().all(|c| c.is_ascii() && !c.is_ascii_control()));
            prop_assert_eq!(go_unquote(&lit), s);
        }

        #[test]
        fn env_template_text_holds_no_user_delimiter(
            path in ".*", field in ".*", env in "[A-Za-z_][A-Za-z0-9_]{0,10}"
        ) {
            let t = env_template("f", "x", &path, &[(&field, &env)]).unwrap();
            // Our own actions are the only delimiters: exactly 3 opening and 3 closing.
            prop_assert_eq!(t.embedded_tmpl.matches("{{").count(), 3);
            prop_assert_eq!(t.embedded_tmpl.matches("}}").count(), 3);
            prop_assert_eq!(t.embedded_tmpl.matches('"').count(), 4);
        }
    }
}
