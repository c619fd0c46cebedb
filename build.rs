//! Nothing to build: this script exists so that the `openblas-build` build-dependency (pinned for
//! its TLS feature, see Cargo.toml) is part of the graph.
fn main() {}
