//! A test bed for kube-proxy-rs: nodes, pods and clients in network namespaces on one
//! machine, with real links, addresses, routes and backend servers. Everything a test
//! creates is removed when its handles drop, even when the test panics.
//!
//! Needs root (tests run as root here and in CI).

pub mod netns;
pub mod vm;

pub use netns::Netns;

/// Errors building or using the test bed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        message: String,
    },
    /// A thread inside a namespace panicked.
    #[error("a thread inside a namespace panicked")]
    ThreadPanicked,
}
pub mod backend;
pub mod client;
pub mod cluster;

pub use cluster::{Cluster, Host, Node};
