//! Registry mirrors of the build phase (issue 19): the operator's `build.registry_mirrors`
//! (`<prefix>/config`, [`crate::config`]) rendered as a `containers-registries.conf(5)` version 2
//! document, which the build script writes to `local/registries.conf` and names in
//! `CONTAINERS_REGISTRIES_CONF` for `buildah bud`.
//!
//! Why the environment variable: buildah 1.28 reads it (and its hidden `--registries-conf` flag)
//! into `SystemContext.SystemRegistriesConfPath` (buildah `pkg/parse/parse.go`,
//! `SystemContextFromOptions`); checked here with buildah 1.28.2 pulling
//! `FROM debian:bookworm-slim` from a loopback mirror (`tests/tests/registry_mirrors.rs`). The
//! file REPLACES the client's `/etc/containers/registries.conf` for the build (the
//! `registries.conf.d/` drop-ins of the client, such as Debian's `shortnames.conf` aliases, still
//! apply on top, and one of them naming the same prefix wins). So the rendered document also sets
//! `unqualified-search-registries = ["docker.io"]`: a short name (`FROM debian:bookworm-slim`)
//! means Docker Hub, as it does for Docker.
//!
//! Shape: one `[[registry]]` per distinct prefix, in the order the operator first names it, with
//! `prefix = location = <prefix>` (the original stays the last source tried) and one
//! `[[registry.mirror]]` per entry, in order, `insecure` as configured. containers/image tries
//! the mirrors in order, then the original (`docker/docker_image_src.go`, `newImageSource`;
//! `pkg/sysregistriesv2`, `PullSourcesFromReference`). A mirror location replaces the matched
//! prefix: prefix `docker.io`, mirror `mirror.internal:5000/hub` pulls
//! `docker.io/library/debian:bookworm-slim` as `mirror.internal:5000/hub/library/debian:bookworm-slim`.
//!
//! Credentials: containers/image looks up credentials for the reference it is about to contact,
//! so a mirror gets the authfile's entry for the mirror's own host, never the original's
//! (`pkg/docker/config`, `GetCredentialsForRef`, called per pull source). The build task logs in
//! only `registry_url`'s host and `pull_registry` (`spec.pull_credentials_path`): a request's
//! pull credentials go to `pull_registry` itself when its mirrors fail or have no such image, and
//! never to a mirror.
//!
//! TLS: `insecure` takes effect only where the build's `--tls-verify` is not forced:
//! containers/image lets an explicit `--tls-verify` override `insecure` of registries.conf. The
//! script therefore leaves `--tls-verify` out of `buildah bud` when a registries.conf is in use
//! and registry TLS is verified (`JF_TLS_VERIFY=true`): unlisted registries are verified (the
//! default) and only a mirror the operator marked `insecure` is not. With `JF_TLS_VERIFY=false`
//! (a loopback development registry) nothing is verified, as before.
//!
//! The document is serialized with `toml` (no templating) and travels base64-encoded in
//! `JF_REGISTRIES_CONF_B64`: operator data, but still out of reach of Nomad's interpolation.

use serde::Serialize;

/// One mirror of the operator's configuration (already validated by [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryMirror {
    /// What it mirrors: `host[:port][/path]` (`docker.io`, `quay.io/org`).
    pub prefix: String,
    /// Where: `host[:port][/path]`; replaces `prefix` in a pulled reference.
    pub location: String,
    /// Plain HTTP or unverified TLS for this mirror.
    pub insecure: bool,
}

#[derive(Serialize)]
struct Conf<'a> {
    #[serde(rename = "unqualified-search-registries")]
    unqualified_search_registries: [&'a str; 1],
    registry: Vec<Registry<'a>>,
}

#[derive(Serialize)]
struct Registry<'a> {
    prefix: &'a str,
    location: &'a str,
    mirror: Vec<Mirror<'a>>,
}

#[derive(Serialize)]
struct Mirror<'a> {
    location: &'a str,
    insecure: bool,
}

/// The registries.conf v2 text of `mirrors` (module docs), or `None` without mirrors (the build
/// then uses the client's own registries.conf, as before).
///
/// Errors: none in practice; a serializer failure is reported as its message.
pub fn registries_conf(mirrors: &[RegistryMirror]) -> Result<Option<String>, String> {
    if mirrors.is_empty() {
        return Ok(None);
    }
    let mut registry: Vec<Registry<'_>> = Vec::new();
    for m in mirrors {
        let mirror = Mirror {
            location: &m.location,
            insecure: m.insecure,
        };
        match registry.iter_mut().find(|r| r.prefix == m.prefix) {
            Some(r) => r.mirror.push(mirror),
            None => registry.push(Registry {
                prefix: &m.prefix,
                location: &m.prefix,
                mirror: vec![mirror],
            }),
        }
    }
    let conf = Conf {
        unqualified_search_registries: ["docker.io"],
        registry,
    };
    toml::to_string(&conf)
        .map(|mut s| {
            s.insert_str(
                0,
                "# jobforge: registry mirrors of <prefix>/config build.registry_mirrors\n",
            );
            s
        })
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(prefix: &str, location: &str, insecure: bool) -> RegistryMirror {
        RegistryMirror {
            prefix: prefix.into(),
            location: location.into(),
            insecure,
        }
    }

    #[test]
    fn no_mirrors_no_file() {
        assert_eq!(registries_conf(&[]).unwrap(), None);
    }

    #[test]
    fn mirrors_are_grouped_by_prefix_in_order() {
        let text = registries_conf(&[
            m("docker.io", "mirror.internal:5000/hub", false),
            m("quay.io/org", "127.0.0.1:5000/quay-org", true),
            m("docker.io", "mirror2.internal", false),
        ])
        .unwrap()
        .unwrap();
        insta::assert_snapshot!(text);
        // What containers/image reads back: the same structure.
        let v: toml::Value = toml::from_str(&text).unwrap();
        let regs = v["registry"].as_array().unwrap();
        assert_eq!(regs.len(), 2);
        assert_eq!(regs[0]["prefix"].as_str(), Some("docker.io"));
        assert_eq!(regs[0]["mirror"].as_array().unwrap().len(), 2);
        assert_eq!(regs[1]["mirror"][0]["insecure"].as_bool(), Some(true));
    }

    #[test]
    fn values_are_toml_strings_not_text() {
        // The config grammar refuses such values; the serializer would still keep them strings.
        let text = registries_conf(&[m("a\"\n[x]", "b", false)])
            .unwrap()
            .unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["registry"][0]["prefix"].as_str(), Some("a\"\n[x]"));
        assert!(v.get("x").is_none());
    }
}
