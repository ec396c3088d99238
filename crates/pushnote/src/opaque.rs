//! Opaque tokens: tokens an app makes itself (a random string per user kept in its database,
//! say), which a server started with `--opaque-tokens` accepts as the original pushnote did.
//!
//! The original server checked no token: a page sent one, and a message reached the pages
//! whose token equalled one the app listed. Holding the token is the permission. pushnote
//! keeps that model for these tokens, without their ever crossing the bus: a page subscribed
//! with an opaque token is the user [`OPAQUE_USER_PREFIX`] + the URL-safe base64 (without
//! padding) of HMAC-SHA256(K, token), where K = SHA-256(salt + [`OPAQUE_SALT_SUFFIX`] +
//! "signer" + secret): the key of a Django `TimestampSigner` with that salt. Apps publish to
//! that user ([`crate::Signer::opaque_user`]); the bus, the forwarder's history and the logs
//! only ever see the keyed hash, from which the token cannot be recovered without the secret.
//!
//! Which tokens are opaque: every token that does not have the form of a signed token
//! ([`looks_signed`]). A token of that form is a signed token, checked as one and refused when
//! it fails (an expired token, one signed with another secret): it never becomes an opaque
//! subscription that would receive nothing.
//!
//! Pure: no I/O.

/// What the user id of an opaque token starts with.
pub const OPAQUE_USER_PREFIX: &str = "~";
/// What the salt of the opaque-token key adds to the salt of user tokens, so that the key is
/// no token key.
pub const OPAQUE_SALT_SUFFIX: &str = ".opaque";
/// The shortest opaque token accepted, in bytes: a shorter one is too easy to guess.
pub const MIN_OPAQUE_TOKEN_BYTES: usize = 16;
/// The longest opaque token accepted, in bytes.
pub const MAX_OPAQUE_TOKEN_BYTES: usize = 512;
/// The length of a signed token's signature: 32 bytes of HMAC-SHA256 in URL-safe base64
/// without padding.
const SIGNATURE_CHARS: usize = 43;
/// The longest base 62 timestamp Django writes (of a `u64`).
const MAX_TIMESTAMP_CHARS: usize = 11;

/// Why an opaque token was refused. Never holds the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpaqueError {
    /// Shorter than [`MIN_OPAQUE_TOKEN_BYTES`] or longer than [`MAX_OPAQUE_TOKEN_BYTES`].
    #[error(
        "an opaque token is {MIN_OPAQUE_TOKEN_BYTES} to {MAX_OPAQUE_TOKEN_BYTES} bytes; this one \
         is {0}"
    )]
    Length(usize),
    /// Holds a control character.
    #[error("an opaque token holds no control characters")]
    ControlCharacter,
    /// Has the form of a signed token ([`looks_signed`]), which servers check as one.
    #[error(
        "this token has the form of a signed token (value:timestamp:signature), which servers \
         check as one: it is no opaque token"
    )]
    LooksSigned,
}

/// Whether `token` has the form of a signed token, `value:timestamp:signature`: a non-empty
/// value, 1 to 11 base 62 digits, and 43 characters of URL-safe base64. Such a token is
/// checked as a signed token, never taken as an opaque one.
pub fn looks_signed(token: &str) -> bool {
    let Some((value, signature)) = token.rsplit_once(':') else {
        return false;
    };
    let Some((user, timestamp)) = value.rsplit_once(':') else {
        return false;
    };
    let base64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    !user.is_empty()
        && (1..=MAX_TIMESTAMP_CHARS).contains(&timestamp.len())
        && timestamp.bytes().all(|b| b.is_ascii_alphanumeric())
        && signature.len() == SIGNATURE_CHARS
        && signature.bytes().all(base64)
}

/// Checks an opaque token's bounds: its length, and no control characters.
pub fn check_opaque(token: &str) -> Result<(), OpaqueError> {
    if !(MIN_OPAQUE_TOKEN_BYTES..=MAX_OPAQUE_TOKEN_BYTES).contains(&token.len()) {
        return Err(OpaqueError::Length(token.len()));
    }
    if token.chars().any(char::is_control) {
        return Err(OpaqueError::ControlCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_look_signed_and_app_made_ones_do_not() {
        let signed = "42:1r31eq:egqH_37soYTJMP9PS6Nui99-AAHApGie8p7ZkvIjd3M";
        assert!(looks_signed(signed));
        assert!(looks_signed(&format!("org:{signed}")), "ids may hold ':'");
        for opaque in [
            "0f3c2a9e8b7d4c1f9a2b3c4d5e6f7a8b",            // uuid4().hex
            "Nq3vXw0S5Ub4k7Q2q9pG1nYQeM1u3e8ZkW-Ffx_5aX0", // token_urlsafe(32)
            "42:0f3c2a9e8b7d4c1f",                         // an id and a random part
            ":1r31eq:egqH_37soYTJMP9PS6Nui99-AAHApGie8p7ZkvIjd3M", // no value
            "42:1r31eq:egqH_37soYTJMP9PS6Nui99-AAHApGie8p7ZkvIjd3", // 42 characters
            "42:1r3.eq:egqH_37soYTJMP9PS6Nui99-AAHApGie8p7ZkvIjd3M",
        ] {
            assert!(!looks_signed(opaque), "{opaque}");
        }
    }

    #[test]
    fn opaque_tokens_are_bounded() {
        assert_eq!(check_opaque(&"a".repeat(16)), Ok(()));
        assert_eq!(check_opaque(&"a".repeat(512)), Ok(()));
        assert_eq!(check_opaque(&"a".repeat(15)), Err(OpaqueError::Length(15)));
        assert_eq!(
            check_opaque(&"a".repeat(513)),
            Err(OpaqueError::Length(513))
        );
        assert_eq!(
            check_opaque("0123456789abcdef\n"),
            Err(OpaqueError::ControlCharacter)
        );
        let e = OpaqueError::Length(9).to_string();
        assert!(e.contains("16 to 512") && e.contains('9'), "{e}");
    }
}
