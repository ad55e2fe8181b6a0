//! Folder names a URL path cannot carry as is (the sharded watch never reads them).

/// A folder key (`<prefix><name>/`) whose name a URL path cannot carry as is: `.`, `..` (and
/// their percent-encoded forms, which the WHATWG URL parser also resolves), or a name with `%`,
/// `?`, `#` or `\`. A read of such a folder through `/v1/kv/<folder>` would list *another*
/// prefix (`requests/../` is `jobforge/`, every key of every team), so it is never watched:
/// the folder itself is reported as one key-only pair named without its trailing `/` (a key
/// that is not a request: the caller ignores it with one warning). Keys written inside it (only
/// possible through `/v1/txn`, which takes literal keys) are not listed one by one.
pub(super) fn unreadable_folder(key: &str) -> Option<&str> {
    let folder = key.strip_suffix('/')?;
    let name = folder.rsplit('/').next().unwrap_or(folder);
    let lower = name.to_ascii_lowercase();
    let dots = matches!(
        lower.as_str(),
        "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
    );
    let odd = name.is_empty() || name.contains(['%', '?', '#', '\\']);
    (dots || odd).then_some(folder)
}

#[cfg(test)]
mod tests {
    use super::unreadable_folder;

    #[test]
    fn folders_a_url_would_resolve_elsewhere_are_never_read() {
        for key in [
            "jobforge/requests/../",
            "jobforge/requests/./",
            "jobforge/requests/%2E%2E/",
            "jobforge/requests/.%2e/",
            "jobforge/requests/a?b/",
            "jobforge/requests/a#b/",
            "jobforge/requests/a\\b/",
            "jobforge/requests//",
        ] {
            assert_eq!(unreadable_folder(key), key.strip_suffix('/'), "{key}");
        }
        for key in [
            "jobforge/requests/team-a/",
            "jobforge/requests/...x/",
            "jobforge/requests/a.b/",
            "jobforge/requests/x",
        ] {
            assert_eq!(unreadable_folder(key), None, "{key}");
        }
    }
}
