//! The one way the Nomad emulator reads a query string: [`Params`], an axum extractor over
//! `application/x-www-form-urlencoded` pairs (percent-decoded, `+` as space, as Go's
//! `url.ParseQuery`). Repeated keys are kept in order (`topic=A&topic=B` on the event stream);
//! [`Params::get`] returns the first value, as Go's `Values.Get` does.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The decoded query pairs of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a raw query string (without `?`); malformed escapes decode lossily, as Go's.
    pub fn parse(raw: &str) -> Params {
        Params(
            url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `true`/`1` (any case), as Nomad's `parseBool` accepts; false when absent.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params::parse(parts.uri.query().unwrap_or("")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_and_repeated_keys_kept() {
        let p = Params::parse("topic=Job%3Aa&topic=Allocation:*&index=7&plain=True&x=a+b");
        assert_eq!(
            p.all("topic").collect::<Vec<_>>(),
            vec!["Job:a", "Allocation:*"]
        );
        assert_eq!(p.get("topic"), Some("Job:a"));
        assert_eq!(p.get("index"), Some("7"));
        assert!(p.flag("plain"));
        assert!(!p.flag("follow"));
        assert_eq!(p.get("x"), Some("a b"));
        assert_eq!(Params::parse(""), Params::default());
    }
}
