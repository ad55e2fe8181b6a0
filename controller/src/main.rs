//! `jobforge-controller`.
fn main() {}
