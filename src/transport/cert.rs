//! The mock's TLS side: a server configuration from PEM files, or from a
//! CA and a leaf certificate made at start (`run --mock-tls`), whose CA
//! only that run trusts.

use super::trust::{pem_certificates, pem_error, provider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// A server configuration and, when it was made here, its CA (DER) for
/// the client to trust.
pub struct ServerTls {
    /// What the mock's shards hand each accepted connection.
    pub config: Arc<ServerConfig>,
    /// The CA that signed the leaf, when generated here.
    pub ca_der: Option<Vec<u8>>,
    /// The CA as PEM, when generated here (to write for other clients).
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// Names the generated leaf is valid for: what a loopback target uses.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl ServerTls {
    /// From a certificate chain and a private key in PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, String> {
        let chain = pem_certificates("tls-cert", cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {}", key.display(), pem_error(e)))?;
        Ok(ServerTls {
            config: server_config(chain, key)?,
            ca_der: None,
            ca_pem: None,
        })
    }

    /// A fresh CA and a leaf it signed for the loopback names.
    pub fn self_signed() -> Result<ServerTls, String> {
        let fail = |e: rcgen::Error| format!("TLS: cannot make the mock's certificate: {e}");
        let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "loadtest mock CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(fail)?;
        let leaf_key = rcgen::KeyPair::generate().map_err(fail)?;
        let names: Vec<String> = LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .map_err(fail)?
            .signed_by(&leaf_key, &ca)
            .map_err(fail)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let chain = vec![leaf.der().clone()];
        Ok(ServerTls {
            config: server_config(chain, key)?,
            ca_der: Some(ca.der().to_vec()),
            ca_pem: Some(ca.pem()),
        })
    }
}

/// TLS 1.3 and 1.2, ALPN `http/1.1`, stateless resumption tickets (no
/// session cache shared between the mock's shards).
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS: the certificate and key do not make a server: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| format!("TLS: cannot make a ticket key: {e}"))?;
    Ok(Arc::new(config))
}
