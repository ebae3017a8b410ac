//! Share-link tokens: a link's id and an HMAC-SHA256 of it under `share.secret`, both base64url. The signature
//! makes tokens unguessable and tamper-evident before the database is asked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use uuid::Uuid;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The key share tokens are signed with.
pub(crate) struct ShareKey(Vec<u8>);

impl ShareKey {
    pub(crate) fn new(secret: &str) -> Self {
        if secret.is_empty() {
            tracing::warn!(
                "share.secret is not set: share links are signed with a random key and die with this process"
            );
            let mut key = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
            Self(key)
        } else {
            Self(secret.as_bytes().to_vec())
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    pub(crate) fn token(&self, id: Uuid) -> String {
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        let signature = mac.finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(id.as_bytes()), URL_SAFE_NO_PAD.encode(signature))
    }

    /// The link id of a token whose signature holds (checked in constant time).
    pub(crate) fn verify(&self, token: &str) -> Option<Uuid> {
        let (id, signature) = token.split_once('.')?;
        let id = Uuid::from_slice(&URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        mac.verify_slice(&signature).ok()?;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_unaltered_and_under_its_key() {
        let key = ShareKey::new("secret-one");
        let id = Uuid::now_v7();
        let token = key.token(id);
        assert_eq!(key.verify(&token), Some(id));
        assert_eq!(ShareKey::new("secret-two").verify(&token), None);
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(key.verify(&String::from_utf8(tampered).unwrap()), None);
        let other = key.token(Uuid::now_v7());
        let spliced = format!("{}.{}", token.split('.').next().unwrap(), other.split('.').nth(1).unwrap());
        assert_eq!(key.verify(&spliced), None);
        assert_eq!(key.verify("garbage"), None);
    }
}
