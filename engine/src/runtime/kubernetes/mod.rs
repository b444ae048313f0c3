//! The kubernetes runtime: an environment as a namespace on a cluster the team
//! already has (docs and ARCHITECTURE.md, `runtime/kubernetes/`). Only this module
//! may import kube or k8s-openapi.
//!
//! - `names`: what objects are called on the cluster ([`K8sName`]).
//! - `manifests`: the objects themselves, pure functions of the requests.
//! - `rollout`: when a roll-out is over, read off the Deployment's status.
//! - `cluster`: [`KubernetesRuntime`], which applies them with `kube`: setup
//!   (namespace and claims), roll-outs, teardown and `observe`. Images are built
//!   and pushed by the Docker engine (the release stage), as on `docker`.
//!
//! Not yet here: release commands, jobs and hooks as Jobs (`run_task` fails with
//! a message saying so).

mod cluster;
pub mod manifests;
mod names;
pub mod rollout;

pub use cluster::KubernetesRuntime;
pub use names::{K8sName, K8sNameError};
