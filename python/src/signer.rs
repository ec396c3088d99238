//! The `Signer` class: the tokens pages subscribe with, in Django's `TimestampSigner` format
//! (users', channels', presence channels'), and the users of tokens an app makes itself
//! (opaque tokens).

use pyo3::prelude::*;

use crate::errors::token_error;

/// Mints user, channel and presence tokens with a secret and a salt, as pushnote-server checks them.
#[pyclass(module = "pushnote._native", frozen)]
pub struct Signer {
    inner: pushnote::Signer,
}

/// A secret as Django settings hold it: text (`SECRET_KEY`), or bytes.
#[derive(FromPyObject)]
enum Secret {
    Text(String),
    Bytes(Vec<u8>),
}

#[pymethods]
impl Signer {
    /// A signer with `secret` (str or bytes; the server's `--secret`) and `salt` (the
    /// server's `--salt`).
    #[new]
    #[pyo3(signature = (secret, salt = pushnote::DEFAULT_SALT))]
    fn new(py: Python<'_>, secret: Secret, salt: &str) -> PyResult<Self> {
        let secret = match secret {
            Secret::Text(s) => s.into_bytes(),
            Secret::Bytes(b) => b,
        };
        let inner = pushnote::Signer::with_salt(secret, salt, std::iter::empty::<&[u8]>())
            .map_err(|e| token_error(py, e, "secret"))?;
        Ok(Signer { inner })
    }

    /// The token of user id `user`, stamped now.
    fn tokenize(&self, py: Python<'_>, user: &str) -> PyResult<String> {
        self.inner
            .tokenize(user)
            .map_err(|e| token_error(py, e, user))
    }

    /// The token of user id `user`, stamped at `timestamp` (Unix seconds).
    fn tokenize_at(&self, py: Python<'_>, user: &str, timestamp: u64) -> PyResult<String> {
        self.inner
            .tokenize_at(user, timestamp)
            .map_err(|e| token_error(py, e, user))
    }

    /// The token that lets a page join `channel`: any page holding it, or with `user` only a
    /// page subscribed as that user.
    #[pyo3(signature = (channel, user = None))]
    fn channel_token(&self, py: Python<'_>, channel: &str, user: Option<&str>) -> PyResult<String> {
        self.inner
            .channel_token(channel, user)
            .map_err(|e| match e {
                pushnote::TokenError::InvalidUserId => token_error(py, e, user.unwrap_or("")),
                e => token_error(py, e, channel),
            })
    }

    /// The token that lets a page join presence channel `channel` (`presence-…`) as `user`,
    /// whom the channel's other members see with `info`: JSON text (None is `null`), passed
    /// on as written without its white space.
    #[pyo3(signature = (channel, user, info = None))]
    fn presence_token(
        &self,
        py: Python<'_>,
        channel: &str,
        user: &str,
        info: Option<&str>,
    ) -> PyResult<String> {
        self.inner
            .presence_token(channel, user, info)
            .map_err(|e| match e {
                pushnote::TokenError::InvalidChannel => token_error(py, e, channel),
                e => token_error(py, e, user),
            })
    }

    /// The user id a server started with `--opaque-tokens` gives a page that subscribes with
    /// the opaque `token` (one the app made, not signed): a keyed hash of it. Raises
    /// TokenError (without naming the token) for a token out of bounds or of the signed form.
    fn opaque_user(&self, py: Python<'_>, token: &str) -> PyResult<String> {
        self.inner
            .opaque_user(token)
            .map_err(|e| token_error(py, e, "the token's user"))
    }

    /// The user id a page that subscribed with `token` has on a server started with
    /// `--opaque-tokens`: a signed token's user (signature checked, age not), else the opaque
    /// token's.
    fn user_of_token(&self, py: Python<'_>, token: &str) -> PyResult<String> {
        self.inner
            .user_of_token(token)
            .map_err(|e| token_error(py, e, "the token's user"))
    }

    fn __repr__(&self) -> &'static str {
        "<pushnote._native.Signer>"
    }
}
