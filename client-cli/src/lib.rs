//! jobforge's clients.
