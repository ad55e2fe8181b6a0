//! Where the controller may send a request-controlled HTTP call (today: webhooks).
//!
//! A webhook URL is written by a tenant, and the controller runs next to Consul, Nomad, Vault and a
//! cloud metadata service. So an address is allowed only when it is a public unicast address, or
//! lies in a CIDR the operator allowlisted (`tenancy.webhook_allow_cidrs` of `<prefix>/config`; the
//! quickstart allows `127.0.0.0/8`). Refused by default ([`is_internal`]): loopback, RFC 1918
//! private, link-local (`169.254.0.0/16`, where cloud metadata lives; `fe80::/10`), unique-local
//! (`fc00::/7`), CGNAT shared space (`100.64.0.0/10`), `0.0.0.0/8`, multicast, broadcast, reserved
//! (`240.0.0.0/4`), benchmarking (`198.18.0.0/15`), IETF protocol assignments (`192.0.0.0/24`), the
//! unspecified addresses, and IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`,
//! IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), judged by the address they embed.
//!
//! The check is made **after DNS resolution and on the address actually dialled**: the client's
//! resolver ([`GuardedResolver`]) hands the connector only allowed addresses, so a name that
//! resolves to a private address (or is re-bound between a check and the connect) never reaches
//! it. IP-literal hosts skip resolvers in hyper's connector, so [`EgressPolicy::check_url`] checks
//! them before the request. Redirects are not followed and proxies from the environment are not
//! used ([`client`]). OWASP's SSRF prevention cheat sheet describes the same layers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// The text recorded (in tenant-readable status) when a destination is refused. Never the
/// address, the resolver's error or anything else about the controller's network.
pub const NOT_ALLOWED: &str = "destination not allowed";

/// The error of a refused destination; found in a `reqwest::Error`'s source chain by
/// [`is_not_allowed`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("destination not allowed")]
pub struct DestinationNotAllowed;

/// Which addresses request-controlled calls may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
}

impl EgressPolicy {
    /// A policy that also allows the given CIDRs (`127.0.0.0/8`, `::1/128`, `10.1.2.3/32`).
    ///
    /// Errors: the first entry that is not a CIDR, as `"<entry>" is not a CIDR …`.
    pub fn new<S: AsRef<str>>(allow_cidrs: &[S]) -> Result<EgressPolicy, String> {
        let allow = allow_cidrs
            .iter()
            .map(|c| {
                let c = c.as_ref();
                c.parse::<IpNet>()
                    .map_err(|e| format!("{c:?} is not a CIDR like 127.0.0.0/8 or fd00::/8: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EgressPolicy { allow })
    }

    /// Whether `ip` may be dialled: public, or inside an allowlisted CIDR.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !is_internal(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Checks a URL whose host is an IP literal (`http://169.254.169.254/`, `http://[::1]:80/`);
    /// names are checked by [`GuardedResolver`] when they are resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), DestinationNotAllowed> {
        let Some(host) = url.host_str() else {
            return Err(DestinationNotAllowed);
        };
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = literal.parse::<IpAddr>() else {
            return Ok(());
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(DestinationNotAllowed)
        }
    }
}

/// The IPv4 address an IPv6 address embeds (mapped, compatible, NAT64, 6to4), else the address.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let embedded =
        |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    // IPv4-compatible ::a.b.c.d (deprecated, RFC 4291 §2.5.5.1), but not :: and ::1.
    if s[..6] == [0; 6] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
        return embedded(s[6], s[7]);
    }
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return embedded(s[6], s[7]);
    }
    // 6to4 2002:a.b.c.d::/48 (RFC 3056).
    if s[0] == 0x2002 {
        return embedded(s[1], s[2]);
    }
    ip
}

/// Whether `ip` is an internal, special-purpose or otherwise non-public address (see the module
/// docs for the list; from the IANA IPv4/IPv6 special-purpose address registries).
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let s0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s0 & 0xfe00) == 0xfc00
                || (s0 & 0xffc0) == 0xfe80
                || (s0 & 0xffc0) == 0xfec0
                || (s0 == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// A DNS resolver that returns only the addresses `policy` permits, and fails with
/// [`DestinationNotAllowed`] when none is left. Resolution itself is the system's
/// (`getaddrinfo`, through tokio).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<EgressPolicy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    Box::new(DestinationNotAllowed) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for request-controlled destinations: the [`GuardedResolver`], no redirects,
/// no proxy from the environment, `timeout` per request.
///
/// Errors: the TLS backend failing to initialise (reqwest's builder error).
pub fn client(policy: Arc<EgressPolicy>, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver::new(policy)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .build()
}

/// Whether `err` (or any error in its source chain) is [`DestinationNotAllowed`].
pub fn is_not_allowed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<DestinationNotAllowed>() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn internal_and_special_addresses_are_refused_by_default() {
        let p = EgressPolicy::default();
        for a in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.170",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
        ] {
            assert!(!p.permits(ip(a)), "{a} must be refused");
        }
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.permits(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn an_allowlisted_cidr_is_permitted_and_nothing_else_is() {
        let p = EgressPolicy::new(&["127.0.0.0/8"]).expect("cidr");
        assert!(p.permits(ip("127.0.0.1")));
        assert!(
            p.permits(ip("::ffff:127.0.0.1")),
            "mapped form of an allowed address"
        );
        assert!(!p.permits(ip("::1")));
        assert!(!p.permits(ip("169.254.169.254")));
        let err = EgressPolicy::new(&["localhost"]).unwrap_err();
        assert!(err.contains("\"localhost\" is not a CIDR"), "{err}");
    }

    #[test]
    fn ip_literal_urls_are_checked_before_any_request() {
        let p = EgressPolicy::default();
        for u in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8500/v1/kv/x",
            "http://[::1]:4646/v1/jobs",
            "http://[::ffff:a9fe:a9fe]/",
        ] {
            let url = reqwest::Url::parse(u).expect("url");
            assert!(p.check_url(&url).is_err(), "{u}");
        }
        let url = reqwest::Url::parse("https://hooks.example.com/x").expect("url");
        assert!(p.check_url(&url).is_ok(), "names are checked at resolution");
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_and_recognised() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = server.local_addr().expect("addr").port();
        let c = client(Arc::new(EgressPolicy::default()), Duration::from_secs(5)).expect("client");
        let err = c
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .expect_err("localhost resolves to loopback");
        assert!(is_not_allowed(&err), "{err:?}");

        let allowed = client(
            Arc::new(EgressPolicy::new(&["127.0.0.0/8", "::1/128"]).expect("cidr")),
            Duration::from_secs(5),
        )
        .expect("client");
        let accept = tokio::spawn(async move { server.accept().await.map(|_| ()) });
        // The connection is made (the server never answers, so the request itself times out or
        // is reset: either way it was not refused by the policy).
        let res = tokio::time::timeout(
            Duration::from_secs(2),
            allowed.post(format!("http://localhost:{port}/hook")).send(),
        )
        .await;
        if let Ok(Err(e)) = &res {
            assert!(!is_not_allowed(e), "{e:?}");
        }
        accept
            .await
            .expect("join")
            .expect("the allowlisted address is dialled");
    }
}
