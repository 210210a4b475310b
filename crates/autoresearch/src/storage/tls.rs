//! TLS for the PostgreSQL storage, configured the way libpq reads it: `sslmode`
//! (`disable`, `prefer` (default), `require`, `verify-ca`, `verify-full`) and `sslrootcert`
//! (a PEM file of trusted roots, or `system` for the platform's store) from the URL's query
//! string, else from `PGSSLMODE` / `PGSSLROOTCERT`, else `~/.postgresql/root.crt` when it
//! exists. As in libpq, a root file that exists turns `prefer` and `require` into chain
//! verification (`verify-ca`), and `sslrootcert=system` only goes with `verify-full`.
//!
//! tokio-postgres parses only `disable|prefer|require` and knows no `sslrootcert`, so these
//! options are taken off the URL here, before it reaches [`postgres::Config`].
//!
//! The stack is rustls (pure Rust: building needs no OpenSSL headers) with the aws-lc-rs
//! provider passed explicitly: the workspace also enables rustls' `ring` provider elsewhere,
//! and with two compiled in, rustls' implicit process default would be ambiguous.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use postgres::config::{Host, SslMode as WireMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What went wrong setting up or negotiating TLS with the server.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A TLS option of the URL (or `PGSSL*` variable) has a value we cannot use.
    #[error("{option}={value}: {msg}")]
    Option {
        /// `sslmode`, `sslrootcert`, ...
        option: String,
        /// The value given.
        value: String,
        /// Why it cannot be used.
        msg: String,
    },
    /// The root certificate file could not be read or holds no certificate.
    #[error("sslrootcert {path}: {source}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it: the PEM reader's or rustls' error, or ours.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `verify-ca` / `verify-full` without any root to verify against.
    #[error(
        "sslmode={mode} verifies the server's certificate but there is no root certificate: \
         {default} does not exist; give sslrootcert=FILE (or sslrootcert=system for the \
         platform's trusted roots), or use sslmode=require to encrypt without verification"
    )]
    NoRootCert {
        /// The mode asked for.
        mode: &'static str,
        /// libpq's default root file, which is absent.
        default: String,
    },
    /// `sslrootcert=system` and the platform's store could not be read.
    #[error("sslrootcert=system: {0}")]
    SystemRoots(String),
    /// The TLS handshake failed for another reason than the certificate.
    #[error("TLS handshake with {host}: {source}")]
    Handshake {
        /// The server host.
        host: String,
        /// The driver's error (its source chain has the TLS error).
        source: postgres::Error,
    },
    /// The server's certificate chain does not verify against the trusted roots (unknown
    /// issuer, expired, bad signature, ...).
    #[error("certificate verification of {host} failed: {source}")]
    Certificate {
        /// The server host.
        host: String,
        /// The TLS library's verdict.
        source: rustls::Error,
    },
    /// The certificate verifies but is not issued for the host connected to
    /// (`verify-full` checks the name; `verify-ca` does not).
    #[error("the certificate of {host} is not valid for that host name: {source}")]
    Hostname {
        /// The server host.
        host: String,
        /// The TLS library's verdict.
        source: rustls::Error,
    },
    /// `sslmode=require` or stronger, and the server has TLS turned off.
    #[error("sslmode={mode} but the server does not support TLS")]
    ServerWithoutTls {
        /// The mode asked for.
        mode: &'static str,
        /// The driver's error.
        source: postgres::Error,
    },
    /// The server refused a connection without TLS: pg_hba.conf has no non-TLS entry for
    /// this user/database (for example only `hostssl` lines).
    #[error(
        "the server refused a connection without TLS (sslmode={mode}): {source}; if it \
         accepts this user only over TLS (hostssl in pg_hba.conf), connect with \
         sslmode=require or sslmode=verify-full"
    )]
    ServerRequiresTls {
        /// The mode used.
        mode: &'static str,
        /// The server's refusal.
        source: postgres::Error,
    },
}

/// libpq's `sslmode` values (`allow` is refused: tokio-postgres cannot try plaintext first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, without verification unless a root file exists.
    Prefer,
    /// TLS always, without verification unless a root file exists.
    Require,
    /// TLS, chain verified against the roots, host name not checked.
    VerifyCa,
    /// TLS, chain verified and the certificate's names must match the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(option(
                    "sslmode",
                    s,
                    "not supported (the driver cannot try without TLS first): use prefer or disable",
                ));
            }
            _ => {
                return Err(option(
                    "sslmode",
                    s,
                    "expected disable, prefer, require, verify-ca or verify-full",
                ));
            }
        })
    }
}

fn option(option: &str, value: &str, msg: &str) -> TlsError {
    TlsError::Option {
        option: option.into(),
        value: value.into(),
        msg: msg.into(),
    }
}

/// How certificates are checked, after libpq's defaults are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Encrypt only (any certificate; handshake signatures are still verified).
    Nothing,
    /// The chain must lead to a trusted root.
    Chain,
    /// Chain and host name.
    Full,
}

/// The TLS side of a connection: how to negotiate and the connector to do it with.
#[derive(Clone)]
pub struct Tls {
    mode: SslMode,
    connector: MakeRustlsConnect,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The TLS options of a URL, removed from it.
struct UrlTls {
    /// The URL without `sslmode` / `sslrootcert`.
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Decodes `%XX` escapes (URL query values).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn split_url(url: &str) -> Result<UrlTls, TlsError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(UrlTls {
            rest: url.to_string(),
            sslmode: None,
            sslrootcert: None,
        });
    };
    let (mut sslmode, mut sslrootcert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key).unwrap_or_else(|| key.to_string());
        let decoded =
            || percent_decode(value).ok_or_else(|| option(&key, value, "invalid percent-encoding"));
        match key.as_str() {
            "sslmode" => sslmode = Some(decoded()?),
            "sslrootcert" => sslrootcert = Some(decoded()?),
            // Said plainly rather than as the driver's "unknown option".
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(option(
                    &key,
                    value,
                    "client certificates and CRLs are not supported by this storage",
                ));
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(UrlTls {
        rest,
        sslmode,
        sslrootcert,
    })
}

/// libpq's default root file: `~/.postgresql/root.crt`.
fn default_root() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| TlsError::RootCert {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(Box::new(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(Box::new(e)))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| err(Box::new(e)))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsError::SystemRoots(if why.is_empty() {
            "the platform's certificate store is empty".into()
        } else {
            why
        }));
    }
    Ok(roots)
}

/// Splits the TLS options off `url`: the rest of the URL (for [`postgres::Config`]) and the
/// TLS side of the connection.
pub fn configure(url: &str) -> Result<(String, Tls), TlsError> {
    let parts = split_url(url)?;
    let root_arg = parts.sslrootcert.or_else(|| env_var("PGSSLROOTCERT"));
    let system = root_arg.as_deref() == Some("system");
    let mode = match parts.sslmode.or_else(|| env_var("PGSSLMODE")) {
        Some(m) => m.parse()?,
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(option(
            "sslmode",
            mode.as_str(),
            "weak mode with sslrootcert=system (as libpq: use verify-full)",
        ));
    }
    let root_file = match &root_arg {
        Some(_) if system => None,
        Some(path) => Some(PathBuf::from(path)),
        None => default_root().filter(|p| p.is_file()),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = if system {
        Some(system_roots()?)
    } else if let Some(path) = &root_file {
        // An explicit file that is missing is an error, not "no verification".
        Some(load_roots(path)?)
    } else {
        None
    };
    let check = match (mode, &roots) {
        (SslMode::VerifyFull, Some(_)) => Check::Full,
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => Check::Nothing,
        (_, Some(_)) => Check::Chain,
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(TlsError::NoRootCert {
                mode: mode.as_str(),
                default: default_root().map_or_else(
                    || "~/.postgresql/root.crt".into(),
                    |p| p.display().to_string(),
                ),
            });
        }
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (check, roots) {
        (Check::Nothing, _) | (_, None) => Arc::new(Unverified(provider.clone())),
        (Check::Chain, Some(roots)) => Arc::new(ChainOnly {
            roots: Arc::new(roots),
            provider: provider.clone(),
        }),
        (Check::Full, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| {
                    option(
                        "sslrootcert",
                        root_arg.as_deref().unwrap_or(""),
                        &e.to_string(),
                    )
                })?
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| option("sslmode", mode.as_str(), &e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((
        parts.rest,
        Tls {
            mode,
            connector: MakeRustlsConnect::new(config),
        },
    ))
}

impl Tls {
    /// The driver's own `sslmode` for this mode.
    pub fn wire_mode(&self) -> WireMode {
        match self.mode {
            SslMode::Disable => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        }
    }

    /// Connects, naming a TLS failure by what failed; other errors come back as they are.
    pub fn connect(
        &self,
        config: &postgres::Config,
    ) -> Result<postgres::Client, Result<TlsError, postgres::Error>> {
        config
            .connect(self.connector.clone())
            .map_err(|e| self.classify(config, e))
    }

    fn classify(
        &self,
        config: &postgres::Config,
        e: postgres::Error,
    ) -> Result<TlsError, postgres::Error> {
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default();
        if let Some(tls) = rustls_cause(&e) {
            return Ok(match tls {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => TlsError::Hostname {
                    host,
                    source: tls.clone(),
                },
                rustls::Error::InvalidCertificate(_) => TlsError::Certificate {
                    host,
                    source: tls.clone(),
                },
                _ => TlsError::Handshake { host, source: e },
            });
        }
        let text = e.to_string();
        // tokio-postgres reports a server that answers 'N' to SSLRequest with this text.
        if text.contains("server does not support TLS") {
            return Ok(TlsError::ServerWithoutTls {
                mode: self.mode.as_str(),
                source: e,
            });
        }
        if text.contains("error performing TLS handshake") {
            return Ok(TlsError::Handshake { host, source: e });
        }
        // pg_hba.conf's refusal of a plaintext connection: "no pg_hba.conf entry for host
        // ..., no encryption" (SQLSTATE 28000).
        let refused_plain = e.as_db_error().is_some_and(|db| {
            db.code() == &postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().contains("no encryption")
        });
        if refused_plain {
            return Ok(TlsError::ServerRequiresTls {
                mode: self.mode.as_str(),
                source: e,
            });
        }
        Err(e)
    }
}

/// The rustls error somewhere in `e`'s source chain. tokio-rustls wraps it in an
/// `io::Error`, whose `source()` skips the wrapped error, so each io::Error is opened too.
fn rustls_cause(e: &postgres::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls);
        }
        cur = err.source();
    }
    None
}

/// `prefer` / `require` without roots: encryption against passive eavesdropping only, as
/// libpq does; the handshake's signatures are still checked against the presented key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must reach a trusted root; the host name is not compared.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
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
    fn tls_options_leave_the_url() {
        let p = split_url(
            "postgres://u:p@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(p.rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/tmp/ca.pem"));
        let p = split_url("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(p.rest, "postgres://h/db");
    }

    #[test]
    fn bad_options_are_named() {
        assert!(matches!(
            "allow".parse::<SslMode>(),
            Err(TlsError::Option { .. })
        ));
        assert!(matches!(
            configure("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
            Err(TlsError::RootCert { .. })
        ));
        assert!(matches!(
            configure("postgres://h/db?sslmode=require&sslrootcert=system"),
            Err(TlsError::Option { .. })
        ));
        assert!(matches!(
            configure("postgres://h/db?sslcert=/c.pem"),
            Err(TlsError::Option { .. })
        ));
        assert!(matches!(
            split_url("postgres://h/db?sslrootcert=%zz"),
            Err(TlsError::Option { .. })
        ));
    }
}
