//! jobforge's clients.

pub mod consul;
pub mod store;
