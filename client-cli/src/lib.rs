//! jobforge's clients.

pub mod store;
