//! TLS for `_sips._tcp` probes, checked the way a SIP client checks (RFC 5922): a chain to
//! a trusted root, a certificate valid now, and a subjectAltName that names the SRV target
//! or the SIP domain (the owner name without `_sips._tcp.`). rustls with the ring provider;
//! daemon-only code, never linked into what the pipe runs.
//!
//! Trust, in this order: `ha_targets.probe_ca_file` for that target alone (a private CA
//! replaces the system roots there), else the file named by `SSL_CERT_FILE` when set (as
//! OpenSSL does), else Debian's bundle, `/etc/ssl/certs/ca-certificates.crt`.
//!
//! Whatever the verdict, the verifier records the earliest `notAfter` of the chain the
//! peer sent, so an expired certificate is reported with its date and a valid one with
//! the days it has left (`probe_ssl_earliest_cert_expiry`, as Prometheus's blackbox
//! exporter names it).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::text::date;
use anyhow::{anyhow, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore};

/// Debian's bundle of the system's trusted roots (package ca-certificates).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What the peer's chain said, kept by the verifier for the probe's caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertSeen {
    /// Earliest `notAfter` in the chain the peer sent, Unix seconds.
    pub earliest_expiry: Option<i64>,
}

/// Why a certificate was refused: the `reason` label of the verification failures
/// counter, and the words `status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub text: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Roots and the optional client certificate, loaded once at start; per-target CA files
/// are read each round (an operator may replace one at any time).
pub struct TlsSettings {
    provider: Arc<CryptoProvider>,
    /// `Err`: why there are no usable roots (then only targets with a CA file of their
    /// own can be checked, and the others are not probed: a configuration problem).
    system: anyhow::Result<Arc<WebPkiServerVerifier>>,
    /// Where the system roots came from, for messages.
    system_from: String,
    client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

/// One TLS probe's set-up: the config (with its own verifier) and where it reports.
pub struct TlsSpec {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    pub seen: Arc<Mutex<CertSeen>>,
}

fn roots_from(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for c in certs {
        let c = c.map_err(|e| anyhow!("{}: {e}", path.display()))?;
        // A bundle may hold a certificate webpki cannot use (an old v1 root); the others
        // still count, as with OpenSSL.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        bail!("{}: no usable certificate", path.display());
    }
    Ok(roots)
}

impl TlsSettings {
    /// Loads the trusted roots and, for mutual TLS, the client certificate and key.
    pub fn load(client_cert: Option<&Path>, client_key: Option<&Path>) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let from: PathBuf = match std::env::var_os("SSL_CERT_FILE") {
            Some(f) if !f.is_empty() => f.into(),
            _ => SYSTEM_BUNDLE.into(),
        };
        let system = roots_from(&from).and_then(|r| verifier(r, &provider));
        if let Err(e) = &system {
            log::warn!("tls roots: {e:#}; only targets with a probe_ca_file can be verified");
        }
        let client = match (client_cert, client_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(c)
                    .and_then(|i| i.collect::<Result<_, _>>())
                    .map_err(|e| anyhow!("--tls-client-cert {}: {e}", c.display()))?;
                if certs.is_empty() {
                    bail!("--tls-client-cert {}: no certificate", c.display());
                }
                let key = PrivateKeyDer::from_pem_file(k)
                    .map_err(|e| anyhow!("--tls-client-key {}: {e}", k.display()))?;
                Some((certs, Arc::new(key)))
            }
            _ => bail!("--tls-client-cert and --tls-client-key go together"),
        };
        Ok(TlsSettings {
            provider,
            system,
            system_from: from.display().to_string(),
            client,
        })
    }

    /// The verifier for targets with `ca_file`, or the system's; `Err` says why the file
    /// cannot be used (a configuration problem, never the server's).
    pub fn verifier_for(
        &self,
        ca_file: Option<&str>,
    ) -> anyhow::Result<(Arc<WebPkiServerVerifier>, String)> {
        match ca_file {
            None => match &self.system {
                Ok(v) => Ok((Arc::clone(v), self.system_from.clone())),
                Err(e) => Err(anyhow!(
                    "no trusted roots ({e:#}); set SSL_CERT_FILE or probe_ca_file"
                )),
            },
            Some(f) => {
                let roots = roots_from(Path::new(f)).map_err(|e| anyhow!("probe_ca_file {e:#}"))?;
                Ok((verifier(roots, &self.provider)?, f.to_owned()))
            }
        }
    }

    /// A config for one probe of `target` advertised by `domains`.
    pub fn spec(
        &self,
        inner: Arc<WebPkiServerVerifier>,
        trust: &str,
        target: &str,
        domains: &[String],
    ) -> anyhow::Result<TlsSpec> {
        let server_name = ServerName::try_from(target.to_owned())
            .map_err(|_| anyhow!("{target} is not a name for TLS"))?;
        let mut names = vec![server_name.clone()];
        names.extend(
            domains
                .iter()
                .filter_map(|d| ServerName::try_from(d.clone()).ok()),
        );
        let seen = Arc::new(Mutex::new(CertSeen::default()));
        let v = SipVerifier {
            inner,
            names,
            seen: Arc::clone(&seen),
            trust: trust.to_owned(),
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(v));
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| anyhow!("--tls-client-key: {e}"))?,
        };
        Ok(TlsSpec {
            config: Arc::new(config),
            server_name,
            seen,
        })
    }
}

fn verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| anyhow!("tls roots: {e}"))
}

/// webpki's checks, with RFC 5922's names: the SRV target or the SIP domain.
#[derive(Debug)]
struct SipVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
    seen: Arc<Mutex<CertSeen>>,
    trust: String,
}

impl ServerCertVerifier for SipVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let earliest = std::iter::once(end_entity)
            .chain(intermediates)
            .filter_map(|c| not_after(c))
            .min();
        if let Ok(mut s) = self.seen.lock() {
            s.earliest_expiry = earliest;
        }
        let mut wrong_name = None;
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(v) => return Ok(v),
                Err(
                    e @ Error::InvalidCertificate(
                        CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. },
                    ),
                ) => wrong_name = Some(e),
                Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                    // Carried in a General error so that the message can name the roots.
                    return Err(Error::InvalidCertificate(CertificateError::Other(
                        rustls::OtherError(Arc::new(Untrusted(self.trust.clone()))),
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Err(wrong_name.unwrap_or(Error::General("no name to check".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// An unknown issuer, with the roots it was checked against.
#[derive(Debug)]
struct Untrusted(String);

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate not trusted (no chain to the roots in {})",
            self.0
        )
    }
}

impl std::error::Error for Untrusted {}

/// The words and label for a failed handshake: a certificate refused, or another TLS error.
pub fn refusal(e: &Error, names: &[&str]) -> Refused {
    let (reason, text) = match e {
        Error::InvalidCertificate(c) => match c {
            CertificateError::Expired => ("expired", "certificate expired".to_owned()),
            CertificateError::ExpiredContext { not_after, .. } => (
                "expired",
                format!("certificate expired {}", date(not_after.as_secs() as i64)),
            ),
            CertificateError::NotValidYet => {
                ("not_yet_valid", "certificate not valid yet".to_owned())
            }
            CertificateError::NotValidYetContext { not_before, .. } => (
                "not_yet_valid",
                format!(
                    "certificate not valid before {}",
                    date(not_before.as_secs() as i64)
                ),
            ),
            CertificateError::NotValidForName => (
                "wrong_name",
                format!("certificate names none of {}", names.join(" or ")),
            ),
            CertificateError::NotValidForNameContext { presented, .. } => {
                let shown: Vec<String> = presented
                    .iter()
                    .take(5)
                    .map(|n| crate::net::probe::printable(presented_name(n).as_bytes(), 80))
                    .collect();
                let listed = match shown.is_empty() {
                    true => "no name".to_owned(),
                    false => shown.join(", "),
                };
                (
                    "wrong_name",
                    format!("certificate names {listed}, not {}", names.join(" or ")),
                )
            }
            CertificateError::Other(o) if o.0.downcast_ref::<Untrusted>().is_some() => {
                ("untrusted", o.0.to_string())
            }
            CertificateError::UnknownIssuer => (
                "untrusted",
                "certificate not trusted (unknown issuer)".into(),
            ),
            other => ("invalid", format!("certificate refused: {other:?}")),
        },
        Error::PeerMisbehaved(_)
        | Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. } => ("protocol", format!("tls: {e}")),
        Error::AlertReceived(a) => ("alert", format!("tls: peer sent alert {a:?}")),
        other => ("other", format!("tls: {other}")),
    };
    Refused { reason, text }
}

/// A name webpki lists as presented, without its Debug wrapping (`DnsName("a.example")`).
fn presented_name(n: &str) -> &str {
    n.split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|inner| inner.trim_matches('"'))
        .unwrap_or(n)
}

/// Unix time of a calendar date and time (UTC).
fn unix_of(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> i64 {
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

/// One DER element at the start of `b`: (tag, contents, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = match first {
        n if n < 0x80 => usize::from(n),
        0x81..=0x84 => {
            let k = usize::from(first & 0x7f);
            let (bytes, rest) = (b.get(..k)?, b.get(k..)?);
            b = rest;
            bytes
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
        }
        _ => return None,
    };
    Some((tag, b.get(..len)?, b.get(len..)?))
}

/// The `notAfter` of a certificate, Unix seconds: Certificate → TBSCertificate →
/// (version, serial, signature, issuer) → Validity → second Time (RFC 5280 §4.1).
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = tlv(cert)? else {
        return None;
    };
    let (0x30, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // serial, signature algorithm, issuer
    }
    let (0x30, validity, _) = tlv(tbs)? else {
        return None;
    };
    let (_, _, rest) = tlv(validity)?;
    let (tag, t, _) = tlv(rest)?;
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, t) = match tag {
        // UTCTime YYMMDDHHMMSSZ: 50-99 are 19xx.
        0x17 => {
            let yy = digits(t.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, t.get(2..)?)
        }
        // GeneralizedTime YYYYMMDDHHMMSSZ.
        0x18 => (digits(t.get(..4)?)?, t.get(4..)?),
        _ => return None,
    };
    let f = |i: usize| digits(t.get(i..i + 2)?);
    Some(unix_of(year, f(0)?, f(2)?, f(4)?, f(6)?, f(8)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_lose_their_debug_wrapping() {
        assert_eq!(
            presented_name("DnsName(\"unrelated.invalid\")"),
            "unrelated.invalid"
        );
        assert_eq!(presented_name("IpAddress(192.0.2.1)"), "192.0.2.1");
        assert_eq!(presented_name("plain.example"), "plain.example");
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_795_996_800), "2026-11-30");
        assert_eq!(unix_of(2026, 11, 30, 0, 0, 0), 1_795_996_800);
        assert_eq!(unix_of(2000, 2, 29, 12, 0, 1), 951_825_601);
        assert_eq!(date(951_825_601), "2000-02-29");
    }

    #[test]
    fn not_after_reads_a_real_certificate() {
        let mut p = rcgen::CertificateParams::new(vec!["sip1.example.com".into()]).unwrap();
        p.not_after = rcgen::date_time_ymd(2026, 11, 30);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(unix_of(2026, 11, 30, 0, 0, 0)));
        p.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(date(not_after(cert.der()).unwrap()), "2051-01-02");
        for junk in [&b""[..], b"\x30", b"\x30\x85\x00", b"\x30\x02\x30\x00"] {
            assert_eq!(not_after(junk), None);
        }
    }
}
