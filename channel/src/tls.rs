//! Loading the deployment's certificates and building rustls configurations that require a
//! certificate from the same CA on both ends.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// This host's certificate and key, and the CA its peers' certificates must come from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |reason: String| TlsError::Read {
        path: path.into(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        path: path.into(),
        reason: e.to_string(),
    })
}

fn roots(ca: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", ca.display())))?;
    }
    Ok(Arc::new(roots))
}

/// The controller's side: TLS 1.2/1.3, a client certificate from `files.ca` required.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let p = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, p.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.cert.display())))?;
    // Connections are long-lived; nothing to resume.
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The switch's side: the server must present a certificate from `files.ca`; ours goes along.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.cert.display())))?;
    Ok(Arc::new(cfg))
}

/// Whether an (already verified) certificate is valid for DNS name `name`.
pub(crate) fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert).is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::{dpid_name, Channel, CONTROLLER_NAME};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::Command;

    /// A directory removed when the test ends, pass or fail.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for Dir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    /// Certificates from scripts/pki.sh in a fresh directory.
    fn pki(tag: &str, switches: &[&str]) -> Dir {
        let dir = std::env::temp_dir().join(format!("cloudrack-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pki.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(script).arg(&dir);
        for s in switches {
            cmd.args(["--switch", s]);
        }
        let out = cmd.output().expect("run scripts/pki.sh");
        assert!(out.status.success(), "pki.sh: {}", String::from_utf8_lossy(&out.stderr));
        Dir(dir)
    }

    fn files(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.pem"),
        }
    }

    /// A server on loopback that accepts one TLS connection and echoes what it reads, with
    /// the client's identity check result first.
    fn echo_server(cfg: Arc<rustls::ServerConfig>, dpid: u64) -> (u16, std::thread::JoinHandle<Result<(), String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().map_err(|e| e.to_string())?;
            let ch = Channel::tls_server(s, cfg).map_err(|e| e.to_string())?;
            let mut w = ch.clone();
            w.write_all(&[u8::from(ch.peer_names_dpid(dpid))])
                .map_err(|e| e.to_string())?;
            let mut r = ch.clone();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                w.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            }
        });
        (port, h)
    }

    #[test]
    fn mutual_tls_carries_bytes_and_names_the_dpid() {
        let dir = pki("ok", &["a1"]);
        let (port, server) = echo_server(server_config(&files(&dir, "controller")).unwrap(), 0xa1);
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let cfg = client_config(&files(&dir, "switch-00000000000000a1")).unwrap();
        let ch = Channel::tls_client(s, cfg, CONTROLLER_NAME).unwrap();
        assert!(ch.is_tls());
        let (mut r, mut w) = (ch.clone(), ch.clone());
        let mut first = [0u8; 1];
        r.read_exact(&mut first).unwrap();
        assert_eq!(first[0], 1, "the server did not see dpid a1 in our certificate");
        // Large enough to need many records and several flushes, both ways at once.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let expect = data.clone();
        let writer = std::thread::spawn(move || w.write_all(&data).unwrap());
        let mut got = vec![0u8; expect.len()];
        r.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == expect, "bytes changed on the way");
        ch.shutdown();
        server.join().unwrap().unwrap();
        assert!(!ch.peer_names_dpid(0xa1), "the controller's certificate names no dpid");
        assert_eq!(dpid_name(0xa1), "00000000000000a1.dpid.cloudrack");
    }

    #[test]
    fn a_certificate_for_another_dpid_is_not_that_dpid() {
        let dir = pki("other", &["a1"]);
        let (port, server) = echo_server(server_config(&files(&dir, "controller")).unwrap(), 0xa2);
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let cfg = client_config(&files(&dir, "switch-00000000000000a1")).unwrap();
        let mut ch = Channel::tls_client(s, cfg, CONTROLLER_NAME).unwrap();
        let mut first = [0u8; 1];
        ch.read_exact(&mut first).unwrap();
        assert_eq!(first[0], 0);
        ch.shutdown();
        server.join().unwrap().unwrap();
    }

    #[test]
    fn a_client_from_another_ca_is_refused() {
        let good = pki("good", &[]);
        let rogue = pki("rogue", &["a1"]);
        let (port, server) = echo_server(server_config(&files(&good, "controller")).unwrap(), 0xa1);
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The rogue client trusts the real CA (it knows the controller), but its own
        // certificate comes from its own CA.
        let mut f = files(&rogue, "switch-00000000000000a1");
        f.ca = good.join("ca.pem");
        let cfg = client_config(&f).unwrap();
        let outcome = Channel::tls_client(s, cfg, CONTROLLER_NAME).and_then(|mut ch| {
            let mut b = [0u8; 1];
            ch.read_exact(&mut b)
        });
        assert!(outcome.is_err(), "a rogue client got through");
        let err = server.join().unwrap().unwrap_err();
        assert!(err.contains("TLS handshake failed"), "{err}");
    }

    #[test]
    fn a_switch_certificate_names_its_dpid_only() {
        let dir = pki("names", &["a1"]);
        let chain = certs(&dir.join("switch-00000000000000a1.pem")).unwrap();
        assert!(crate::certificates_name_dpid(Some(&chain), 0xa1));
        assert!(!crate::certificates_name_dpid(Some(&chain), 0xa2));
        assert!(!crate::certificates_name_dpid(None, 0xa1));
        assert!(!crate::certificates_name_dpid(Some(&[]), 0xa1));
        let controller = certs(&dir.join("controller.pem")).unwrap();
        assert!(!crate::certificates_name_dpid(Some(&controller), 0xa1));
    }

    #[test]
    fn missing_files_say_which() {
        let e = client_config(&TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: "/nonexistent/ca.pem".into(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
