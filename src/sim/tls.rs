//! Per-BMC TLS: each simulated BMC gets its own self-signed certificate,
//! like a factory-fresh BMC, and speaks TLS 1.2 and 1.3.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Digest as _;

/// A BMC's certificate and the server config that presents it.
pub struct BmcTls {
    /// The server side.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate in PEM, for clients that want to trust it.
    pub cert_pem: String,
    /// SHA-256 of the DER certificate, as `AA:BB:…` (what a pin records).
    pub fingerprint: String,
}

/// Makes a self-signed certificate for a BMC at `ip`, named `name`.
pub fn self_signed(name: &str, ip: IpAddr) -> anyhow::Result<BmcTls> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}-bmc")])?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} BMC"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "kiln virtual rack");
    let cert = params.self_signed(&key)?;
    let der = cert.der().clone();
    let fingerprint = fingerprint(&der);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = server_config(vec![der], key)?;
    Ok(BmcTls {
        config,
        cert_pem: cert.pem(),
        fingerprint,
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // One config serves one BMC, whose clients are a handful of kiln
    // connections: rustls' default cache of 256 sessions per BMC spread
    // each ticket's insert over a table of tens of kilobytes, which at
    // 12,500 BMCs was a tenth of the simulator's memory.
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(8);
    Ok(Arc::new(config))
}

/// `AA:BB:…` SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
