//! Basic auth against the web config's bcrypt hashes. bcrypt is slow on purpose (~70 ms at
//! cost 10), so credentials once verified are remembered by a SHA-256 of themselves, and a
//! scrape every 15 s pays one hash lookup, not a bcrypt run. The user name is compared in
//! constant time and an unknown user still pays a bcrypt run, so neither timing nor the cache
//! tells which names exist.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Most verified credentials remembered; past it the cache starts over (a handful of
/// scrapers use a handful of credentials: this is only reached by someone trying many).
const CACHE_ENTRIES: usize = 256;

/// A valid bcrypt hash of nothing anyone knows, verified against for unknown users so they
/// cost the same time as known ones.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// The users of `basic_auth_users` and the cache of credentials already verified.
#[derive(Debug)]
pub struct BasicAuth {
    users: Vec<User>,
    /// Keys the cache digests, so they differ from one process to the next.
    salt: u64,
    verified: Mutex<HashSet<[u8; 32]>>,
}

#[derive(Debug)]
struct User {
    /// SHA-256 of the name: equal lengths for the constant-time comparison.
    name: [u8; 32],
    hash: String,
}

impl BasicAuth {
    /// Checks every hash parses as bcrypt; a refusal names the user.
    pub fn new<'a>(
        users: impl Iterator<Item = (&'a String, &'a String)>,
    ) -> Result<BasicAuth, (String, String)> {
        let mut out = Vec::new();
        for (name, hash) in users {
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| (name.clone(), format!("not a bcrypt hash: {e}")))?;
            out.push(User {
                name: Sha256::digest(name.as_bytes()).into(),
                hash: hash.clone(),
            });
        }
        Ok(BasicAuth {
            users: out,
            salt: RandomState::new().build_hasher().finish(),
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// The (user, password) of an `Authorization: Basic ...` header value, if well formed.
    pub fn credentials(header: &[u8]) -> Option<(String, String)> {
        let text = std::str::from_utf8(header).ok()?;
        let (scheme, encoded) = text.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    }

    /// Whether these credentials were verified before (cheap: one SHA-256).
    pub fn cached(&self, user: &str, password: &str) -> bool {
        let key = self.cache_key(user, password);
        self.lock().contains(&key)
    }

    /// Verifies against the bcrypt hash (slow: run it off the async workers) and remembers
    /// a success.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let name: [u8; 32] = Sha256::digest(user.as_bytes()).into();
        let mut found = None;
        // Every entry is compared, so the time does not depend on where (or whether) it is.
        for candidate in &self.users {
            if bool::from(candidate.name.ct_eq(&name)) {
                found = Some(candidate.hash.as_str());
            }
        }
        let ok = match found {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, DUMMY_HASH);
                false
            }
        };
        if ok {
            let key = self.cache_key(user, password);
            let mut verified = self.lock();
            if verified.len() >= CACHE_ENTRIES {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut digest = Sha256::new();
        digest.update(self.salt.to_le_bytes());
        // The length first, so ("ab", "c") and ("a", "bc") differ.
        digest.update((user.len() as u64).to_le_bytes());
        digest.update(user.as_bytes());
        digest.update(password.as_bytes());
        digest.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A panic while holding it cannot leave the set half-updated in a harmful way.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(password: &str) -> BasicAuth {
        let hash = bcrypt::hash(password, 4).unwrap();
        let users = [("alice".to_string(), hash)];
        BasicAuth::new(users.iter().map(|(u, h)| (u, h))).unwrap()
    }

    #[test]
    fn a_right_password_is_verified_once_then_cached() {
        let auth = auth("s3cret");
        assert!(!auth.cached("alice", "s3cret"));
        assert!(auth.verify("alice", "s3cret"));
        assert!(auth.cached("alice", "s3cret"));
        assert!(
            !auth.cached("alice", "s3cre"),
            "a different password is not cached"
        );
    }

    #[test]
    fn wrong_passwords_and_unknown_users_are_refused_and_not_cached() {
        let auth = auth("s3cret");
        assert!(!auth.verify("alice", "wrong"));
        assert!(!auth.verify("bob", "s3cret"));
        assert!(!auth.cached("alice", "wrong") && !auth.cached("bob", "s3cret"));
    }

    #[test]
    fn the_header_is_parsed_as_rfc_7617_says() {
        // "alice:pa:ss" - the password may hold colons, the user may not.
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        assert_eq!(
            BasicAuth::credentials(header.as_bytes()),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(BasicAuth::credentials(b"Bearer abc"), None);
        assert_eq!(BasicAuth::credentials(b"Basic !!!"), None);
    }

    #[test]
    fn the_dummy_hash_is_a_valid_bcrypt_hash() {
        assert!(DUMMY_HASH.parse::<bcrypt::HashParts>().is_ok());
    }
}
