//! Tokens: a page's proof of which user it is, minted by the app and checked by the server.
//!
//! The format is Django's `TimestampSigner`, so a Django app and this crate mint tokens each
//! other accepts: `value:timestamp:signature`, where `value` is the user id, `timestamp` is the
//! Unix time in seconds in base 62 (`0-9A-Za-z`), and `signature` is URL-safe base64 without
//! padding of HMAC-SHA256 over `value:timestamp`, keyed with SHA-256(salt + "signer" + secret).
//! In Django: `TimestampSigner(key=SECRET, salt=SALT).sign(user_id)`.
//!
//! Verification compares signatures in constant time, tries old secrets (key rotation), and
//! reads nothing from a token whose signature is not valid. It is stricter than Django in one
//! place: a token stamped more than a small clock skew ([`DEFAULT_MAX_CLOCK_SKEW`]) in the
//! future is refused, where Django accepts it (and so would accept it for ever more, as its age
//! check sees a negative age).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::member::{Member, MemberError};
use crate::opaque::{self, OpaqueError};
use crate::wire;

/// The salt pushnote uses unless configured otherwise. Apps and servers must agree on it.
pub const DEFAULT_SALT: &str = "pushnote";
/// How far in the future a token's timestamp may be, for clocks that differ between the app's
/// machine and the server's; a token stamped later is refused ([`TokenError::FromTheFuture`]).
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// The separator between the parts of a token.
const SEP: char = ':';
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a token was refused. A token that fails its signature check says nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `value:timestamp:signature`.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match under any configured secret and salt.
    #[error("invalid token signature")]
    BadSignature,
    /// Signed correctly, but older than the maximum age.
    #[error("token expired ({age_secs} s old, limit {max_age_secs} s)")]
    Expired {
        /// How old the token is.
        age_secs: u64,
        /// The limit it exceeded.
        max_age_secs: u64,
    },
    /// Signed correctly, but stamped further in the future than the allowed clock skew.
    #[error("token stamped {ahead_secs} s in the future (clock skew allowed: {max_skew_secs} s)")]
    FromTheFuture {
        /// How far ahead of this machine's clock the token's timestamp is.
        ahead_secs: u64,
        /// The skew it exceeded.
        max_skew_secs: u64,
    },
    /// A channel token whose channel name is invalid (or one asked for such a channel).
    #[error("token holds an invalid channel name")]
    InvalidChannel,
    /// Signed correctly, but the value is not a valid user id.
    #[error("token holds an invalid user id")]
    InvalidUserId,
    /// A signer needs a non-empty secret.
    #[error("the secret is empty")]
    EmptySecret,
    /// An opaque token out of its bounds, or one that has the form of a signed token.
    #[error(transparent)]
    Opaque(#[from] OpaqueError),
    /// A presence token whose member is not one (or a presence channel's token without one).
    #[error(transparent)]
    Member(#[from] MemberError),
}

/// What the salt of channel tokens adds to the salt of user tokens, so that neither kind of
/// token passes for the other (a user named `private-x` is no grant of channel `private-x`).
pub const CHANNEL_SALT_SUFFIX: &str = ".channel";

/// Mints and verifies tokens with one current secret, any number of old ones, and a salt.
#[derive(Clone)]
pub struct Signer {
    /// Derived HMAC keys of user tokens: the current secret's first, then the old ones'.
    keys: Vec<[u8; 32]>,
    /// The same for channel tokens, with the salt + [`CHANNEL_SALT_SUFFIX`].
    channel_keys: Vec<[u8; 32]>,
    /// The key of opaque tokens' user ids, with the salt + [`opaque::OPAQUE_SALT_SUFFIX`]:
    /// the current secret's only.
    opaque_key: [u8; 32],
}

/// What a channel token grants: subscribing to `channel`, by any session or only by a session
/// subscribed as `user`; for a presence channel, as `member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGrant {
    /// The channel the token names.
    pub channel: String,
    /// The only user whose sessions the token admits; `None` admits any session holding it.
    pub user: Option<String>,
    /// For a presence channel, who joins it and the app's info about them.
    pub member: Option<Member>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn derive_key(salt: &str, secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b"signer");
    h.update(secret);
    h.finalize().into()
}

impl Signer {
    /// A signer with `secret` and the [`DEFAULT_SALT`].
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Signer, TokenError> {
        Signer::with_salt(secret, DEFAULT_SALT, std::iter::empty::<&[u8]>())
    }

    /// A signer with `secret`, `salt`, and old secrets still accepted while keys rotate.
    pub fn with_salt<S: AsRef<[u8]>>(
        secret: impl AsRef<[u8]>,
        salt: &str,
        old_secrets: impl IntoIterator<Item = S>,
    ) -> Result<Signer, TokenError> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(TokenError::EmptySecret);
        }
        let channel_salt = format!("{salt}{CHANNEL_SALT_SUFFIX}");
        let opaque_key = derive_key(&format!("{salt}{}", opaque::OPAQUE_SALT_SUFFIX), secret);
        let mut keys = vec![derive_key(salt, secret)];
        let mut channel_keys = vec![derive_key(&channel_salt, secret)];
        for old in old_secrets {
            let old = old.as_ref();
            if old.is_empty() {
                return Err(TokenError::EmptySecret);
            }
            keys.push(derive_key(salt, old));
            channel_keys.push(derive_key(&channel_salt, old));
        }
        Ok(Signer {
            keys,
            channel_keys,
            opaque_key,
        })
    }

    /// The token for `user`, stamped now. Fails only for an invalid user id.
    pub fn tokenize(&self, user: impl std::fmt::Display) -> Result<String, TokenError> {
        self.tokenize_at(&user.to_string(), unix_now())
    }

    /// The token for `user`, stamped at `timestamp` (Unix seconds).
    pub fn tokenize_at(&self, user: &str, timestamp: u64) -> Result<String, TokenError> {
        wire::check_user_id(user).map_err(|_| TokenError::InvalidUserId)?;
        Ok(sign(&self.keys[0], user, timestamp))
    }

    /// The token that lets a page subscribe to `channel`, stamped now: any session holding it
    /// when `user` is `None`, else only a session subscribed as `user`. Fails for an invalid
    /// channel name or user id.
    pub fn channel_token(&self, channel: &str, user: Option<&str>) -> Result<String, TokenError> {
        self.channel_token_at(channel, user, unix_now())
    }

    /// The channel token for `channel` (and `user`), stamped at `timestamp` (Unix seconds).
    /// In Django: `TimestampSigner(key=SECRET, salt=SALT + ".channel").sign(VALUE)`, where
    /// VALUE is the channel's name, or the name, `:` and the user id.
    pub fn channel_token_at(
        &self,
        channel: &str,
        user: Option<&str>,
        timestamp: u64,
    ) -> Result<String, TokenError> {
        wire::check_channel(channel).map_err(|_| TokenError::InvalidChannel)?;
        if wire::is_presence(channel) {
            // A presence channel's token names its member: presence_token.
            return Err(MemberError::Malformed.into());
        }
        let value = match user {
            None => channel.to_owned(),
            Some(user) => {
                wire::check_user_id(user).map_err(|_| TokenError::InvalidUserId)?;
                format!("{channel}{SEP}{user}")
            }
        };
        Ok(sign(&self.channel_keys[0], &value, timestamp))
    }

    /// The token that lets a page join presence channel `channel` (`presence-…`) as `user`,
    /// whom the channel's other members see with `info` (JSON text; `None` is `null`), stamped
    /// now. Fails for a channel that is not a presence channel's, an invalid user id or info
    /// that is not JSON.
    pub fn presence_token(
        &self,
        channel: &str,
        user: &str,
        info: Option<&str>,
    ) -> Result<String, TokenError> {
        self.presence_token_at(channel, user, info, unix_now())
    }

    /// The presence token of [`Signer::presence_token`], stamped at `timestamp`. In Django:
    /// `TimestampSigner(key=SECRET, salt=SALT + ".channel").sign(CHANNEL + ":" +
    /// json.dumps({"user": USER, "info": INFO}, separators=(",", ":")))`.
    pub fn presence_token_at(
        &self,
        channel: &str,
        user: &str,
        info: Option<&str>,
        timestamp: u64,
    ) -> Result<String, TokenError> {
        wire::check_presence_channel(channel).map_err(|_| TokenError::InvalidChannel)?;
        let member = Member::new(user, info)?;
        let value = format!("{channel}{SEP}{}", member.to_json());
        Ok(sign(&self.channel_keys[0], &value, timestamp))
    }

    /// Checks a channel token and returns what it grants, accepting timestamps up to
    /// `max_skew` ahead of this machine's clock.
    pub fn verify_channel_within(
        &self,
        token: &str,
        max_age: Option<Duration>,
        max_skew: Duration,
    ) -> Result<ChannelGrant, TokenError> {
        self.verify_channel_at(token, max_age, max_skew, unix_now())
    }

    /// Checks a channel token as of `now` (Unix seconds).
    pub fn verify_channel_at(
        &self,
        token: &str,
        max_age: Option<Duration>,
        max_skew: Duration,
        now: u64,
    ) -> Result<ChannelGrant, TokenError> {
        let value = unsign(&self.channel_keys, token, max_age, max_skew, now)?;
        // Channel names have no ':', so the first one ends the name.
        let (channel, rest) = match value.split_once(SEP) {
            Some((channel, rest)) => (channel, Some(rest)),
            None => (value, None),
        };
        wire::check_channel(channel).map_err(|_| TokenError::InvalidChannel)?;
        if wire::is_presence(channel) {
            let member = Member::parse(rest.ok_or(MemberError::Malformed)?)?;
            return Ok(ChannelGrant {
                channel: channel.to_owned(),
                user: None,
                member: Some(member),
            });
        }
        if let Some(user) = rest {
            wire::check_user_id(user).map_err(|_| TokenError::InvalidUserId)?;
        }
        Ok(ChannelGrant {
            channel: channel.to_owned(),
            user: rest.map(str::to_owned),
            member: None,
        })
    }

    /// The user id a server started with `--opaque-tokens` gives a page that subscribes with
    /// the opaque `token` (one the app made, not signed): `~` and the keyed hash of the token
    /// (`opaque.rs` has the formula). Notifying that user reaches those pages; the token
    /// itself never travels the bus. Refused, without naming the token, out of its bounds or
    /// when it has the form of a signed token (servers check such a token as one).
    pub fn opaque_user(&self, token: &str) -> Result<String, TokenError> {
        if opaque::looks_signed(token) {
            return Err(OpaqueError::LooksSigned.into());
        }
        opaque::check_opaque(token)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.opaque_key)
            .expect("HMAC takes keys of any size");
        mac.update(token.as_bytes());
        let hash = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{}{hash}", opaque::OPAQUE_USER_PREFIX))
    }

    /// The user id a page that subscribed with `token` has on a server started with
    /// `--opaque-tokens`, whichever the token is: a signed token's user (its signature is
    /// checked, its age is not), else the opaque token's ([`Signer::opaque_user`]).
    pub fn user_of_token(&self, token: &str) -> Result<String, TokenError> {
        if opaque::looks_signed(token) {
            self.verify_within(token, None, DEFAULT_MAX_CLOCK_SKEW)
        } else {
            self.opaque_user(token)
        }
    }

    /// Checks `token` and returns its user id. `max_age` of `None` accepts any age; a token
    /// stamped more than [`DEFAULT_MAX_CLOCK_SKEW`] in the future is refused.
    pub fn verify(&self, token: &str, max_age: Option<Duration>) -> Result<String, TokenError> {
        self.verify_within(token, max_age, DEFAULT_MAX_CLOCK_SKEW)
    }

    /// Checks `token` and returns its user id, accepting timestamps up to `max_skew` ahead of
    /// this machine's clock.
    pub fn verify_within(
        &self,
        token: &str,
        max_age: Option<Duration>,
        max_skew: Duration,
    ) -> Result<String, TokenError> {
        self.verify_at(token, max_age, max_skew, unix_now())
    }

    /// Checks `token` as of `now` (Unix seconds), accepting timestamps up to `max_skew` ahead
    /// of `now`.
    pub fn verify_at(
        &self,
        token: &str,
        max_age: Option<Duration>,
        max_skew: Duration,
        now: u64,
    ) -> Result<String, TokenError> {
        let user = unsign(&self.keys, token, max_age, max_skew, now)?;
        wire::check_user_id(user).map_err(|_| TokenError::InvalidUserId)?;
        Ok(user.to_owned())
    }
}

/// `value:timestamp` signed with `key`: `value:timestamp:signature`.
fn sign(key: &[u8; 32], value: &str, timestamp: u64) -> String {
    let value = format!("{value}{SEP}{}", base62_encode(timestamp));
    let signature = signature(key, &value);
    format!("{value}{SEP}{signature}")
}

/// The value of `token` once its signature (under any of `keys`, in constant time) and its
/// timestamp are checked; nothing is read from a token whose signature is not valid.
fn unsign<'t>(
    keys: &[[u8; 32]],
    token: &'t str,
    max_age: Option<Duration>,
    max_skew: Duration,
    now: u64,
) -> Result<&'t str, TokenError> {
    let (value, sig) = token.rsplit_once(SEP).ok_or(TokenError::Malformed)?;
    let valid = keys.iter().any(|key| {
        let expected = signature(key, value);
        bool::from(expected.as_bytes().ct_eq(sig.as_bytes()))
    });
    if !valid {
        return Err(TokenError::BadSignature);
    }
    // From here on the content is the signer's own.
    let (signed, ts) = value.rsplit_once(SEP).ok_or(TokenError::Malformed)?;
    let ts = base62_decode(ts).ok_or(TokenError::Malformed)?;
    let ahead = ts.saturating_sub(now);
    if ahead > max_skew.as_secs() {
        return Err(TokenError::FromTheFuture {
            ahead_secs: ahead,
            max_skew_secs: max_skew.as_secs(),
        });
    }
    if let Some(max) = max_age {
        let age = now.saturating_sub(ts);
        if age > max.as_secs() {
            return Err(TokenError::Expired {
                age_secs: age,
                max_age_secs: max.as_secs(),
            });
        }
    }
    Ok(signed)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn signature(key: &[u8; 32], value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(value.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Base 62 as Django writes it (`0` for zero).
fn base62_encode(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(BASE62[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("base 62 digits are ASCII")
}

fn base62_decode(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 11 {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, b| {
        let d = BASE62.iter().position(|&c| c == b)? as u64;
        acc.checked_mul(62)?.checked_add(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = DEFAULT_MAX_CLOCK_SKEW;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn base62_matches_django() {
        // django.utils.baseconv / signing.b62_encode
        assert_eq!(base62_encode(0), "0");
        assert_eq!(base62_encode(61), "z");
        assert_eq!(base62_encode(62), "10");
        assert_eq!(base62_encode(1_700_000_000), "1r31eq");
        assert_eq!(base62_decode("1r31eq"), Some(1_700_000_000));
        assert_eq!(base62_decode(""), None);
        assert_eq!(base62_decode("-1"), None);
        assert_eq!(base62_decode("zzzzzzzzzzz"), None, "overflow");
    }

    #[test]
    fn base64_matches_rfc4648_url_alphabet_without_padding() {
        assert_eq!(URL_SAFE_NO_PAD.encode(b""), "");
        assert_eq!(URL_SAFE_NO_PAD.encode(b"f"), "Zg");
        assert_eq!(URL_SAFE_NO_PAD.encode(b"fo"), "Zm8");
        assert_eq!(URL_SAFE_NO_PAD.encode(b"foo"), "Zm9v");
        assert_eq!(URL_SAFE_NO_PAD.encode([0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_token_verifies_with_its_secret_and_salt_only() {
        let s = Signer::new("s3cret").unwrap();
        let t = s.tokenize_at("42", NOW).unwrap();
        // TimestampSigner(key="s3cret", salt="pushnote").sign("42") at that instant, in Django.
        assert_eq!(t, "42:1r31eq:egqH_37soYTJMP9PS6Nui99-AAHApGie8p7ZkvIjd3M");
        assert_eq!(s.verify_at(&t, None, SKEW, NOW).unwrap(), "42");
        let other_secret = Signer::new("other").unwrap();
        assert_eq!(
            other_secret.verify_at(&t, None, SKEW, NOW),
            Err(TokenError::BadSignature)
        );
        let other_salt = Signer::with_salt("s3cret", "else", [""; 0]).unwrap();
        assert_eq!(
            other_salt.verify_at(&t, None, SKEW, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampering_anywhere_breaks_the_signature() {
        let s = Signer::new("s3cret").unwrap();
        let t = s.tokenize_at("4", NOW).unwrap();
        let forged_user = t.replacen('4', "5", 1);
        assert_eq!(
            s.verify_at(&forged_user, None, SKEW, NOW),
            Err(TokenError::BadSignature)
        );
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            s.verify_at(&flipped, None, SKEW, NOW),
            Err(TokenError::BadSignature)
        );
        for junk in ["", ":", "::", "42", "42:abc", "a:b:c:d"] {
            assert!(s.verify_at(junk, None, SKEW, NOW).is_err(), "{junk:?}");
        }
        assert_eq!(s.verify_at("", None, SKEW, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn a_token_from_the_future_is_refused_past_the_clock_skew_whatever_the_max_age() {
        let s = Signer::new("k").unwrap();
        let century = 100 * 365 * 86_400;
        let t = s.tokenize_at("1", NOW + century).unwrap();
        for max_age in [None, Some(Duration::from_secs(60))] {
            assert_eq!(
                s.verify_at(&t, max_age, SKEW, NOW),
                Err(TokenError::FromTheFuture {
                    ahead_secs: century,
                    max_skew_secs: SKEW.as_secs()
                })
            );
        }
        assert!(s.verify(&t, None).is_err(), "the default skew applies");
        let within = s.tokenize_at("1", NOW + SKEW.as_secs()).unwrap();
        assert_eq!(s.verify_at(&within, None, SKEW, NOW).unwrap(), "1");
        let beyond = s.tokenize_at("1", NOW + SKEW.as_secs() + 1).unwrap();
        assert!(s.verify_at(&beyond, None, SKEW, NOW).is_err());
    }

    #[test]
    fn presence_tokens_name_their_member_as_django_signs_them() {
        let s = Signer::new("s3cret").unwrap();
        // TimestampSigner(key="s3cret", salt="pushnote.channel").sign('presence-room-7:' +
        // json.dumps({"user": "42", "info": {"name": "Ann"}}, separators=(",", ":")))
        let django = "presence-room-7:{\"user\":\"42\",\"info\":{\"name\":\"Ann\"}}:1r31eq:\
                      WVS9dJBwAIrzti_aEQtphs99fN83j5OXMIpnUjpPGwY";
        let minted = s
            .presence_token_at("presence-room-7", "42", Some(r#"{"name": "Ann"}"#), NOW)
            .unwrap();
        assert_eq!(minted, django);
        let grant = s.verify_channel_at(django, None, SKEW, NOW).unwrap();
        assert_eq!(grant.channel, "presence-room-7");
        assert_eq!(grant.user, None, "a member needs no user subscription");
        let member = grant.member.unwrap();
        assert_eq!(
            (member.user.as_str(), member.info.as_str()),
            ("42", r#"{"name":"Ann"}"#)
        );
        // A presence channel's token without its member, and a member for another channel.
        let bare = sign(&s.channel_keys[0], "presence-room-7", NOW);
        assert!(matches!(
            s.verify_channel_at(&bare, None, SKEW, NOW),
            Err(TokenError::Member(MemberError::Malformed))
        ));
        assert!(s.channel_token_at("presence-x", None, NOW).is_err());
        assert_eq!(
            s.presence_token_at("private-x", "1", None, NOW),
            Err(TokenError::InvalidChannel)
        );
    }

    #[test]
    fn channel_tokens_grant_their_channel_to_anyone_or_to_one_user() {
        let s = Signer::with_salt("k", DEFAULT_SALT, ["old"]).unwrap();
        let anyone = s.channel_token_at("private-team", None, NOW).unwrap();
        let grant = s.verify_channel_at(&anyone, None, SKEW, NOW).unwrap();
        assert_eq!(
            grant,
            ChannelGrant {
                channel: "private-team".into(),
                user: None,
                member: None,
            }
        );
        let one = s
            .channel_token_at("private-team", Some("a:42"), NOW)
            .unwrap();
        let grant = s.verify_channel_at(&one, None, SKEW, NOW).unwrap();
        assert_eq!(grant.user.as_deref(), Some("a:42"), "user ids may hold ':'");
        // Old secrets are accepted, and the age and skew apply.
        let rotated = Signer::new("old").unwrap();
        let from_old = rotated.channel_token_at("c", None, NOW).unwrap();
        assert!(s.verify_channel_at(&from_old, None, SKEW, NOW).is_ok());
        let stale = s.channel_token_at("c", None, NOW - 100).unwrap();
        assert!(matches!(
            s.verify_channel_at(&stale, Some(Duration::from_secs(99)), SKEW, NOW),
            Err(TokenError::Expired { .. })
        ));
        let future = s.channel_token_at("c", None, NOW + 1000).unwrap();
        assert!(matches!(
            s.verify_channel_at(&future, None, SKEW, NOW),
            Err(TokenError::FromTheFuture { .. })
        ));
        assert_eq!(
            s.channel_token_at("a b", None, NOW),
            Err(TokenError::InvalidChannel)
        );
    }

    #[test]
    fn user_and_channel_tokens_never_pass_for_each_other() {
        let s = Signer::new("k").unwrap();
        let user = s.tokenize_at("private-x", NOW).unwrap();
        assert_eq!(
            s.verify_channel_at(&user, None, SKEW, NOW),
            Err(TokenError::BadSignature)
        );
        let channel = s.channel_token_at("private-x", None, NOW).unwrap();
        assert_eq!(
            s.verify_at(&channel, None, SKEW, NOW),
            Err(TokenError::BadSignature)
        );
        // The formula: Django's TimestampSigner with the salt + ".channel".
        let django_like = Signer::with_salt("k", "pushnote.channel", std::iter::empty::<&str>())
            .unwrap()
            .tokenize_at("private-x", NOW)
            .unwrap();
        assert_eq!(channel, django_like);
    }

    #[test]
    fn max_age_is_enforced() {
        let s = Signer::new("k").unwrap();
        let t = s.tokenize_at("1", NOW - 100).unwrap();
        let hour = Some(Duration::from_secs(3600));
        assert!(s.verify_at(&t, hour, SKEW, NOW).is_ok());
        assert_eq!(
            s.verify_at(&t, Some(Duration::from_secs(99)), SKEW, NOW),
            Err(TokenError::Expired {
                age_secs: 100,
                max_age_secs: 99
            })
        );
    }

    #[test]
    fn old_secrets_verify_during_rotation_but_never_sign() {
        let old = Signer::new("old").unwrap();
        let t = old.tokenize_at("9", NOW).unwrap();
        let rotated = Signer::with_salt("new", DEFAULT_SALT, ["old"]).unwrap();
        assert_eq!(rotated.verify_at(&t, None, SKEW, NOW).unwrap(), "9");
        let fresh = rotated.tokenize_at("9", NOW).unwrap();
        assert_eq!(
            old.verify_at(&fresh, None, SKEW, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn user_ids_with_colons_survive() {
        let s = Signer::new("k").unwrap();
        let t = s.tokenize_at("org:7", NOW).unwrap();
        assert_eq!(s.verify_at(&t, None, SKEW, NOW).unwrap(), "org:7");
        assert_eq!(s.tokenize_at("", NOW), Err(TokenError::InvalidUserId));
        assert_eq!(s.tokenize_at("a\0", NOW), Err(TokenError::InvalidUserId));
    }

    #[test]
    fn opaque_users_are_a_keyed_hash_of_the_token_never_the_token() {
        let s = Signer::new("k").unwrap();
        let token = "0f3c2a9e8b7d4c1f9a2b3c4d5e6f7a8b";
        let user = s.opaque_user(token).unwrap();
        // base64url(HMAC-SHA256(SHA-256("pushnote.opaque" "signer" "k"), token)), in Python:
        // hmac.new(hashlib.sha256(b"pushnote.opaquesignerk").digest(), token, "sha256")
        assert_eq!(user, "~TRL-9_ZlNJ8wWr6c2qWLxaWSiBkfRpWa1YweFT7N7Xg");
        assert!(!user.contains(token));
        assert!(wire::check_user_id(&user).is_ok());
        assert_eq!(s.user_of_token(token).unwrap(), user);
        // Another secret or salt, another user; old secrets play no part.
        assert_ne!(Signer::new("k2").unwrap().opaque_user(token).unwrap(), user);
        let salted = Signer::with_salt("k", "else", [""; 0]).unwrap();
        assert_ne!(salted.opaque_user(token).unwrap(), user);
        let rotated = Signer::with_salt("k", DEFAULT_SALT, ["old"]).unwrap();
        assert_eq!(rotated.opaque_user(token).unwrap(), user);
        // Signed tokens are their user's, checked; they are never opaque.
        let signed = s.tokenize_at("42", NOW).unwrap();
        assert_eq!(s.user_of_token(&signed).unwrap(), "42");
        assert_eq!(
            s.opaque_user(&signed),
            Err(TokenError::Opaque(OpaqueError::LooksSigned))
        );
        let forged = Signer::new("other")
            .unwrap()
            .tokenize_at("42", NOW)
            .unwrap();
        assert_eq!(s.user_of_token(&forged), Err(TokenError::BadSignature));
        assert_eq!(
            s.opaque_user("short"),
            Err(TokenError::Opaque(OpaqueError::Length(5)))
        );
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert_eq!(Signer::new("").unwrap_err(), TokenError::EmptySecret);
        assert_eq!(
            Signer::with_salt("k", "s", [""]).unwrap_err(),
            TokenError::EmptySecret
        );
    }
}
