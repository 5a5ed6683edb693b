//! Benchmarks for kube-proxy-rs: a generator of cluster-sized inputs and the
//! measurements the `kpr-bench` binary prints.

pub mod generate;
