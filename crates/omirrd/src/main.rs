//! The omirrd binary.
fn main() {}
