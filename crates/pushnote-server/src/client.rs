//! One client's protocol state: the SockJS handler that registers sessions in the hub and
//! answers their requests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pushnote::{Signer, TokenError};
use sockjs::Session;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::{self, ErrorCode, Refusal, Request};

/// How the server checks tokens.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// The signer holding the current and old secrets, and the salt.
    pub signer: Signer,
    /// Tokens older than this are refused; `None` accepts any age.
    pub max_age: Option<Duration>,
}

/// The SockJS handler of pushnote-server.
pub struct ClientHandler {
    hub: Arc<Hub>,
    tokens: Option<TokenPolicy>,
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
    pub fn new(hub: Arc<Hub>, tokens: Option<TokenPolicy>, metrics: Arc<Metrics>) -> Self {
        ClientHandler {
            hub,
            tokens,
            metrics,
        }
    }

    fn verify(&self, token: &str) -> Result<String, Refusal> {
        let Some(policy) = &self.tokens else {
            return Err(Refusal::new(ErrorCode::NoSecret, NO_SECRET_MESSAGE));
        };
        policy
            .signer
            .verify(token, policy.max_age)
            .map_err(|e| match e {
                TokenError::Expired { .. } => Refusal::new(
                    ErrorCode::TokenExpired,
                    format!("{e}: ask the app for a new token"),
                ),
                _ => Refusal::new(
                    ErrorCode::InvalidToken,
                    "invalid token: it is malformed, forged, or signed with another secret or salt",
                ),
            })
    }

    fn handle(&self, session: &Session, request: Request) -> Result<sockjs::Message, Refusal> {
        match request {
            Request::Subscribe { token } => {
                let user = self.verify(&token).inspect_err(|_| {
                    self.metrics
                        .subscribes_refused
                        .fetch_add(1, Ordering::Relaxed);
                })?;
                self.hub.subscribe(session, &user);
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
        self.hub.add(session);
    }

    fn on_message(&self, session: &Session, message: String) {
        let reply = protocol::parse(&message).and_then(|r| self.handle(session, r));
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
    }

    fn on_close(&self, session: &Session) {
        self.hub.remove(session);
    }
}
