//! Test support that the quickstart and the benchmarks may use too: a real local Kubernetes
//! control plane built from Go modules, and ports for the children it starts.

pub mod controlplane;
pub mod ports;

pub use controlplane::ControlPlane;
pub use ports::free_port;
