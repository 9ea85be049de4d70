//! Test support that the quickstart and the benchmarks may use too: a real local Kubernetes
//! control plane built from Go modules, a real node beside it (tests/e2e_node.rs), and ports
//! for the children they start.

pub mod controlplane;
pub mod hoststate;
pub mod node;
pub mod ports;

pub use controlplane::ControlPlane;
pub use ports::free_port;
