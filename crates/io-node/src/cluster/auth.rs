//! Admission by the io-node itself, without an app-node round trip, for
//! clients that prove who they are in their CONNECT `auth` object:
//!
//! - `{"userId": "...", "hash": "..."}`, checked against the credential an
//!   application registered in Redis (`P:user:<id>`: `salt` and `secret`,
//!   the salted digest of the hash, see `iocluster_protocol::credentials`;
//!   the key expires with the credential), when `users_auth` is on;
//! - `{"token": "..."}`, an HS256 JWT signed with `jwt_secret`, with `sub`
//!   (the user id) and `exp` (seconds since the epoch) required and `nbf`
//!   honoured.
//!
//! A socket admitted this way is in the room `$user:<id>` of its namespace
//! (reachable as that user on every io-node), gets CONNECT at once, and its
//! `connect` event still goes to an app-node so application state stays true.
//! A client that presents credentials that do not verify is refused with
//! `Unauthorized`; one that presents none is left to the app-nodes, or
//! refused when `require_auth` is on. The verdict is a
//! [`sockets::Admission`](crate::sockets::Admission).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use iocluster_protocol::{credentials, ids};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::{Config, Secret};
use crate::sockets::Admission;

/// What admission by credentials needs: the settings, and Redis for
/// registered users.
pub(crate) struct Credentials {
    users_auth: bool,
    jwt_secret: Option<Secret>,
    require_auth: bool,
    redis: iocluster_ops::Redis,
    keys: iocluster_protocol::keys::Keys,
}

/// What a client presented in its CONNECT `auth`.
#[derive(Deserialize)]
struct Presented {
    #[serde(rename = "userId")]
    user_id: Option<String>,
    hash: Option<String>,
    token: Option<String>,
}

impl Credentials {
    pub(crate) fn new(config: &Config, redis: iocluster_ops::Redis) -> Credentials {
        Credentials {
            users_auth: config.users_auth,
            jwt_secret: config.jwt_secret.clone(),
            require_auth: config.require_auth,
            redis,
            keys: config.keys.clone(),
        }
    }

    /// The verdict on a CONNECT's `auth` payload, for a served namespace.
    pub(crate) async fn check(&self, auth: &str) -> Admission {
        let config = self;
        if !config.users_auth && config.jwt_secret.is_none() {
            return Admission::ByApp;
        }
        let credentials = if auth.is_empty() {
            None
        } else {
            serde_json::from_str::<Presented>(auth).ok()
        };
        let verdict = match credentials {
            Some(Presented {
                token: Some(token), ..
            }) if config.jwt_secret.is_some() => {
                let secret = config
                    .jwt_secret
                    .as_ref()
                    .map_or("", |secret| secret.0.as_str());
                match verify_jwt(&token, secret.as_bytes(), crate::clock::unix_ms() / 1000) {
                    Ok(user) => Admission::User(user),
                    Err(why) => {
                        tracing::debug!(why, "token refused");
                        Admission::Unauthorized
                    }
                }
            }
            Some(Presented {
                user_id: Some(user),
                hash: Some(hash),
                ..
            }) if config.users_auth => match self.registered_secret(&user).await {
                Ok((salt, Some(stored)))
                    if credentials::verify(salt.as_deref(), &stored, &hash) =>
                {
                    Admission::User(user)
                }
                Ok(_) => Admission::Unauthorized,
                Err(error) => {
                    tracing::warn!(%error, "cannot read a user credential");
                    Admission::Unauthorized
                }
            },
            _ => Admission::ByApp,
        };
        if verdict == Admission::ByApp && config.require_auth {
            return Admission::Unauthorized;
        }
        verdict
    }

    /// The user's registered credential: its salt (none for a legacy entry)
    /// and salted digest (none: no such user).
    async fn registered_secret(
        &self,
        user: &str,
    ) -> redis::RedisResult<(Option<String>, Option<String>)> {
        if !ids::is_valid_user_id(user) {
            return Ok((None, None));
        }
        let mut redis = self.redis.clone();
        redis::cmd("HMGET")
            .arg(self.keys.user(user))
            .arg("salt")
            .arg("secret")
            .query_async(&mut redis)
            .await
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    nbf: Option<u64>,
}

/// Verifies an HS256 JWT; returns its subject.
pub fn verify_jwt(token: &str, secret: &[u8], now_s: u64) -> Result<String, &'static str> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT");
    };
    let alg: Header = decode_part(header)?;
    if alg.alg != "HS256" {
        return Err("algorithm is not HS256");
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "bad signature encoding")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| "bad secret")?;
    mac.update(&token.as_bytes()[..header.len() + 1 + payload.len()]);
    mac.verify_slice(&signature).map_err(|_| "bad signature")?;
    let claims: Claims = decode_part(payload)?;
    if claims.exp <= now_s {
        return Err("expired");
    }
    if claims.nbf.is_some_and(|nbf| nbf > now_s) {
        return Err("not valid yet");
    }
    if !ids::is_valid_user_id(&claims.sub) {
        return Err("bad subject");
    }
    Ok(claims.sub)
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, &'static str> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "bad encoding")?;
    serde_json::from_slice(&bytes).map_err(|_| "bad JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    #[test]
    fn tokens() {
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let good = sign(header, r#"{"sub":"ann","exp":2000}"#, b"s3cret");
        assert_eq!(verify_jwt(&good, b"s3cret", 1000), Ok("ann".into()));
        assert_eq!(verify_jwt(&good, b"other", 1000), Err("bad signature"));
        assert_eq!(verify_jwt(&good, b"s3cret", 2000), Err("expired"));
        let early = sign(header, r#"{"sub":"ann","exp":2000,"nbf":1500}"#, b"s3cret");
        assert_eq!(verify_jwt(&early, b"s3cret", 1000), Err("not valid yet"));
        let none = sign(
            r#"{"alg":"none"}"#,
            r#"{"sub":"ann","exp":2000}"#,
            b"s3cret",
        );
        assert_eq!(
            verify_jwt(&none, b"s3cret", 1000),
            Err("algorithm is not HS256")
        );
        let no_exp = sign(header, r#"{"sub":"ann"}"#, b"s3cret");
        assert_eq!(verify_jwt(&no_exp, b"s3cret", 1000), Err("bad JSON"));
        assert_eq!(verify_jwt("a.b", b"s3cret", 1000), Err("not a JWT"));
        // A payload swapped under a valid signature.
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"root","exp":9999}"#);
        parts[1] = &forged;
        assert_eq!(
            verify_jwt(&parts.join("."), b"s3cret", 1000),
            Err("bad signature")
        );
    }
}
