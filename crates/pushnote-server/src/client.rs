//! One client's protocol state: the SockJS handler that registers sessions in the hub and
//! answers their requests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pushnote::{Signer, TokenError};
use sockjs::Session;

use crate::config;
use crate::hub::{Hub, Subscribed};
use crate::metrics::Metrics;
use crate::protocol::{self, ErrorCode, Refusal, Request};

/// How the server checks tokens.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// The signer holding the current and old secrets, and the salt.
    pub signer: Signer,
    /// Tokens older than this are refused; `None` accepts any age.
    pub max_age: Option<Duration>,
    /// Tokens stamped further than this in the future are refused as invalid.
    pub max_skew: Duration,
}

/// How much one server, one user and one session may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open sessions on this server; one more is closed at once with 3003 "Server full".
    pub max_sessions: usize,
    /// Sessions of one user on this server; one more subscribe is refused
    /// (`too_many_sessions`) and the session keeps broadcasts.
    pub max_sessions_per_user: usize,
    /// Subscribe requests of one session; one more is refused (`too_many_attempts`) and the
    /// session is closed with 3011.
    pub max_subscribe_attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: config::DEFAULT_MAX_SESSIONS,
            max_sessions_per_user: config::DEFAULT_MAX_SESSIONS_PER_USER,
            max_subscribe_attempts: config::DEFAULT_MAX_SUBSCRIBE_ATTEMPTS,
        }
    }
}

/// The SockJS handler of pushnote-server.
pub struct ClientHandler {
    hub: Arc<Hub>,
    tokens: Option<TokenPolicy>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

/// What a subscribe without a configured secret is told.
pub const NO_SECRET_MESSAGE: &str =
    "this server has no token secret, so it serves broadcasts only: \
start pushnote-server with --secret or the PUSHNOTE_SECRET environment variable, \
set to the secret your app signs tokens with";

impl ClientHandler {
    /// A handler registering sessions in `hub` and checking tokens with `tokens` (none: every
    /// subscribe is refused with `no_secret`).
    pub fn new(
        hub: Arc<Hub>,
        tokens: Option<TokenPolicy>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        ClientHandler {
            hub,
            tokens,
            limits,
            metrics,
        }
    }

    fn verify(&self, token: &str) -> Result<String, Refusal> {
        let Some(policy) = &self.tokens else {
            return Err(Refusal::new(ErrorCode::NoSecret, NO_SECRET_MESSAGE));
        };
        policy
            .signer
            .verify_within(token, policy.max_age, policy.max_skew)
            .map_err(|e| match e {
                TokenError::Expired { .. } => Refusal::new(
                    ErrorCode::TokenExpired,
                    format!("{e}: ask the app for a new token"),
                ),
                TokenError::FromTheFuture { .. } => Refusal::new(
                    ErrorCode::InvalidToken,
                    format!("invalid token: {e}; check the clock of the app's machine"),
                ),
                _ => Refusal::new(
                    ErrorCode::InvalidToken,
                    "invalid token: it is malformed, forged, or signed with another secret or salt",
                ),
            })
    }

    fn refused(&self) {
        self.metrics
            .subscribes_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    fn handle(&self, session: &Session, request: Request) -> Result<sockjs::Message, Refusal> {
        match request {
            Request::Subscribe { token } => {
                let attempts = self.hub.count_attempt(session);
                if attempts > self.limits.max_subscribe_attempts {
                    self.refused();
                    // on_message closes the session once this refusal is queued.
                    return Err(Refusal::new(
                        ErrorCode::TooManyAttempts,
                        format!(
                            "more than {} subscribe requests on one session: closing it",
                            self.limits.max_subscribe_attempts
                        ),
                    ));
                }
                let user = self.verify(&token).inspect_err(|_| self.refused())?;
                match self
                    .hub
                    .subscribe(session, &user, self.limits.max_sessions_per_user)
                {
                    Subscribed::Yes => {}
                    Subscribed::UserFull => {
                        self.refused();
                        return Err(Refusal::new(
                            ErrorCode::TooManySessions,
                            format!(
                                "this user already has {} sessions on this server: close one first",
                                self.limits.max_sessions_per_user
                            ),
                        ));
                    }
                    Subscribed::Gone => return Err(Refusal::new(ErrorCode::BadRequest, "closed")),
                }
                self.metrics.subscribes.fetch_add(1, Ordering::Relaxed);
                Ok(protocol::subscribed(&user))
            }
            Request::Unsubscribe => {
                self.hub.unsubscribe(session);
                Ok(protocol::unsubscribed())
            }
        }
    }
}

impl sockjs::Handler for ClientHandler {
    fn on_open(&self, session: &Session) {
        if !self.hub.add(session, self.limits.max_sessions) {
            self.metrics
                .sessions_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                max_sessions = self.limits.max_sessions,
                "server full; new session closed"
            );
            session.close(protocol::SERVER_FULL);
        }
    }

    fn on_message(&self, session: &Session, message: String) {
        let reply = protocol::parse(&message).and_then(|r| self.handle(session, r));
        let close = matches!(&reply, Err(r) if r.code == ErrorCode::TooManyAttempts);
        let reply = reply.unwrap_or_else(|refusal| {
            self.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                session = session.id(),
                code = refusal.code.as_str(),
                "client request refused"
            );
            protocol::error(&refusal)
        });
        // A full queue closes the session; nothing else to do here.
        let _ = session.send(reply);
        if close {
            session.close(protocol::TOO_MANY_ATTEMPTS);
        }
    }

    fn on_close(&self, session: &Session) {
        self.hub.remove(session);
    }
}
