//! Authenticated memcached values and keys memcached can always take.
//!
//! memcached has no authentication: whoever reaches its port can write any
//! key. With `--memcached-key-file`, every writer (`monitor`, `metric`)
//! seals each value with HMAC-SHA256 under a secret shared with the pipes,
//! and a pipe uses only values whose MAC verifies. The MAC covers the key's
//! logical name (so a value cannot be moved to another target, network or
//! kind), the whole value, and with it the reading's timestamp (so it
//! cannot be re-dated):
//!
//! ```text
//! value   = "v1 " BODY " " HEX(MAC)                 (version 1, authenticated)
//! MAC     = HMAC-SHA256(secret, "pdns-ha v1\n" KEY "\n" BODY)
//! BODY    = the unauthenticated value as before, e.g. "1 1764230000.25"
//! ```
//!
//! Unauthenticated values (the format without a key file) start with a
//! digit or `-`, never `v`, so the two are told apart by their first byte;
//! a later format would be `v2`.
//!
//! The monitors list (`PREFIX:monitors`) is grown by `append` from several
//! monitors, so it cannot carry one MAC: each entry is sealed on its own,
//! `ID/HEX(MAC)` with the MAC over the list's key and `monitor ID`. A list
//! is read only up to [`MAX_LIST`] bytes and at most [`MAX_MONITORS`] of its
//! entries are used (issue 19: a planted 1 MB list of 150,000 ids made every
//! pipe fetch 150,000 keys per target each second).
//!
//! Long keys: memcached takes keys of at most 250 bytes without spaces or
//! control characters. A key that breaks either rule (a 235-byte target
//! name, say) goes on the wire as `PREFIX:KIND:#` and the SHA-256 of the
//! whole logical key in hex; the MAC still covers the logical key.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::files::open_regular;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Longest key memcached accepts.
pub const MAX_KEY: usize = 250;

/// Longest value accepted: a latency reading with every float at full
/// precision is under 200 bytes sealed. Larger ones are not parsed at all.
pub const MAX_VALUE: usize = 512;

/// Longest monitors list read, in bytes: 127 sealed entries of the longest
/// id (64 bytes), and hundreds of usual ones. A longer list is refused
/// unread, and a monitor rewrites it from its verified entries.
pub const MAX_LIST: usize = 16 * 1024;

/// Monitors whose health verdicts a pipe fetches, at most: each costs one
/// key per target per second. The first ones in byte order are used.
pub const MAX_MONITORS: usize = 32;

/// A secret shorter than this is a mistake (an empty or truncated file).
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 4096;

const TAG: &str = "v1 ";
const MAC_HEX: usize = 64;

/// The shared secret, ready to sign and verify.
#[derive(Clone)]
pub struct Key {
    mac: HmacSha256,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug print.
        f.write_str("Key(..)")
    }
}

/// Why a secret is refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a regular file, or not readable.
    #[error("{0}")]
    Io(std::io::Error),
    #[error(
        "mode {0:o} lets other users read or write the secret: chmod 600 it (one user), or \
         chown root:pdns and chmod 640 (the pipe and the monitor)"
    )]
    Mode(u32),
    #[error("longer than {MAX_SECRET} bytes")]
    Long,
    /// An empty or truncated file, most likely.
    #[error(
        "the secret has {0} bytes, needs at least {MIN_SECRET} (e.g. head -c 32 /dev/urandom \
         | base64)"
    )]
    Short(usize),
}

/// A key file refused, named as the option that gives it.
#[derive(Debug, thiserror::Error)]
#[error("--memcached-key-file {}: {error}", path.display())]
pub struct KeyFileError {
    pub path: PathBuf,
    pub error: KeyError,
}

/// Why a fetched value was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsealed {
    /// No `v1` tag while a key file is in use.
    Unauthenticated,
    /// Tagged, but the MAC does not verify (or is not 64 hex digits).
    BadMac,
}

impl Key {
    /// Reads the secret from `path`: a regular file that only its owner
    /// and its group may read and only its owner write (mode 0640, 0600,
    /// 0440 or 0400), holding at least 16 bytes.
    /// Surrounding white space (a trailing newline) is not part of it.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let at = |error| KeyFileError {
            path: path.to_owned(),
            error,
        };
        let mut f = open_regular(path).map_err(|e| at(KeyError::Io(e)))?;
        let mode = f.metadata().map_err(|e| at(KeyError::Io(e)))?.mode();
        // Group read is allowed: the pipe (user pdns) and the monitor (user
        // pdns-ha, group pdns) both need the secret, and a 0600 file serves
        // only one of them. Group write or any access by others is not.
        if mode & 0o037 != 0 {
            return Err(at(KeyError::Mode(mode & 0o7777)));
        }
        let mut secret = Vec::new();
        f.by_ref()
            .take(MAX_SECRET as u64 + 1)
            .read_to_end(&mut secret)
            .map_err(|e| at(KeyError::Io(e)))?;
        if secret.len() > MAX_SECRET {
            return Err(at(KeyError::Long));
        }
        Self::new(secret.trim_ascii()).map_err(at)
    }

    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET {
            return Err(KeyError::Short(secret.len()));
        }
        // HMAC takes a key of any length (RFC 2104 hashes a longer one).
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        Ok(Self { mac })
    }

    fn mac(&self, key: &str, body: &str) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(b"pdns-ha v1\n");
        m.update(key.as_bytes());
        m.update(b"\n");
        m.update(body.as_bytes());
        m
    }

    /// The value to store under `key` for the unauthenticated `body`.
    pub fn seal(&self, key: &str, body: &str) -> String {
        let tag = self.mac(key, body).finalize().into_bytes();
        let mut out = String::with_capacity(TAG.len() + body.len() + 1 + MAC_HEX);
        out.push_str(TAG);
        out.push_str(body);
        out.push(' ');
        for b in tag.iter() {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The body of a value fetched for `key`, if its MAC verifies. The
    /// comparison is hmac's constant-time `verify_slice`.
    pub fn open<'v>(&self, key: &str, value: &'v str) -> Result<&'v str, Unsealed> {
        let sealed = value.strip_prefix(TAG).ok_or(Unsealed::Unauthenticated)?;
        let (body, hex) = sealed.rsplit_once(' ').ok_or(Unsealed::BadMac)?;
        let tag = unhex(hex).ok_or(Unsealed::BadMac)?;
        self.mac(key, body)
            .verify_slice(&tag)
            .map_err(|_| Unsealed::BadMac)?;
        Ok(body)
    }
}

impl Key {
    /// One entry of the monitors list under `list` (its logical key).
    pub fn seal_entry(&self, list: &str, id: &str) -> String {
        let tag = self
            .mac(list, &format!("monitor {id}"))
            .finalize()
            .into_bytes();
        let mut out = String::with_capacity(id.len() + 1 + MAC_HEX);
        out.push_str(id);
        out.push('/');
        for b in tag.iter() {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The monitor id of a list entry, if its MAC verifies.
    pub fn open_entry<'e>(&self, list: &str, entry: &'e str) -> Result<&'e str, Unsealed> {
        let (id, hex) = entry.rsplit_once('/').ok_or(Unsealed::Unauthenticated)?;
        let tag = unhex(hex).ok_or(Unsealed::Unauthenticated)?;
        self.mac(list, &format!("monitor {id}"))
            .verify_slice(&tag)
            .map_err(|_| Unsealed::BadMac)?;
        Ok(id)
    }
}

/// A list entry read without a key file: sealed or not, the id.
pub fn open_entry_unchecked(entry: &str) -> &str {
    match entry.rsplit_once('/') {
        Some((id, hex)) if unhex(hex).is_some() => id,
        _ => entry,
    }
}

/// Without a key file, values are taken as they come: unauthenticated
/// ones, and sealed ones with the MAC unchecked, so that writers can be
/// given the key before the pipes during a rollout.
pub fn open_unchecked(value: &str) -> &str {
    match value.strip_prefix(TAG).and_then(|s| s.rsplit_once(' ')) {
        Some((body, _)) => body,
        None => value,
    }
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != MAC_HEX {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// The key as sent to memcached for the logical `key` (which starts with
/// `prefix:`): itself when memcached can take it, else hashed.
pub fn wire_key<'k>(prefix: &str, key: &'k str) -> Cow<'k, str> {
    let sendable = |k: &str| k.len() <= MAX_KEY && k.bytes().all(|b| b > b' ' && b != 0x7f);
    if sendable(key) {
        return Cow::Borrowed(key);
    }
    let kind = key
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix(':'))
        .and_then(|r| r.split(':').next())
        .filter(|k| sendable(k) && k.len() <= 16)
        .unwrap_or("x");
    let mut out = format!("{prefix}:{kind}:#");
    for b in Sha256::digest(key.as_bytes()).iter() {
        let _ = write!(out, "{b:02x}");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let k = Key::new(b"0123456789abcdef0123").unwrap();
        let v = k.seal("p:health:a", "1 100.5");
        assert!(
            v.starts_with("v1 1 100.5 ") && v.len() == 3 + 7 + 1 + 64,
            "{v}"
        );
        assert_eq!(k.open("p:health:a", &v), Ok("1 100.5"));
        // Another key name, another body, another secret: all refused.
        assert_eq!(k.open("p:health:b", &v), Err(Unsealed::BadMac));
        let forged = v.replace("v1 1 100.5", "v1 0 100.5");
        assert_eq!(k.open("p:health:a", &forged), Err(Unsealed::BadMac));
        let other = Key::new(b"another secret, long enough").unwrap();
        assert_eq!(other.open("p:health:a", &v), Err(Unsealed::BadMac));
        assert_eq!(
            k.open("p:health:a", "1 100.5"),
            Err(Unsealed::Unauthenticated)
        );
        assert_eq!(k.open("p:health:a", "v1 1 100.5 zz"), Err(Unsealed::BadMac));
        assert_eq!(k.open("p:health:a", "v1 "), Err(Unsealed::BadMac));
        assert_eq!(open_unchecked(&v), "1 100.5");
        assert_eq!(open_unchecked("1 100.5"), "1 100.5");
        assert!(matches!(Key::new(b"short"), Err(KeyError::Short(5))));
        assert_eq!(format!("{k:?}"), "Key(..)");
    }

    #[test]
    fn list_entries_are_sealed_one_by_one() {
        let k = Key::new(b"0123456789abcdef0123").unwrap();
        let e = k.seal_entry("p:monitors", "site/a");
        assert!(e.starts_with("site/a/") && e.len() == 6 + 1 + 64, "{e}");
        assert_eq!(k.open_entry("p:monitors", &e), Ok("site/a"));
        assert_eq!(open_entry_unchecked(&e), "site/a");
        assert_eq!(open_entry_unchecked("site/a"), "site/a");
        // Another list, another id, no MAC, another secret: refused.
        assert_eq!(k.open_entry("q:monitors", &e), Err(Unsealed::BadMac));
        let moved = e.replacen("site/a", "site/b", 1);
        assert_eq!(k.open_entry("p:monitors", &moved), Err(Unsealed::BadMac));
        assert_eq!(
            k.open_entry("p:monitors", "site"),
            Err(Unsealed::Unauthenticated)
        );
        let other = Key::new(b"another secret, long enough").unwrap();
        assert_eq!(other.open_entry("p:monitors", &e), Err(Unsealed::BadMac));
        // An entry is never mistaken for a sealed value of the list's key.
        assert_eq!(k.open("p:monitors", &e), Err(Unsealed::Unauthenticated));
    }

    #[test]
    fn the_key_file_is_checked() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("pdns-ha-key-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("key");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, true),
            (0o440, true),
            (0o660, false),
            (0o604, false),
            (0o606, false),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = Key::load(&f);
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if !ok {
                let e = r.unwrap_err();
                assert!(matches!(e.error, KeyError::Mode(m) if m == mode), "{e}");
            }
        }
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let same = Key::load(&f).unwrap().seal("k", "b");
        assert_eq!(
            Key::new(b"0123456789abcdef0123").unwrap().seal("k", "b"),
            same
        );
        assert_eq!(
            Key::load(&d).unwrap_err().to_string(),
            format!(
                "--memcached-key-file {0}: {0} is a directory, not a regular file",
                d.display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn long_or_odd_keys_are_hashed() {
        assert_eq!(
            wire_key("p", "p:health:sip1.example.com"),
            "p:health:sip1.example.com"
        );
        let long = format!("p:latency:*|{}", "a".repeat(245));
        let w = wire_key("p", &long);
        assert!(w.starts_with("p:latency:#") && w.len() == 11 + 64, "{w}");
        assert_ne!(w, wire_key("p", &format!("{long}b")));
        let spaced = wire_key("p", "p:health:a b");
        assert!(spaced.starts_with("p:health:#"), "{spaced}");
        assert!(wire_key("p", "p:health:a\u{7f}").starts_with("p:health:#"));
        let exact = format!("p:health:{}", "a".repeat(MAX_KEY - 9));
        assert_eq!(wire_key("p", &exact), exact, "250 bytes still fit");
    }
}
