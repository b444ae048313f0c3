//! TLS for shiplog's HTTP clients (reqwest): rustls with its `ring` provider.
//!
//! reqwest is built without a provider of its own (its default, aws-lc, needs a
//! C toolchain with cmake), so every client must be built after one is
//! installed: [`client_builder`] installs `ring` as the process's default
//! provider first, once, and is the one way shiplog (and its tests) build a client.
//! A default installed earlier by someone else is kept.

/// Installs rustls's `ring` provider as the process default, unless one is set.
pub fn install_provider() {
    // `Err` only says a default was installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder whose TLS works (see the module doc).
pub fn client_builder() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder()
}
