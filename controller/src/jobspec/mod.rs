//! jobspec (being written).
