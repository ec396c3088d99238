//! One client's protocol state: the SockJS handler that registers sessions in the hub and
//! answers their requests: subscribing as a user with a token, joining and leaving channels
//! (private ones with a channel token).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pushnote::token::ChannelGrant;
use pushnote::{wire, Signer, TokenError};
use sockjs::Session;

use crate::config;
use crate::hub::{Hub, Joined, Subscribed};
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
    /// Subscribe requests with a token (a user's, a private channel's) of one session; one
    /// more is refused (`too_many_attempts`) and the session is closed with 3011.
    pub max_subscribe_attempts: u32,
    /// Channels one session may be in; one more is refused (`too_many_channels`).
    pub max_channels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: config::DEFAULT_MAX_SESSIONS,
            max_sessions_per_user: config::DEFAULT_MAX_SESSIONS_PER_USER,
            max_subscribe_attempts: config::DEFAULT_MAX_SUBSCRIBE_ATTEMPTS,
            max_channels: config::DEFAULT_MAX_CHANNELS,
        }
    }
}

impl Limits {
    /// The channel requests (joins and leaves) a session may make at once: twice what it may
    /// hold, so a page can join all its channels, leave them and join them again.
    pub fn channel_request_burst(&self) -> u32 {
        u32::try_from(self.max_channels.saturating_mul(2))
            .unwrap_or(u32::MAX)
            .max(config::CHANNEL_REQUESTS_PER_SECOND)
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
    "this server has no token secret, so it serves broadcasts and public channels only: \
start pushnote-server with --secret or the PUSHNOTE_SECRET environment variable, \
set to the secret your app signs tokens with";

/// The refusal of a token the signer did not accept.
fn refusal_of(e: TokenError) -> Refusal {
    match e {
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
            "invalid token: it is malformed, forged, of another kind (a user's token for a \
             channel, say), or signed with another secret or salt",
        ),
    }
}

impl ClientHandler {
    /// A handler registering sessions in `hub` and checking tokens with `tokens` (none: every
    /// subscribe with a token is refused with `no_secret`).
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

    fn policy(&self) -> Result<&TokenPolicy, Refusal> {
        self.tokens
            .as_ref()
            .ok_or_else(|| Refusal::new(ErrorCode::NoSecret, NO_SECRET_MESSAGE))
    }

    fn verify(&self, token: &str) -> Result<String, Refusal> {
        let policy = self.policy()?;
        policy
            .signer
            .verify_within(token, policy.max_age, policy.max_skew)
            .map_err(refusal_of)
    }

    fn verify_channel(&self, token: &str) -> Result<ChannelGrant, Refusal> {
        let policy = self.policy()?;
        policy
            .signer
            .verify_channel_within(token, policy.max_age, policy.max_skew)
            .map_err(refusal_of)
    }

    /// Counts a subscribe request with a token; the refusal past the limit closes the session.
    fn attempt(&self, session: &Session) -> Result<(), Refusal> {
        if self.hub.count_attempt(session) > self.limits.max_subscribe_attempts {
            // on_message closes the session once this refusal is queued.
            return Err(Refusal::new(
                ErrorCode::TooManyAttempts,
                format!(
                    "more than {} subscribe requests with a token on one session: closing it",
                    self.limits.max_subscribe_attempts
                ),
            ));
        }
        Ok(())
    }

    fn subscribe(&self, session: &Session, token: &str) -> Result<sockjs::Message, Refusal> {
        self.attempt(session)?;
        let user = self.verify(token)?;
        match self
            .hub
            .subscribe(session, &user, self.limits.max_sessions_per_user)
        {
            Subscribed::Yes => {}
            Subscribed::UserFull => {
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
        self.leave_channels_of_other_users(session);
        Ok(protocol::subscribed(&user))
    }

    /// Tells `session` of the channels it left because their grant was for another user.
    fn leave_channels_of_other_users(&self, session: &Session) {
        for channel in self.hub.leave_channels_of_other_users(session) {
            let _ = session.send(protocol::left(&channel));
        }
    }

    /// Checks a channel request's name, then its budget (a name refused costs none).
    fn channel_request(&self, session: &Session, channel: &str) -> Result<(), Refusal> {
        wire::check_channel(channel)
            .map_err(|e| Refusal::new(ErrorCode::InvalidChannel, e.to_string()))?;
        let burst = self.limits.channel_request_burst();
        if !self
            .hub
            .spend_request(session, burst, config::CHANNEL_REQUESTS_PER_SECOND)
        {
            return Err(Refusal::new(
                ErrorCode::TooManyRequests,
                format!(
                    "more than {burst} channel requests at once or {} a second: try again later",
                    config::CHANNEL_REQUESTS_PER_SECOND
                ),
            ));
        }
        Ok(())
    }

    fn join(
        &self,
        session: &Session,
        channel: &str,
        token: Option<&str>,
    ) -> Result<sockjs::Message, Refusal> {
        self.channel_request(session, channel)?;
        let mut bound_to = None;
        if wire::is_private(channel) {
            self.attempt(session)?;
            let Some(token) = token else {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "a private channel needs a channel token from the app: \
                     {\"channel\": …, \"token\": …}",
                ));
            };
            let grant = self.verify_channel(token)?;
            if grant.channel != channel {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "the token grants another channel",
                ));
            }
            if let Some(user) = &grant.user {
                if self.hub.user_of(session).as_deref() != Some(user.as_str()) {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "the token grants this channel to another user's sessions: subscribe \
                         with that user's token first",
                    ));
                }
            }
            bound_to = grant.user;
        }
        match self.hub.join_channel(
            session,
            channel,
            self.limits.max_channels,
            bound_to.as_deref(),
        ) {
            Joined::Yes => Ok(protocol::joined(channel)),
            Joined::TooMany => Err(Refusal::new(
                ErrorCode::TooManyChannels,
                format!(
                    "this session is in {} channels already: leave one first",
                    self.limits.max_channels
                ),
            )),
            Joined::Gone => Err(Refusal::new(ErrorCode::BadRequest, "closed")),
        }
    }

    fn handle(&self, session: &Session, request: Request) -> Result<sockjs::Message, Refusal> {
        match request {
            Request::Subscribe { token } => {
                let reply = self.subscribe(session, &token);
                match &reply {
                    Ok(_) => &self.metrics.subscribes,
                    Err(_) => &self.metrics.subscribes_refused,
                }
                .fetch_add(1, Ordering::Relaxed);
                reply
            }
            Request::Unsubscribe => {
                self.hub.unsubscribe(session);
                self.leave_channels_of_other_users(session);
                Ok(protocol::unsubscribed())
            }
            Request::Join { channel, token } => {
                let reply = self
                    .join(session, &channel, token.as_deref())
                    .map_err(|r| r.on(&channel));
                match &reply {
                    Ok(_) => &self.metrics.channel_subscribes,
                    Err(_) => &self.metrics.channel_subscribes_refused,
                }
                .fetch_add(1, Ordering::Relaxed);
                reply
            }
            Request::Leave { channel } => {
                self.channel_request(session, &channel)
                    .map_err(|r| r.on(&channel))?;
                self.hub.leave_channel(session, &channel);
                Ok(protocol::left(&channel))
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
