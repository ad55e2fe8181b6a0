//! jobforge's clients.

pub mod consul;
