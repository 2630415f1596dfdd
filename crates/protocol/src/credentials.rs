//! User credentials as stored in Redis (`P:user:<id>`, field `secret`): the
//! lowercase hex SHA-256 of the secret a client presents. The frontend writes
//! them, io-nodes check them; both go through here so they cannot disagree.

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `secret`.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

/// Whether `presented` matches a stored digest, in constant time.
pub fn matches(stored_digest: &str, presented: &str) -> bool {
    let presented = digest(presented);
    stored_digest.len() == presented.len()
        && stored_digest
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
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
}
