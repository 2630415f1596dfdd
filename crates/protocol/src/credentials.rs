//! User credentials as stored in Redis (`P:user:<id>`): a random `salt` (32
//! lowercase hex characters) and `secret`, the lowercase hex HMAC-SHA256 of
//! the secret a client presents, keyed with the salt's text. The frontend
//! writes them, io-nodes check them; both go through here so they cannot
//! disagree.
//!
//! What it protects against: someone who reads Redis (a dump, a replica, a
//! backup) learns no secret, cannot match two users with the same secret,
//! and cannot use a table computed in advance; each guess costs an HMAC per
//! user. It is not a slow password hash: secrets must be random, not chosen
//! by people (the admin API requires 16 characters or more, with at least 8
//! different ones, or generates 32), which makes guessing hopeless anyway.
//! Entries written before salts (no `salt` field: the plain SHA-256) are still
//! checked, until they expire or are registered again.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Fewest characters, and fewest different characters, of a secret the
/// admin API accepts.
pub const MIN_SECRET_LEN: usize = 16;
pub const MIN_DISTINCT_CHARS: usize = 8;

/// Whether `secret` is long and varied enough to register.
pub fn strong_enough(secret: &str) -> bool {
    let distinct: std::collections::HashSet<char> = secret.chars().collect();
    secret.chars().count() >= MIN_SECRET_LEN && distinct.len() >= MIN_DISTINCT_CHARS
}

/// Lowercase hex HMAC-SHA256 of `secret`, keyed with the text of `salt`.
pub fn salted_digest(salt: &str, secret: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(salt.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(secret.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Whether `presented` matches a stored credential (with its salt, or a
/// legacy entry without one), in constant time.
pub fn verify(salt: Option<&str>, stored: &str, presented: &str) -> bool {
    match salt {
        Some(salt) => equal(stored, &salted_digest(salt, presented)),
        None => matches(stored, presented),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Lowercase hex SHA-256 of `secret` (the legacy, unsalted form).
pub fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether two secrets are equal, compared through their digests: equal
/// lengths and no early exit, so timing tells nothing about either.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Whether `presented` matches a legacy (unsalted) stored digest, in
/// constant time.
pub fn matches(stored_digest: &str, presented: &str) -> bool {
    equal(stored_digest, &digest(presented))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_comparisons() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches(&digest("s3cret-1"), "s3cret-1"));
        assert!(!matches(&digest("s3cret-1"), "s3cret-2"));
        assert!(!matches("short", "s3cret-1"));
        assert!(same_secret("key-0123456789", "key-0123456789"));
        assert!(!same_secret("key-0123456789", "key-012345678"));
    }

    #[test]
    fn salted_credentials() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            salted_digest("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let salt = "00112233445566778899aabbccddeeff";
        let stored = salted_digest(salt, "ann-random-secret-7Qx");
        assert!(verify(Some(salt), &stored, "ann-random-secret-7Qx"));
        assert!(!verify(Some(salt), &stored, "ann-random-secret-7Qy"));
        // The same secret under another salt is stored differently.
        assert_ne!(
            stored,
            salted_digest("ffeeddccbbaa99887766554433221100", "ann-random-secret-7Qx")
        );
        // Legacy entries still verify.
        assert!(verify(None, &digest("old-secret"), "old-secret"));
    }

    #[test]
    fn only_long_and_varied_secrets_are_strong_enough() {
        assert!(strong_enough("ann-random-secret-7Qx"));
        assert!(!strong_enough("short-secret"));
        assert!(!strong_enough("aaaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(!strong_enough("abababababababababab"));
    }
}
