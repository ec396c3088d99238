//! One client's protocol state: the SockJS handler that registers sessions in the hub and
//! answers their requests: subscribing as a user with a token, joining and leaving channels
//! (private ones with a channel token), positions and recovery (through `Recovery`, the
//! server's own history, or `Remote`, the forwarder's, either of which puts the replies in
//! order with the messages).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use pushnote::opaque;
use pushnote::token::ChannelGrant;
use pushnote::{wire, TokenError};
use pushnote_history::Position;
use sockjs::{Message, Session};

use crate::config::{self, Limits, TokenPolicy};
use crate::hub::{Hub, Joined, Subscribed};
use crate::log_every::LogEvery;
use crate::metrics::Metrics;
use crate::presence::{self, Presence};
use crate::protocol::{self, ErrorCode, Outcome, Refusal, Request};
use crate::recovery::Recovery;
use crate::remote::Remote;

/// Where positions and what sessions missed come from.
pub enum Positions {
    /// The server's own history (`--single`).
    Local(Arc<Recovery>),
    /// The forwarder's, asked over the bus.
    Remote(Arc<Remote>),
}

impl Positions {
    /// Puts `session` in `topic` with `join` and gives it, in order, what it missed since
    /// `since`, then `reply`'s message; `start` for a `positions` request (the broadcasts),
    /// `held` unless the session is in the topic already.
    #[allow(clippy::too_many_arguments)]
    fn join<E>(
        &self,
        session: &Session,
        topic: &[u8],
        since: Option<Position>,
        start: bool,
        held: bool,
        join: impl FnOnce() -> Result<(), E>,
        reply: impl FnOnce(Outcome) -> Message + Send + 'static,
    ) -> Result<(), E> {
        match self {
            Positions::Local(r) => r.join(session, topic, since, start, join, |(), o| reply(o)),
            Positions::Remote(r) => r.join(session, topic, since, start, held, join, reply),
        }
    }
}

/// The SockJS handler of pushnote-server.
pub struct ClientHandler {
    hub: Arc<Hub>,
    tokens: Option<TokenPolicy>,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Where positions come from, if the server gives them.
    positions: Option<Positions>,
    /// Presence channels' members.
    presence: Arc<Presence>,
    /// Sessions closed because the server is full.
    full_log: LogEvery,
    /// Sessions refused before opening, for their connection or address.
    refused_log: LogEvery,
    /// Joins refused because the server holds its most channels.
    channels_full_log: LogEvery,
    /// Errors not sent to sessions that have not turned replies on.
    withheld_log: LogEvery,
}

/// What a `since` without positions on is told.
const SINCE_NEEDS_POSITIONS: &str = "\"since\" needs positions: send {\"name\": \"positions\"} \
(with the broadcasts' \"since\") before subscribing";

/// What a request for `Private-x` is told.
const PRIVATE_IN_ANOTHER_CASE: &str = "channel names are case sensitive and only names that \
start with \"private-\" in lower case are private: this one would be public, so it is refused";

/// What `positions` on a server without history is told.
const NO_HISTORY_MESSAGE: &str = "this server keeps no history, so it gives no positions: \
a --single server needs --history-size above 0 for positions and recovery";

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
    /// subscribe with a token is refused with `no_secret`), giving positions and recovery
    /// through `positions` (none: `positions` is refused with `no_history`), and presence
    /// channels' members through `presence`.
    pub fn new(
        hub: Arc<Hub>,
        tokens: Option<TokenPolicy>,
        limits: Limits,
        metrics: Arc<Metrics>,
        positions: Option<Positions>,
        presence: Arc<Presence>,
    ) -> Self {
        ClientHandler {
            hub,
            tokens,
            limits,
            metrics,
            positions,
            presence,
            full_log: LogEvery::default(),
            refused_log: LogEvery::default(),
            channels_full_log: LogEvery::default(),
            withheld_log: LogEvery::default(),
        }
    }

    /// The history, when the session takes positions; a `since` without them is refused.
    fn positioned(
        &self,
        session: &Session,
        since: Option<Position>,
    ) -> Result<Option<&Positions>, Refusal> {
        let on = self.hub.positions_asked(session);
        match (&self.positions, on) {
            (Some(positions), true) => Ok(Some(positions)),
            _ if since.is_some() => Err(Refusal::new(ErrorCode::BadRequest, SINCE_NEEDS_POSITIONS)),
            _ => Ok(None),
        }
    }

    /// Turns positions on for `session`, after what it missed of the broadcasts since `since`.
    fn positions(&self, session: &Session, since: Option<Position>) -> Result<(), Refusal> {
        let positions = self
            .positions
            .as_ref()
            .ok_or_else(|| Refusal::new(ErrorCode::NoHistory, NO_HISTORY_MESSAGE))?;
        self.spend_request(session)?;
        if since.is_some() && (self.hub.positions_asked(session) || self.hub.holds_topics(session))
        {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "positions with \"since\" come once, first: before any subscribe, and before \
                 positions without it",
            ));
        }
        self.hub.ask_positions(session);
        positions.join(
            session,
            wire::BROADCAST_TOPIC,
            since,
            true,
            false,
            || Ok(()),
            protocol::positions,
        )
    }

    fn policy(&self) -> Result<&TokenPolicy, Refusal> {
        self.tokens
            .as_ref()
            .ok_or_else(|| Refusal::new(ErrorCode::NoSecret, NO_SECRET_MESSAGE))
    }

    fn verify(&self, token: &str) -> Result<String, Refusal> {
        let policy = self.policy()?;
        if policy.opaque && !opaque::looks_signed(token) {
            return self.opaque_user(policy, token);
        }
        policy
            .signer
            .verify_within(token, policy.max_age, policy.max_skew)
            .map_err(refusal_of)
    }

    /// The user of an opaque token, counted; a token out of bounds is refused without being
    /// named (nor logged).
    fn opaque_user(&self, policy: &TokenPolicy, token: &str) -> Result<String, Refusal> {
        let user = policy.signer.opaque_user(token).map_err(|e| {
            self.metrics
                .opaque_tokens_refused
                .fetch_add(1, Ordering::Relaxed);
            Refusal::new(ErrorCode::InvalidToken, format!("invalid token: {e}"))
        })?;
        self.metrics.opaque_tokens.fetch_add(1, Ordering::Relaxed);
        Ok(user)
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

    fn subscribe(
        &self,
        session: &Session,
        token: &str,
        since: Option<Position>,
    ) -> Result<Option<Message>, Refusal> {
        self.attempt(session)?;
        let user = self.verify(token)?;
        let positioned = self.positioned(session, since)?;
        let reply = self.enter(
            session,
            positioned,
            || wire::user_topic(&user).map_err(|e| (ErrorCode::InvalidToken, e)),
            since,
            // A session of the user already has had its messages.
            || self.hub.user_of(session).as_deref() == Some(user.as_str()),
            || self.hub_subscribe(session, &user),
            {
                let user = user.clone();
                move |outcome| protocol::subscribed(&user, outcome)
            },
        )?;
        self.leave_channels_of_other_users(session);
        for channel in self.presence.leave_other_users(session, &user) {
            self.hub.leave_channel(session, &channel);
            let _ = session.send(protocol::left(&channel));
        }
        Ok(reply)
    }

    /// Puts `session` in a topic with `join` and answers with `reply`: at once without
    /// positions (`positioned`); with them, with the topic's position and in order with the
    /// messages, after what the session missed since `since` unless it is in the topic
    /// `already` (then the reply is sent, and `None` returned).
    #[allow(clippy::too_many_arguments)]
    fn enter(
        &self,
        session: &Session,
        positioned: Option<&Positions>,
        topic: impl FnOnce() -> Result<Vec<u8>, (ErrorCode, wire::WireError)>,
        since: Option<Position>,
        already: impl FnOnce() -> bool,
        join: impl FnOnce() -> Result<(), Refusal>,
        reply: impl FnOnce(Option<Outcome>) -> Message + Send + 'static,
    ) -> Result<Option<Message>, Refusal> {
        let Some(positions) = positioned else {
            join()?;
            return Ok(Some(reply(None)));
        };
        let topic = topic().map_err(|(code, e)| Refusal::new(code, e.to_string()))?;
        let already = already();
        let since = since.filter(|_| !already);
        positions.join(
            session,
            &topic,
            since,
            false,
            !already,
            join,
            move |outcome| reply(Some(outcome)),
        )?;
        Ok(None)
    }

    fn hub_subscribe(&self, session: &Session, user: &str) -> Result<(), Refusal> {
        match self
            .hub
            .subscribe(session, user, self.limits.max_sessions_per_user)
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
        Ok(())
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
        if wire::is_private_in_another_case(channel) {
            return Err(Refusal::new(
                ErrorCode::InvalidChannel,
                PRIVATE_IN_ANOTHER_CASE,
            ));
        }
        self.spend_request(session)
    }

    /// Spends one of the session's requests that cost the server (and, with positions and a
    /// forwarder, the forwarder) more than an answer: channel requests and `positions`.
    fn spend_request(&self, session: &Session) -> Result<(), Refusal> {
        let burst = self.limits.channel_request_burst();
        if !self
            .hub
            .spend_request(session, burst, config::CHANNEL_REQUESTS_PER_SECOND)
        {
            return Err(Refusal::new(
                ErrorCode::TooManyRequests,
                format!(
                    "more than {burst} channel or positions requests at once or {} a second: \
                     try again later",
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
        since: Option<Position>,
    ) -> Result<Option<Message>, Refusal> {
        self.channel_request(session, channel)?;
        let positioned = self.positioned(session, since)?;
        let mut bound_to = None;
        let mut member = None;
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
            member = grant.member;
        }
        if let Some(member) = member {
            return self.join_presence(session, channel, member, positioned, since);
        }
        self.enter(
            session,
            positioned,
            || wire::channel_topic(channel).map_err(|e| (ErrorCode::InvalidChannel, e)),
            since,
            // A session in the channel already has had its messages.
            || self.hub.in_channel(session, channel),
            || self.hub_join(session, channel, bound_to.as_deref()),
            {
                let channel = channel.to_owned();
                move |outcome| protocol::joined(&channel, outcome)
            },
        )
    }

    /// Joins presence channel `channel` as `member`: in the channel's members here, then in
    /// its topic; answered with the members.
    fn join_presence(
        &self,
        session: &Session,
        channel: &str,
        member: pushnote::member::Member,
        positioned: Option<&Positions>,
        since: Option<Position>,
    ) -> Result<Option<Message>, Refusal> {
        if self
            .hub
            .user_of(session)
            .is_some_and(|user| *user != *member.user)
        {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "the token names another member than the user this session is subscribed as",
            ));
        }
        let limits = self.presence.limits();
        self.presence
            .join(session, channel, &member)
            .map_err(|why| match why {
                presence::Refused::Full => Refusal::new(
                    ErrorCode::PresenceFull,
                    format!(
                        "this presence channel has {} members, its most: try later",
                        limits.max_members
                    ),
                ),
                presence::Refused::InfoTooLarge => Refusal::new(
                    ErrorCode::BadRequest,
                    format!(
                        "the member's info is {} bytes, over the {} this server takes",
                        member.info.len(),
                        limits.max_info_bytes
                    ),
                ),
                presence::Refused::TooManyChannels => Refusal::new(
                    ErrorCode::TooManyChannels,
                    format!(
                        "this session is in {} presence channels already: leave one first",
                        limits.max_channels
                    ),
                ),
            })?;
        let presence = self.presence.clone();
        let entered = self.enter(
            session,
            positioned,
            || wire::channel_topic(channel).map_err(|e| (ErrorCode::InvalidChannel, e)),
            since,
            || self.hub.in_channel(session, channel),
            || self.hub_join(session, channel, None),
            {
                let channel = channel.to_owned();
                move |outcome| presence.joined(&channel, &member, outcome)
            },
        );
        if entered.is_err() && !self.hub.in_channel(session, channel) {
            self.presence.leave(session, channel);
        }
        entered
    }

    fn hub_join(
        &self,
        session: &Session,
        channel: &str,
        bound_to: Option<&str>,
    ) -> Result<(), Refusal> {
        match self
            .hub
            .join_channel(session, channel, self.limits.max_channels, bound_to)
        {
            Joined::Yes => Ok(()),
            Joined::TooMany => Err(Refusal::new(
                ErrorCode::TooManyChannels,
                format!(
                    "this session is in {} channels already: leave one first",
                    self.limits.max_channels
                ),
            )),
            Joined::ServerFull => {
                self.metrics
                    .channels_refused_full
                    .fetch_add(1, Ordering::Relaxed);
                let max = self.limits.max_server_channels;
                if let Some(refused) = self.channels_full_log.tick(Instant::now()) {
                    tracing::warn!(
                        max_server_channels = max,
                        refused,
                        "server holds its most channels; joins of new channels refused \
                         (channels_full)"
                    );
                }
                Err(Refusal::new(
                    ErrorCode::ChannelsFull,
                    format!(
                        "this server holds {max} channels, its most: a channel that has a \
                         session here can still be joined; try a new one later"
                    ),
                ))
            }
            Joined::Gone => Err(Refusal::new(ErrorCode::BadRequest, "closed")),
        }
    }

    /// Answers `request`: the reply to send, or `None` when it was sent in order with the
    /// messages already.
    fn handle(&self, session: &Session, request: Request) -> Result<Option<Message>, Refusal> {
        match request {
            Request::Subscribe { token, since } => {
                let reply = self.subscribe(session, &token, since);
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
                Ok(Some(protocol::unsubscribed()))
            }
            Request::Join {
                channel,
                token,
                since,
            } => {
                let reply = self
                    .join(session, &channel, token.as_deref(), since)
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
                self.presence.leave(session, &channel);
                Ok(Some(protocol::left(&channel)))
            }
            Request::Positions { since } => self.positions(session, since).map(|()| None),
        }
    }

    /// Counts and logs (at most once a second) an error not sent to `session`, which has not
    /// turned replies on: a page written for the original pushnote would take it for data.
    fn withhold_error(&self, session: &Session, refusal: &Refusal) {
        self.metrics.count_withheld(Some(refusal.code));
        if let Some(withheld) = self.withheld_log.tick(Instant::now()) {
            tracing::warn!(
                session = session.id(),
                code = refusal.code.as_str(),
                error = ?refusal.message,
                withheld,
                "client request refused; the error is not sent, as the session has not asked \
                 for replies (a page written for the original pushnote)"
            );
        }
    }
}

impl sockjs::Handler for ClientHandler {
    fn on_open(&self, session: &Session) {
        if !self.hub.add(session, self.limits.max_sessions) {
            self.metrics
                .sessions_refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(closed) = self.full_log.tick(Instant::now()) {
                tracing::warn!(
                    max_sessions = self.limits.max_sessions,
                    closed,
                    "server full; new sessions closed (3003)"
                );
            }
            session.close(protocol::SERVER_FULL);
        }
    }

    fn on_refused(&self, why: sockjs::Refused) {
        let counter = match why {
            sockjs::Refused::Connection => &self.metrics.sessions_refused_connection,
            sockjs::Refused::Address(_) => &self.metrics.sessions_refused_address,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(refused) = self.refused_log.tick(Instant::now()) {
            match why {
                sockjs::Refused::Connection => tracing::warn!(
                    refused,
                    "a connection opened more sessions than --max-sessions-per-connection; \
                     new sessions refused (3004)"
                ),
                sockjs::Refused::Address(address) => tracing::warn!(
                    refused,
                    %address,
                    "an address opened sessions faster than --session-rate-per-address; new \
                     sessions refused (3004)"
                ),
            }
        }
    }

    fn on_message(&self, session: &Session, message: String) {
        let (request, asks_replies) = protocol::read(&message);
        // On before the request is handled: its reply may be sent later, in order with the
        // messages. Every reply sent elsewhere (positions, recovery, channels left) is to a
        // session that sent positions or a channel request, which turned them on.
        let replies = self.hub.replies(session, asks_replies);
        let reply = request.and_then(|r| self.handle(session, r));
        let close = matches!(&reply, Err(r) if r.code == ErrorCode::TooManyAttempts);
        let reply = reply.unwrap_or_else(|refusal| {
            self.metrics.client_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                session = session.id(),
                code = refusal.code.as_str(),
                "client request refused"
            );
            if !replies {
                self.withhold_error(session, &refusal);
                return None;
            }
            Some(protocol::error(&refusal))
        });
        // A full queue closes the session; nothing else to do here.
        if let Some(reply) = reply {
            if replies {
                let _ = session.send(reply);
            } else {
                self.metrics.count_withheld(None);
            }
        }
        if close {
            session.close(protocol::TOO_MANY_ATTEMPTS);
        }
    }

    fn on_close(&self, session: &Session) {
        if session.close_code() == Some(sockjs::CloseCode::MESSAGE_TOO_BIG) {
            self.metrics.too_big_closed.fetch_add(1, Ordering::Relaxed);
        }
        self.hub.remove(session);
        self.presence.remove(session);
    }
}
