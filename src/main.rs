//! The kubedirector binary.
fn main() {}
