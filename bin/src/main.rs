//! The `ringcast` command (placeholder; being written).
fn main() {}
