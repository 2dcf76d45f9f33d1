//! The TLS configuration of the verifying client, whose trusted roots (Mozilla's
//! and the system's, as reqwest's `rustls-tls` and `rustls-tls-native-roots` give
//! them) are read at the first certificate to verify, not when the client is made:
//! reading the system's store takes about 10 ms, and a build that talks only to a
//! plain-HTTP registry (a local one: the HTTPS probe fails before any certificate)
//! never needs it.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// A rustls client config as reqwest builds its own (every TLS version, SNI,
/// ALPN h2 then HTTP/1.1, no client certificate), with [`LazyRoots`].
pub(super) fn client_config() -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LazyRoots::new(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// The process's default provider if one is installed, else ring (reqwest's rule).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Verifies server certificates with webpki against roots loaded once, on first use.
#[derive(Debug)]
pub(super) struct LazyRoots {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl LazyRoots {
    fn new(provider: Arc<CryptoProvider>) -> LazyRoots {
        LazyRoots {
            provider,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&Arc<WebPkiServerVerifier>, Error> {
        self.verifier
            .get_or_init(|| {
                let roots = roots(rustls_native_certs::load_native_certs().certs);
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| format!("no usable root certificates: {e}"))
            })
            .as_ref()
            .map_err(|e| Error::General(e.clone()))
    }
}

/// Mozilla's roots and the system's; certificates the store cannot parse are
/// skipped, as reqwest skips them.
fn roots(native: Vec<CertificateDer<'static>>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in native {
        let _ = roots.add(cert);
    }
    roots
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mozillas_roots_are_there_without_the_systems() {
        assert_eq!(
            roots(Vec::new()).len(),
            webpki_roots::TLS_SERVER_ROOTS.len()
        );
    }

    #[test]
    fn nothing_is_loaded_until_a_certificate_is_verified() {
        let tls = client_config().expect("ring supports every TLS version");
        assert_eq!(tls.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let lazy = LazyRoots::new(provider());
        assert!(lazy.verifier.get().is_none());
        assert!(!lazy.supported_verify_schemes().is_empty());
    }

    #[test]
    fn a_certificate_no_root_signed_is_refused() {
        let lazy = LazyRoots::new(provider());
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let name = ServerName::try_from("registry.example").expect("a DNS name");
        let verified = lazy.verify_server_cert(&junk, &[], &name, &[], UnixTime::now());
        assert!(verified.is_err());
        assert!(lazy.verifier.get().is_some());
    }
}
