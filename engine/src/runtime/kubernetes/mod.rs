//! The kubernetes runtime: an environment as a namespace on a cluster the team
//! already has (docs and ARCHITECTURE.md, `runtime/kubernetes/`). Only this module
//! may import kube or k8s-openapi.
//!
//! What is here so far: the names objects get on the cluster ([`K8sName`]). The
//! runtime itself (server-side apply of Deployments, Services, ConfigMaps, Secrets
//! and PersistentVolumeClaims; roll-outs; Jobs) is still to come.

mod names;

pub use names::{K8sName, K8sNameError};
