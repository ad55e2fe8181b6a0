//! The `jobforge` command.
fn main() {}
