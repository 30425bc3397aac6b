//! skiff-agent: the device daemon, its client verbs and the `skiff` multi-call binary.
//!
//! - [`board`] board configurations (`board-configs/*.toml`): target, platform, budgets
//!
//! The daemon, image store, supervisor and MQTT link arrive with their issues.

pub mod board;

pub const USAGE: &str = "\
usage: skiff COMMAND
  runtime …      the runc-compatible OCI runtime (also: this binary named skiff-runc)
  --version      version, target and commit
";

/// `skiff <version> (<target>, commit <sha>)`.
pub fn version() -> String {
    format!(
        "skiff {} ({}, commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("SKIFF_TARGET"),
        env!("SKIFF_COMMIT")
    )
}
