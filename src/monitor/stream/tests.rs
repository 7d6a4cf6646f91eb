//! Stream probes against in-process TLS peers on loopback: a SIP server behind a real
//! rustls handshake, and hostile peers (a handshake that never completes, a 1 MB
//! certificate chain, a close mid-handshake, garbage after the handshake). However the peer
//! misbehaves, the round they share ends within its timeout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;
use crate::monitor::pool::{self, Degraded, Done, Start};
use crate::monitor::tls::TlsSettings;

const TIMEOUT: Duration = Duration::from_millis(1500);

struct Pki {
    ca_file: std::path::PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The leaf and its key as PEM, for a client certificate file.
    pem: (String, String),
}

/// A CA (written to a file for the probe's trust) and a server certificate it signs.
fn pki(tag: &str, names: &[&str]) -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("test CA {tag}"));
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(p, ca_key);
    let leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let ca_file = std::env::temp_dir().join(format!(
        "pdns-ha-stream-{}-{tag}-ca.pem",
        std::process::id()
    ));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    Pki {
        ca_file,
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        pem: (cert.pem(), key.serialize_pem()),
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// Serves one connection with `serve` on a thread; returns the address.
fn peer(serve: impl FnOnce(TcpStream) + Send + 'static) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            serve(s);
        }
    });
    addr
}

/// A SIP answer echoing the request's dialog headers.
fn answer(request: &str) -> String {
    let echoed: String = request
        .lines()
        .filter(|l| {
            ["via:", "from:", "to:", "call-id:", "cseq:"]
                .iter()
                .any(|h| l.to_ascii_lowercase().starts_with(h))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!("SIP/2.0 200 OK\r\n{echoed}Content-Length: 0\r\n\r\n")
}

fn spec(settings: &TlsSettings, ca: &std::path::Path, addr: std::net::SocketAddr) -> StreamSpec {
    let (inner, trust) = settings.verifier_for(ca.to_str()).unwrap();
    let domains = vec!["example.com".to_owned()];
    let tls = settings
        .spec(inner, &trust, "sip1.example.com", &domains)
        .unwrap();
    StreamSpec {
        addr,
        sip: true,
        tls: Some(tls),
        names: vec!["sip1.example.com".into(), "example.com".into()],
    }
}

#[test]
fn tls_probes_answer_and_hostile_peers_cost_one_timeout_together() {
    let settings = TlsSettings::load(None, None).unwrap();
    let good = pki("good", &["sip1.example.com"]);
    let config = server_config(good.chain.clone(), good.key.clone_key());

    // A SIP server over TLS.
    let cfg = Arc::clone(&config);
    let answering = peer(move |s| {
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tls.write_all(answer(&String::from_utf8_lossy(&got)).as_bytes());
        let _ = tls.flush();
        thread::sleep(Duration::from_millis(200));
    });
    // Accept, never say a word: three of them, so that one timeout each in turn would
    // show.
    let silent = || {
        peer(|s| {
            thread::sleep(TIMEOUT * 3);
            drop(s);
        })
    };
    let never = silent();
    let (never2, never3) = (silent(), silent());
    // A chain of about 1 MB: the leaf, then its CA's certificate over and over.
    let big = {
        let mut p = CertificateParams::new(vec!["sip1.example.com".to_owned()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "x".repeat(60));
        let k = KeyPair::generate().unwrap();
        let filler = p.self_signed(&k).unwrap().der().clone();
        let mut chain = good.chain.clone();
        while chain.iter().map(|c| c.len()).sum::<usize>() < 1 << 20 {
            chain.push(filler.clone());
        }
        server_config(chain, good.key.clone_key())
    };
    let huge = peer(move |s| {
        let conn = rustls::ServerConnection::new(big).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let _ = tls.read(&mut [0u8; 1]);
    });
    // Reads the ClientHello, then hangs up.
    let closes = peer(|mut s| {
        let _ = s.read(&mut [0u8; 4096]);
    });
    // Completes the handshake, then sends bytes that are not TLS.
    let cfg = Arc::clone(&config);
    let garbage = peer(move |mut s| {
        let mut conn = rustls::ServerConnection::new(cfg).unwrap();
        while conn.is_handshaking() {
            if conn.complete_io(&mut s).is_err() {
                return;
            }
        }
        let _ = s.write_all(&[0x42; 4096]);
        thread::sleep(TIMEOUT * 2);
    });

    let ca = good.ca_file.clone();
    let addrs = [answering, never, huge, closes, garbage, never2, never3];
    let starts = addrs
        .iter()
        .map(|a| Start::Stream(spec(&settings, &ca, *a)))
        .collect();
    let begun = Instant::now();
    let done = pool::many(starts, TIMEOUT, 64, &mut Degraded::default());
    let took = begun.elapsed();
    // One timeout for all, with room for a loaded machine; three silent peers in turn
    // would take 4.5 s.
    assert!(took < TIMEOUT * 2, "{took:?}");
    let results: Vec<StreamDone> = done
        .into_iter()
        .map(|d| match d {
            Done::Stream(s) => s,
            Done::Udp(_) => unreachable!(),
        })
        .collect();
    match &results[0].result {
        Ok(StreamOk::Sip(a)) => assert_eq!(a.code, 200),
        other => panic!("the good server: {other:?}"),
    }
    assert!(results[0].cert.as_ref().unwrap().earliest_expiry.is_some());
    let text = |i: usize| match &results[i].result {
        Err(e) => e.to_string(),
        Ok(ok) => panic!("peer {i} passed: {ok:?}"),
    };
    for i in [1, 5, 6] {
        assert!(text(i).contains("tls handshake: timed out"), "{}", text(i));
    }
    // rustls refuses a handshake message over 64 KiB before reading the rest.
    assert!(text(2).contains("HandshakePayloadTooLarge"), "{}", text(2));
    assert!(text(3).contains("connection closed by peer"), "{}", text(3));
    assert!(
        text(4).contains("tls: received corrupt message"),
        "{}",
        text(4)
    );
    let _ = std::fs::remove_file(&ca);
}

#[test]
fn refused_certificates_say_why() {
    let settings = TlsSettings::load(None, None).unwrap();
    // Names neither the target nor the domain.
    let wrong = pki("wrong", &["unrelated.invalid"]);
    let cfg = server_config(wrong.chain.clone(), wrong.key.clone_key());
    let addr = peer(move |s| {
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let _ = tls.read(&mut [0u8; 1]);
    });
    let done = probe_one(spec(&settings, &wrong.ca_file, addr), TIMEOUT);
    let e = done.result.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("certificate names unrelated.invalid, not sip1.example.com or example.com"),
        "{e}"
    );
    assert!(matches!(
        e.kind,
        ProbeErrorKind::Tls {
            reason: "wrong_name",
            ..
        }
    ));
    // Signed by a CA the probe does not trust.
    let other = pki("other", &["sip1.example.com"]);
    let cfg = server_config(other.chain.clone(), other.key.clone_key());
    let addr = peer(move |s| {
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let _ = tls.read(&mut [0u8; 1]);
    });
    let e = probe_one(spec(&settings, &wrong.ca_file, addr), TIMEOUT)
        .result
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            ProbeErrorKind::Tls {
                reason: "untrusted",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("certificate not trusted"), "{e}");
    for f in [wrong.ca_file, other.ca_file] {
        let _ = std::fs::remove_file(f);
    }
}

/// A server that demands a client certificate signed by `client_ca`, answering OPTIONS.
fn mutual_server(server: &Pki, client_ca: &std::path::Path) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(client_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(server.chain.clone(), server.key.clone_key())
            .unwrap(),
    );
    peer(move |s| {
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tls.write_all(answer(&String::from_utf8_lossy(&got)).as_bytes());
        let _ = tls.flush();
        thread::sleep(Duration::from_millis(200));
    })
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let server = pki("mtls-server", &["sip1.example.com"]);
    let client = pki("mtls-client", &["pdns-ha.example.net"]);
    let dir = std::env::temp_dir();
    let (cert, key) = (
        dir.join(format!("pdns-ha-stream-{}-client.crt", std::process::id())),
        dir.join(format!("pdns-ha-stream-{}-client.key", std::process::id())),
    );
    std::fs::write(&cert, &client.pem.0).unwrap();
    std::fs::write(&key, &client.pem.1).unwrap();
    assert!(PrivateKeyDer::from_pem_file(&key).is_ok());

    // Without a client certificate: refused, and the reason says TLS.
    let plain = TlsSettings::load(None, None).unwrap();
    let addr = mutual_server(&server, &client.ca_file);
    let e = probe_one(spec(&plain, &server.ca_file, addr), TIMEOUT)
        .result
        .unwrap_err();
    assert!(matches!(e.kind, ProbeErrorKind::Tls { .. }), "{e}");
    // With it: answered.
    let mutual = TlsSettings::load(Some(&cert), Some(&key)).unwrap();
    let addr = mutual_server(&server, &client.ca_file);
    match probe_one(spec(&mutual, &server.ca_file, addr), TIMEOUT).result {
        Ok(StreamOk::Sip(a)) => assert_eq!(a.code, 200),
        other => panic!("{other:?}"),
    }
    // Half a pair is refused at start.
    assert!(TlsSettings::load(Some(&cert), None).is_err());
    for f in [cert, key, server.ca_file, client.ca_file] {
        let _ = std::fs::remove_file(f);
    }
}
