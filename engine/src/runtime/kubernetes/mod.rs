//! The kubernetes runtime: an environment as a namespace on a cluster the team
//! already has (docs and ARCHITECTURE.md, `runtime/kubernetes/`). Only this module
//! may import kube or k8s-openapi.
//!
//! What is here so far: the names objects get on the cluster ([`K8sName`]) and the
//! objects themselves (`manifests`), when a roll-out is over (`rollout`). The runtime that applies them (server-side
//! apply, roll-outs, Jobs, teardown, observe) is still to come.

pub mod manifests;
mod names;
pub mod rollout;

pub use names::{K8sName, K8sNameError};
