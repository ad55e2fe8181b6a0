//! Grammar of single values (names, tags, URLs, paths, durations, numbers). Each checker returns
//! `Err(message)` saying what is wrong and what is allowed; [`crate::validate()`] adds the JSON path.
//!
//! Sources: DNS labels and label syntax from Kubernetes' object-names and labels docs; image name and
//! tag from the OCI distribution spec ("Pulling manifests": `<name>` and `<reference>` grammars); git
//! refs from `git check-ref-format`; Nomad constraint operands from Nomad's `constraint` block docs.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    // Patterns are literals of this file, covered by the unit tests below.
    #[allow(clippy::unwrap_used)]
    Regex::new(pattern).unwrap()
}

/// DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters (RFC 1123, as Kubernetes names).
pub const DNS_LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
/// OCI distribution tag grammar.
pub const TAG: &str = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
/// OCI distribution repository name grammar (path components separated by `/`).
pub const IMAGE_NAME: &str =
    "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*";
/// Environment variable name grammar.
pub const ENV_NAME: &str = "[A-Za-z_][A-Za-z0-9_]*";
/// Characters of a Vault path segment.
pub const VAULT_SEGMENT: &str = "[A-Za-z0-9_.-]+";
/// A Containerfile stage name (`FROM … AS <name>`, `--target`); BuildKit's rule
/// (`dockerfile/instructions/parse.go`: `^[a-z][a-z0-9-_.]*$` after lowercasing), length-capped.
pub const STAGE: &str = "[A-Za-z][A-Za-z0-9_.-]{0,127}";
/// An OCI label or annotation key (the image-spec's `annotations.md` asks for reverse-domain keys
/// such as `org.opencontainers.image.source`).
pub const OCI_KEY: &str = "[A-Za-z0-9][A-Za-z0-9._/-]{0,252}";
/// Nomad constraint operands (empty means `=`).
pub const CONSTRAINT_OPERANDS: [&str; 13] = [
    "=",
    "==",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "regexp",
    "set_contains",
    "set_contains_any",
    "version",
    "semver",
    "is_set",
];

static DNS_LABEL_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{DNS_LABEL}$")));
static TAG_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{TAG}$")));
static IMAGE_NAME_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{IMAGE_NAME}$")));
static ENV_NAME_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{ENV_NAME}$")));
static VAULT_SEGMENT_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{VAULT_SEGMENT}$")));
static LABEL_NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| re("^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"));
static HOST_LABEL_RE: LazyLock<Regex> =
    LazyLock::new(|| re("^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$"));
static HTTP_TOKEN_RE: LazyLock<Regex> = LazyLock::new(|| re("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"));
static STAGE_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{STAGE}$")));
static OCI_KEY_RE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{OCI_KEY}$")));
static CONSTRAINT_ATTR_RE: LazyLock<Regex> =
    LazyLock::new(|| re("^\\$\\{(attr|meta|node)\\.[A-Za-z0-9_.-]+\\}$"));

/// Quotes a value for a message (JSON string syntax, so control characters are visible).
pub fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Rejects control characters (U+0000..U+001F, U+007F..U+009F) except those in `allowed`.
pub fn no_control(s: &str, allowed: &[char]) -> Result<(), String> {
    match s.chars().find(|c| c.is_control() && !allowed.contains(c)) {
        Some(c) => Err(format!(
            "contains the control character U+{:04X}; control characters are not allowed",
            c as u32
        )),
        None => Ok(()),
    }
}

/// A DNS label (metadata.name, metadata.namespace).
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!(
            "must not be empty; allowed: {DNS_LABEL}, at most 63 characters"
        ));
    }
    if s.len() > 63 || !DNS_LABEL_RE.is_match(s) {
        return Err(format!(
            "{} is not a DNS label: {DNS_LABEL}, at most 63 characters",
            quote(s)
        ));
    }
    Ok(())
}

fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.')
            .all(|l| l.len() <= 63 && DNS_LABEL_RE.is_match(l))
}

/// A Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain (≤ 253), name ≤ 63 of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(dns_subdomain);
    if !prefix_ok || name.is_empty() || name.len() > 63 || !LABEL_NAME_RE.is_match(name) {
        return Err(format!(
            "{} is not a valid label key: [DNS-subdomain/]name, name at most 63 characters of \
             [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?",
            quote(s)
        ));
    }
    Ok(())
}

/// A Kubernetes label value: empty, or ≤ 63 of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || (s.len() <= 63 && LABEL_NAME_RE.is_match(s)) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid label value: empty or at most 63 characters of \
             [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?",
            quote(s)
        ))
    }
}

/// An OCI image tag.
pub fn tag(s: &str) -> Result<(), String> {
    if TAG_RE.is_match(s) {
        Ok(())
    } else {
        Err(format!("{} is not a valid tag: {TAG}", quote(s)))
    }
}

/// An OCI repository name (without registry), at most 255 characters.
pub fn image_name(s: &str) -> Result<(), String> {
    if s.len() <= 255 && IMAGE_NAME_RE.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid image name (OCI distribution): {IMAGE_NAME}, at most 255 characters",
            quote(s)
        ))
    }
}

fn host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !h.is_empty() && h.len() <= 253 && h.split('.').all(|l| HOST_LABEL_RE.is_match(l))
}

fn host_port(hp: &str) -> bool {
    // `[v6]:port`, `host:port`, `host`.
    let (h, port) = if hp.starts_with('[') {
        match hp.find(']') {
            Some(i) => {
                let rest = &hp[i + 1..];
                match rest.strip_prefix(':') {
                    Some(p) => (&hp[..=i], Some(p)),
                    None if rest.is_empty() => (hp, None),
                    None => return false,
                }
            }
            None => return false,
        }
    } else {
        match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && matches!(p.parse::<u32>(), Ok(1..=65535))
    });
    host(h) && port_ok
}

/// A Containerfile stage name for `--target` (see [`STAGE`]).
pub fn stage(s: &str) -> Result<(), String> {
    matching(&STAGE_RE, s, "stage name", STAGE)
}

/// An OCI label or annotation key (see [`OCI_KEY`]).
pub fn oci_key(s: &str) -> Result<(), String> {
    matching(&OCI_KEY_RE, s, "label or annotation key", OCI_KEY)
}

/// A registry host alone: `host[:port]`, no scheme and no path (`mirror.internal:5000`).
pub fn registry_host(s: &str) -> Result<(), String> {
    if !s.contains('/') && host_port(s) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a registry host; allowed: host[:port] without a scheme or path, for example \
             registry.internal:5000",
            quote(s)
        ))
    }
}

/// A registry reference: `host[:port][/path]`, no scheme; path components follow the image name grammar.
pub fn registry(s: &str) -> Result<(), String> {
    let allowed = "host[:port][/path] without a scheme, for example registry.internal:5000/team-a";
    if s.contains("://") {
        return Err(format!("{} has a scheme; allowed: {allowed}", quote(s)));
    }
    let (hp, path) = match s.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let path_ok = path.is_none_or(|p| p.len() <= 255 && IMAGE_NAME_RE.is_match(p));
    if host_port(hp) && path_ok {
        Ok(())
    } else {
        Err(format!("{} is not a valid registry: {allowed}", quote(s)))
    }
}

/// A git repository URL: `https://`, `http://`, `ssh://`, `git://`, `file://` or scp-like
/// `user@host:path`. Never starts with `-` (it would become a `git clone` option).
pub fn git_url(s: &str) -> Result<(), String> {
    let allowed = "https://, http://, ssh://, git:// or file:// URL, or scp-like user@host:path";
    if s.starts_with('-') || s.chars().any(char::is_whitespace) {
        return Err(format!(
            "{} must not start with '-' or contain whitespace; allowed: {allowed}",
            quote(s)
        ));
    }
    if let Some((scheme, rest)) = s.split_once("://") {
        return match scheme {
            "file" => {
                if rest.starts_with('/') && rest.len() > 1 {
                    Ok(())
                } else {
                    Err(format!("{} must be file:///absolute/path", quote(s)))
                }
            }
            "https" | "http" | "ssh" | "git" => {
                let authority = rest.split('/').next().unwrap_or_default();
                let hp = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                if host_port(hp) {
                    Ok(())
                } else {
                    Err(format!(
                        "{} has no valid host; allowed: {allowed}",
                        quote(s)
                    ))
                }
            }
            other => Err(format!(
                "{} has the unsupported scheme {}; allowed: {allowed}",
                quote(s),
                quote(other)
            )),
        };
    }
    // scp-like: [user@]host:path, where the colon comes before any slash.
    if let Some((left, path)) = s.split_once(':')
        && !left.contains('/')
        && !path.is_empty()
    {
        let h = left.rsplit_once('@').map_or(left, |(_, h)| h);
        if host(h) {
            return Ok(());
        }
    }
    Err(format!(
        "{} is not a valid git URL; allowed: {allowed}",
        quote(s)
    ))
}

/// A git ref (branch, tag or commit), after `git check-ref-format`: no leading `-`, no whitespace or
/// control characters, none of `~^:?*[\`, no `..`, no `@{`, no `//`, no component starting with `.`
/// or ending with `.lock`, not ending with `/` or `.`, not `@`, at most 255 bytes.
pub fn git_ref(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{} is not a valid git ref: {why} (rules of git check-ref-format)",
            quote(s)
        ))
    };
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if s.starts_with('-') {
        return bad("starts with '-'");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or a control character");
    }
    if let Some(c) = s.chars().find(|c| "~^:?*[\\".contains(*c)) {
        return bad(&format!("contains '{c}'"));
    }
    if s.contains("..") || s.contains("@{") || s.contains("//") {
        return bad("contains '..', '@{' or '//'");
    }
    if s == "@" || s.ends_with('/') || s.ends_with('.') || s.starts_with('/') {
        return bad("is '@', starts with '/' or ends with '/' or '.'");
    }
    if s.split('/')
        .any(|c| c.starts_with('.') || c.ends_with(".lock"))
    {
        return bad("has a component starting with '.' or ending with '.lock'");
    }
    Ok(())
}

/// A path relative to the repository root: not absolute, no `..` component, no backslash, no
/// control characters, at most 4096 bytes. `.` is allowed.
pub fn relative_path(s: &str) -> Result<(), String> {
    let allowed = "a relative path inside the repository, without '..' components";
    if s.is_empty() {
        return Err(format!("must not be empty; allowed: {allowed}"));
    }
    if s.starts_with('/') || s.starts_with('\\') {
        return Err(format!("{} is absolute; allowed: {allowed}", quote(s)));
    }
    if s.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!(
            "{} contains a '..' component; allowed: {allowed}",
            quote(s)
        ));
    }
    if s.len() > 4096 || s.starts_with('-') {
        return Err(format!(
            "{} is longer than 4096 bytes or starts with '-'; allowed: {allowed}",
            quote(s)
        ));
    }
    no_control(s, &[])
}

/// A humantime duration (`30m`, `1h 30m`) between `min` and `max` inclusive.
pub fn duration(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let range = format!(
        "{} ..= {}",
        humantime::format_duration(min),
        humantime::format_duration(max)
    );
    let d = humantime::parse_duration(s).map_err(|e| {
        format!(
            "{} is not a duration ({e}); allowed: humantime like 30m or 1h 30m, {range}",
            quote(s)
        )
    })?;
    if d < min || d > max {
        return Err(format!("{} is out of range; allowed: {range}", quote(s)));
    }
    Ok(d)
}

/// A decimal integer string (`"1000"`) between `min` and `max` inclusive; `unit` names it in messages.
pub fn decimal(s: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let allowed = format!("a decimal integer string {min} ..= {max} ({unit})");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{} is not a decimal integer; allowed: {allowed}",
            quote(s)
        ));
    }
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{} is out of range; allowed: {allowed}", quote(s))),
    }
}

/// A Vault path (`secret/data/jobforge/git`): at least two `/`-separated segments of
/// `[A-Za-z0-9_.-]+`, no `..` segment, no leading or trailing `/`. Never a secret value.
pub fn vault_path(s: &str) -> Result<(), String> {
    let segments: Vec<&str> = s.split('/').collect();
    let ok = segments.len() >= 2
        && segments
            .iter()
            .all(|seg| VAULT_SEGMENT_RE.is_match(seg) && *seg != ".." && *seg != ".");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a Vault path: mount/path segments of {VAULT_SEGMENT} (for example \
             secret/data/jobforge/git), no leading '/', no empty or '..' segment",
            quote(s)
        ))
    }
}

/// An environment variable name.
pub fn env_name(s: &str) -> Result<(), String> {
    matching(&ENV_NAME_RE, s, "environment variable name", ENV_NAME)
}

/// A Vault field name or Vault policy name: `[A-Za-z0-9_.-]+`.
pub fn vault_name(s: &str) -> Result<(), String> {
    matching(&VAULT_SEGMENT_RE, s, "Vault name", VAULT_SEGMENT)
}

/// A webhook URL: `http://` or `https://` with a host, no whitespace or control characters.
pub fn http_url(s: &str) -> Result<(), String> {
    let allowed = "an http:// or https:// URL with a host";
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Err(format!("{} is not {allowed}", quote(s)));
    };
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} contains whitespace or a control character; allowed: {allowed}",
            quote(s)
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hp = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port(hp) {
        Ok(())
    } else {
        Err(format!(
            "{} has no valid host; allowed: {allowed}",
            quote(s)
        ))
    }
}

/// An HTTP header name (RFC 9110 token).
pub fn header_name(s: &str) -> Result<(), String> {
    matching(
        &HTTP_TOKEN_RE,
        s,
        "header name",
        "an RFC 9110 token of [!#$%&'*+.^_`|~0-9A-Za-z-]",
    )
}

/// A Nomad constraint attribute: `${attr.*}`, `${meta.*}` or `${node.*}`.
pub fn constraint_attribute(s: &str) -> Result<(), String> {
    matching(
        &CONSTRAINT_ATTR_RE,
        s,
        "constraint attribute",
        "${attr.<name>}, ${meta.<name>} or ${node.<name>}",
    )
}

/// `Ok` when `re` matches `s`, otherwise `"<s>" is not a valid <what>: <allowed>`.
fn matching(re: &Regex, s: &str, what: &str, allowed: &str) -> Result<(), String> {
    if re.is_match(s) {
        Ok(())
    } else {
        Err(format!("{} is not a valid {what}: {allowed}", quote(s)))
    }
}

/// A Nomad constraint operand; empty means `=`.
pub fn constraint_operand(s: &str) -> Result<(), String> {
    if s.is_empty() || CONSTRAINT_OPERANDS.contains(&s) || s == "is_not_set" {
        Ok(())
    } else {
        Err(format!(
            "{} is not a Nomad constraint operand; allowed: {}, is_not_set (or empty for =)",
            quote(s),
            CONSTRAINT_OPERANDS.join(", ")
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_follow_rfc_1123() {
        assert!(dns_label("myapp-42").is_ok());
        assert!(dns_label("a").is_ok());
        assert!(dns_label("-a").is_err());
        assert!(dns_label("A").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn registry_accepts_host_port_path_and_ipv6() {
        for ok in [
            "registry.cluster:5000/myapp",
            "docker.io/user",
            "localhost:5000",
            "[::1]:5000/x",
            "10.0.0.1",
        ] {
            assert!(registry(ok).is_ok(), "{ok}");
        }
        for bad in ["https://r", "r:0", "r:99999", "r/UP", "", "r:", "-r"] {
            assert!(registry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn git_urls_accept_the_documented_schemes() {
        for ok in [
            "https://github.com/a/b.git",
            "http://h:8080/x",
            "ssh://git@h/x",
            "git://h/x",
            "file:///srv/repo",
            "git@github.com:a/b.git",
        ] {
            assert!(git_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://h/x",
            "-uevil",
            "https:///x",
            "file://relative",
            "just-a-word",
            "a b",
        ] {
            assert!(git_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn git_refs_follow_check_ref_format() {
        for ok in ["main", "feature/new-feature", "v1.0.0", "0123abcd"] {
            assert!(git_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "-x", "a..b", "a b", "a~1", "a/", "a.lock", ".hidden", "@", "a//b",
        ] {
            assert!(git_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_bounded() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(86_400));
        assert_eq!(duration("30m", min, max), Ok(Duration::from_secs(1800)));
        assert!(duration("25h", min, max).is_err());
        assert!(duration("0s", min, max).is_err());
        assert!(duration("soon", min, max).is_err());
    }

    #[test]
    fn vault_paths_need_two_clean_segments() {
        assert!(vault_path("secret/data/jobforge/git").is_ok());
        for bad in [
            "/secret/x",
            "secret",
            "secret//x",
            "secret/../x",
            "secret/x/",
            "secret/a b",
        ] {
            assert!(vault_path(bad).is_err(), "{bad}");
        }
    }
}
