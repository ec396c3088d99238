//! What a secret or an API key must be before a server or forwarder starts with it.
//!
//! A token secret anyone can guess lets anyone mint tokens for any user, and a guessable API
//! key lets anyone publish; a deployment's placeholder (`change-me`) left in place does both,
//! silently. So, as Django's deployment check does for `SECRET_KEY` (`security.W009`), a key
//! is refused at start when it is:
//! - shorter than [`MIN_CHARS`] characters,
//! - made of fewer than [`MIN_DISTINCT_CHARS`] distinct characters (`aaaa…`, `secretsecret…`),
//! - or holds a known placeholder ([`PLACEHOLDERS`], compared without case, `-`, `_`, `.` and
//!   spaces): `change-me`, `django-insecure-…` (the key `django-admin startproject` writes
//!   for development), `your-secret`, …
//!
//! A random key passes: `openssl rand -base64 32` (44 characters) or Django's
//! `get_random_secret_key()` (50).

/// The fewest characters a key may have: 32 random base64 characters carry 192 bits.
pub const MIN_CHARS: usize = 32;
/// The fewest distinct characters a key may have (Django asks 5; a random key of 32 hex
/// digits has fewer than 8 about never).
pub const MIN_DISTINCT_CHARS: usize = 8;
/// Words no real key contains, compared in lower case without `-`, `_`, `.` and spaces.
pub const PLACEHOLDERS: [&str; 8] = [
    "changeme",
    "replaceme",
    "insecure",
    "placeholder",
    "yoursecret",
    "yourkey",
    "yourapikey",
    "notasecret",
];

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakKey {
    /// The key is set, but empty.
    #[error("it is empty")]
    Empty,
    /// Fewer than [`MIN_CHARS`] characters.
    #[error("it has {0} characters; at least {MIN_CHARS} are needed")]
    Short(usize),
    /// Fewer than [`MIN_DISTINCT_CHARS`] distinct characters.
    #[error("it has {0} distinct characters; at least {MIN_DISTINCT_CHARS} are needed")]
    Repetitive(usize),
    /// It holds a placeholder.
    #[error("it is a placeholder (it contains {0:?}), not a secret")]
    Placeholder(&'static str),
}

/// Checks a secret or key against the rules above.
pub fn check(key: &str) -> Result<(), WeakKey> {
    if key.is_empty() {
        return Err(WeakKey::Empty);
    }
    let normalized: String = key
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    if let Some(word) = PLACEHOLDERS.iter().find(|w| normalized.contains(*w)) {
        return Err(WeakKey::Placeholder(word));
    }
    let chars = key.chars().count();
    if chars < MIN_CHARS {
        return Err(WeakKey::Short(chars));
    }
    let mut distinct: Vec<char> = key.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Err(WeakKey::Repetitive(distinct.len()));
    }
    Ok(())
}

/// Checks the key given as `flag` (or its environment variable `env`): what to tell the
/// operator when it is refused.
pub fn check_flag(flag: &str, env: &str, key: &str) -> Result<(), String> {
    check(key).map_err(|why| {
        format!(
            "{flag} ({env}) is refused: {why}. Use a random key of at least {MIN_CHARS} \
             characters, such as `openssl rand -base64 32` makes"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_short_and_repetitive_keys_are_refused() {
        for (key, why) in [
            ("", WeakKey::Empty),
            ("change-me", WeakKey::Placeholder("changeme")),
            (
                "CHANGE_ME-0123456789abcdefghijklmnopqrstuvwxyz",
                WeakKey::Placeholder("changeme"),
            ),
            (
                "django-insecure-k9#2m@x!v7q$w1z&e4r%t8y*u3i(o6p)a5s",
                WeakKey::Placeholder("insecure"),
            ),
            (
                "your secret key here, 0123456789abcdef",
                WeakKey::Placeholder("yoursecret"),
            ),
            ("e2e-test-secret", WeakKey::Short(15)),
            ("s", WeakKey::Short(1)),
            (&"ab".repeat(40), WeakKey::Repetitive(2)),
            (&"secret".repeat(8), WeakKey::Repetitive(5)),
        ] {
            assert_eq!(check(key), Err(why), "{key:?}");
        }
    }

    #[test]
    fn random_keys_pass() {
        for key in [
            "q3Vx9mN2pL7kR4tW8yZ1bC6dF0gH5jK-", // 32 base64url characters
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0", // 32 hex digits
            "k9#2m@x!v7q$w1z&e4r%t8y*u3i(o6p)a5s-djangos-own-50c", // Django's kind
        ] {
            assert_eq!(check(key), Ok(()), "{key:?}");
        }
    }
}
