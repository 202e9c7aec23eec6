//! Integration tests: real processes, real SQLite, real cgroups where present.

mod helper;
mod suite;
