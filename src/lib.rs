//! kubedirector-rs: the operator library.
