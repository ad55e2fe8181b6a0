//! machine (being written).
