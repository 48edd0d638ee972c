//! TLS for the TCP listener (`chaos serve --listen ADDR --tls-cert FILE --tls-key FILE`):
//! rustls with the ring provider, TLS 1.2 and 1.3, HTTP/1.1 only (as on the unix socket).
//!
//! Both files are PEM: the certificate file holds the server's certificate first, then any
//! intermediates; the key file one private key (PKCS#8, PKCS#1 or SEC1). They are read and checked
//! before the daemon binds, so a wrong file stops it with a message naming the file and the
//! problem rather than failing every handshake later.

use std::{path::Path, sync::Arc};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use crate::error::{Error, IoContext, Result};

/// The certificate and key files of a TLS listener, as given on the command line.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own first.
    pub cert: std::path::PathBuf,
    /// PEM private key matching the certificate.
    pub key: std::path::PathBuf,
}

/// Reads `files` and builds the server's rustls configuration. Refuses a file with no
/// certificate or no key, an unparsable one, and a key that is not the certificate's.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::invalid(
                "tls-cert",
                format!("rustls refused its default protocols ({e})"),
                "this is a bug",
            )
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| key_error(files, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The chain in the PEM file `path`.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let pem = std::fs::read(path).ctx(|| format!("reading the TLS certificate {shown}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::invalid(
                "tls-cert",
                format!("{shown} is not a readable PEM file ({e})"),
                "give the certificate in PEM (-----BEGIN CERTIFICATE-----)",
            )
        })?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "tls-cert",
            format!("{shown} holds no certificate"),
            "give the certificate in PEM (-----BEGIN CERTIFICATE-----); the key goes in --tls-key",
        ));
    }
    Ok(certs)
}

/// The private key in the PEM file `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let shown = path.display();
    let pem = std::fs::read(path).ctx(|| format!("reading the TLS key {shown}"))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let problem = match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!("{shown} holds no private key"),
            e => format!("{shown} is not a readable PEM file ({e})"),
        };
        Error::invalid(
            "tls-key",
            problem,
            "give the certificate's private key in PEM (-----BEGIN PRIVATE KEY-----, unencrypted)",
        )
    })
}

/// The message for rustls refusing the pair.
fn key_error(files: &TlsFiles, e: rustls::Error) -> Error {
    let (cert, key) = (files.cert.display(), files.key.display());
    match e {
        rustls::Error::InconsistentKeys(_) => Error::invalid(
            "tls-key",
            format!("the key in {key} is not the key of the certificate in {cert}"),
            "give the private key the certificate was made for",
        ),
        e => Error::invalid(
            "tls-key",
            format!("rustls refused the key {key} with the certificate {cert}: {e}"),
            "give an RSA, ECDSA or Ed25519 key and its certificate",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` to a fresh file in the temp directory.
    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("chaos-tls-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn refuses_files_without_pem() {
        let junk = file("junk", "not pem\n");
        let files = TlsFiles {
            cert: junk.clone(),
            key: junk.clone(),
        };
        let e = server_config(&files).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        assert_eq!(server_config(&files).unwrap_err().field(), Some("tls-cert"));
        let e = read_key(&junk).unwrap_err().to_string();
        assert!(e.contains("holds no private key"), "{e}");
        let e = server_config(&TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: junk.clone(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
        let _ = std::fs::remove_file(junk);
    }
}
