//! Configuration injection into members (spec section 4), as pure data and functions:
//! [`configmeta`] (4.2-4.3), [`script`] (the in-guest scripts of 4.1, 4.4, 4.5 and 4.10 and the
//! parser of their reports), [`secretkeys`] (4.9). The pass decides which job each member needs
//! (`plan::pass::members`); the ClusterActor hands jobs to ConfigJobActors and feeds their reports
//! back into the next pass.

pub mod configmeta;
pub mod connections;
pub mod member;
pub mod script;
pub mod secretkeys;
