//! vault (being written).
