//! The client's TLS configuration: which certificates it trusts, whether
//! it resumes sessions, and what it offers (ALPN `http/1.1`).
//!
//! Crypto is rustls' `ring` provider and the roots are the operating
//! system's store read through `rustls-native-certs` (DESIGN.md, "TLS",
//! says why). Each shard gets its own `ClientConfig` so its session cache
//! is its own: no lock shared between shards on a reconnect.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// Sessions each shard remembers for resumption (rustls keeps a few
/// tickets per server name inside each).
const SESSION_CACHE_ENTRIES: usize = 256;

/// What a run trusts and how it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `--cacert` files, added to the roots.
    pub cacert: Vec<PathBuf>,
    /// `--insecure`: no certificate verification at all.
    pub insecure: bool,
    /// `--no-tls-resume` unset: resume sessions on reconnect.
    pub resume: bool,
    /// Roots given in memory (the in-process mock's CA), DER.
    pub extra_roots: Vec<Vec<u8>>,
}

/// The trust decisions made once per run, shared by every shard's config.
#[derive(Debug, Clone)]
pub struct Trust {
    base: Arc<ClientConfig>,
    resume: bool,
    /// Root certificates in use (0 with `--insecure`).
    pub roots: usize,
    /// Certificates of the system store that could not be used.
    pub system_errors: usize,
}

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Trust {
    /// Reads the roots (system store unless `--insecure`, plus `--cacert`
    /// and in-memory roots) and builds the shared part of the config.
    /// Errors name the file and what is wrong with it.
    pub fn load(options: &TlsOptions) -> Result<Trust, String> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut config, roots, system_errors) = if options.insecure {
            let verifier = Arc::new(NoVerification(provider));
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            (config, 0, 0)
        } else {
            let (store, system_errors) = roots(options)?;
            let n = store.len();
            (
                builder.with_root_certificates(store).with_no_client_auth(),
                n,
                system_errors,
            )
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // With resumption, each shard's `config` gets a cache of its own.
        if !options.resume {
            config.resumption = Resumption::disabled();
        }
        Ok(Trust {
            base: Arc::new(config),
            resume: options.resume,
            roots,
            system_errors,
        })
    }

    /// A configuration of its own (its own session cache) for one shard
    /// or one preflight check.
    pub fn config(&self) -> Arc<ClientConfig> {
        let mut config = (*self.base).clone();
        if self.resume {
            config.resumption = Resumption::in_memory_sessions(SESSION_CACHE_ENTRIES);
        }
        Arc::new(config)
    }
}

/// The root store: the system's, `--cacert` files and in-memory roots.
fn roots(options: &TlsOptions) -> Result<(RootCertStore, usize), String> {
    let mut store = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    let (_, mut unusable) = store.add_parsable_certificates(system.certs);
    unusable += system.errors.len();
    for path in &options.cacert {
        let shown = path.display();
        for cert in pem_certificates("cacert", path)? {
            store
                .add(cert)
                .map_err(|e| format!("--cacert {shown}: not a usable CA certificate: {e}"))?;
        }
    }
    for der in &options.extra_roots {
        store
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| format!("TLS: the mock's CA certificate is not usable: {e}"))?;
    }
    Ok((store, unusable))
}

/// The certificates in a PEM file (at least one), or an error naming
/// `--flag` and the file.
pub fn pem_certificates(
    flag: &str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--{flag} {shown}: {}", pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!("--{flag} {shown}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// A PEM reading error in a few words.
pub fn pem_error(error: rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// The name a certificate must carry for `host` (a DNS name or an IP
/// literal, IPv6 without brackets).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("`{host}` is not a valid TLS server name"))
}

/// `--insecure`: accepts any certificate, still checks the handshake's
/// signatures (so the connection is at least to whoever holds the key it
/// showed).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
