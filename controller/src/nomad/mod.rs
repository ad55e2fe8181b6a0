//! Nomad: the HTTP client and the typed job specification.

pub mod job;
