//! Trusting a BMC's certificate. BMCs ship self-signed certificates, so
//! kiln pins each one by the SHA-256 fingerprint of its DER encoding (from
//! the inventory, or recorded on first contact). A pinned connection still
//! checks that the server holds the certificate's key (the handshake
//! signature); it skips only the chain and name checks a pin replaces.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest as _;

use crate::inventory::Fingerprint;

/// The fingerprint of a DER certificate.
pub fn fingerprint_of(der: &[u8]) -> Fingerprint {
    Fingerprint(sha2::Sha256::digest(der).into())
}

/// Which certificates a [`PinnedVerifier`] accepts.
#[derive(Debug)]
enum Accept {
    /// Exactly this one.
    Pin(Fingerprint),
    /// Any, noting the fingerprint seen (`kiln bmc trust`).
    Record(Arc<Mutex<Option<Fingerprint>>>),
    /// Any (the inventory's explicit `insecure`); logged on every use.
    Any(String),
}

/// Accepts one certificate by fingerprint (or, for recording and the
/// explicit `insecure` policy, any certificate), while still checking the
/// handshake signature.
#[derive(Debug)]
pub struct PinnedVerifier {
    accept: Accept,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint_of(end_entity.as_ref());
        match &self.accept {
            Accept::Pin(pin) if seen == *pin => Ok(ServerCertVerified::assertion()),
            Accept::Pin(pin) => Err(rustls::Error::General(format!(
                "certificate fingerprint {seen} does not match the pinned {pin}"
            ))),
            Accept::Record(slot) => {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
                Ok(ServerCertVerified::assertion())
            }
            Accept::Any(node) => {
                tracing::warn!(
                    "{node}: TLS verification is OFF for this BMC (tls: insecure); accepting certificate {seen}"
                );
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One crypto provider for every BMC's config.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::LazyLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    Arc::clone(&PROVIDER)
}

/// Each BMC has its own config (its own pin), so its session store holds
/// that BMC alone.
fn small_resumption() -> rustls::client::Resumption {
    rustls::client::Resumption::store(Arc::new(crate::bmc::resumption::OneServer::default()))
}

fn with_verifier(accept: Accept) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        accept,
        provider: Arc::clone(&provider),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = small_resumption();
    Ok(Arc::new(config))
}

/// A client config that trusts only the certificate with fingerprint `pin`.
pub fn pinned(pin: Fingerprint) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    with_verifier(Accept::Pin(pin))
}

/// A client config that accepts any certificate and stores the
/// fingerprint it saw in `seen` (for recording trust on first contact).
pub fn recording(
    seen: Arc<Mutex<Option<Fingerprint>>>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    with_verifier(Accept::Record(seen))
}

/// A client config that accepts any certificate, warning on every
/// connection that `node`'s BMC is not verified.
pub fn insecure(node: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    with_verifier(Accept::Any(node.to_owned()))
}

/// A client config that verifies the chain against the CA certificates in
/// the PEM file `bundle`, and the BMC's address against the certificate.
pub fn ca_bundle(bundle: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(bundle)
        .with_context(|| format!("reading CA bundle {}", bundle.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("reading CA bundle {}", bundle.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {} is not a usable CA", bundle.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("CA bundle {} holds no certificates", bundle.display());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = small_resumption();
    Ok(Arc::new(config))
}
