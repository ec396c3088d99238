//! A connection to Redis, blocking, with time-outs: opened (through Sentinel where the
//! endpoint says so), spoken to in RESP3, and pushnote's script called on it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::redis_endpoint::{Reach, RedisEndpoint};
use crate::redis_script::SCRIPT;
use crate::redis_tls::{self, Transport};
use crate::resp::{self, Limits, Value};

/// Why Redis could not be reached or did not answer as it should.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The connection failed, closed or timed out.
    #[error("redis {endpoint}: {source}")]
    Io {
        /// Where (no password).
        endpoint: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// What came back is not RESP, or not the reply asked for.
    #[error("redis {endpoint}: {why}")]
    Protocol {
        /// Where (no password).
        endpoint: String,
        /// What was wrong.
        why: String,
    },
    /// Redis answered with an error.
    #[error("redis {endpoint} refused: {message}")]
    Refused {
        /// Where (no password).
        endpoint: String,
        /// Redis' sentence.
        message: String,
    },
    /// The endpoint cannot be used as it is (its TLS settings: a CA file that cannot be read).
    #[error("{0}")]
    Endpoint(String),
}

/// An open connection.
pub struct Connection {
    stream: Transport,
    /// Read but not yet parsed.
    buf: Vec<u8>,
    limits: Limits,
    /// Where, for errors (no password).
    name: String,
    /// The script's SHA1 once loaded here.
    sha: Option<Vec<u8>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("redis", &self.name)
            .finish()
    }
}

impl Connection {
    /// Opens a connection to the Redis `endpoint` names (its primary, through its Sentinels),
    /// each connection, reply and send within `timeout`; replies bounded by `limits`.
    pub fn open(
        endpoint: &RedisEndpoint,
        timeout: Duration,
        limits: Limits,
    ) -> Result<Connection, RedisError> {
        match &endpoint.reach {
            Reach::Plain => {
                let (host, port) = &endpoint.hosts[0];
                Connection::to(host, *port, endpoint, timeout, limits)
            }
            Reach::Tls => {
                let (host, port) = &endpoint.hosts[0];
                Connection::to(host, *port, endpoint, timeout, limits)
            }
            Reach::Sentinel { master } => primary(endpoint, master, timeout, limits),
        }
    }

    /// Opens a connection to `host:port` and says hello as `endpoint` asks.
    fn to(
        host: &str,
        port: u16,
        endpoint: &RedisEndpoint,
        timeout: Duration,
        limits: Limits,
    ) -> Result<Connection, RedisError> {
        let name = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let io = |source| RedisError::Io {
            endpoint: name.clone(),
            source,
        };
        // TLS settings that cannot be used are said before any connection is tried.
        let tls_error = |why: String| RedisError::Endpoint(format!("{endpoint}: TLS: {why}"));
        let tls = match endpoint.reach {
            Reach::Tls => Some(redis_tls::config(endpoint.ca.as_deref()).map_err(tls_error)?),
            _ => None,
        };
        let mut last = None;
        let mut stream = None;
        for addr in (host, port).to_socket_addrs().map_err(io)? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            io(last.unwrap_or_else(|| std::io::Error::other("the host has no address")))
        })?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let stream = match tls {
            Some(config) => Transport::tls(stream, host, config).map_err(tls_error)?,
            None => Transport::Plain(stream),
        };
        let mut c = Connection {
            stream,
            buf: Vec::new(),
            limits,
            name,
            sha: None,
        };
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &endpoint.password {
            hello.extend([
                &b"AUTH"[..],
                endpoint.user.as_deref().unwrap_or("default").as_bytes(),
                password.as_bytes(),
            ]);
        }
        c.ok(&hello)?;
        if endpoint.db != 0 {
            c.ok(&[b"SELECT", endpoint.db.to_string().as_bytes()])?;
        }
        Ok(c)
    }

    /// Bounds each later send, and each read of a reply, by `timeout` (in place of the one
    /// the connection was opened with).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), RedisError> {
        let tcp = self.stream.tcp();
        tcp.set_read_timeout(Some(timeout))
            .and_then(|()| tcp.set_write_timeout(Some(timeout)))
            .map_err(|e| self.io(e))
    }

    /// Whether Redis has not closed the connection, as far as the system knows, without
    /// waiting: a connection Redis closed (it stopped, or dropped the client) reads its end at
    /// once. Bytes waiting to be read (a push) leave it open.
    pub fn is_open(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let tcp = self.stream.tcp();
        if tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let open = match tcp.peek(&mut byte) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        };
        tcp.set_nonblocking(false).is_ok() && open
    }

    /// Where, for logs (no password).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn protocol(&self, why: impl Into<String>) -> RedisError {
        RedisError::Protocol {
            endpoint: self.name.clone(),
            why: why.into(),
        }
    }

    fn io(&self, source: std::io::Error) -> RedisError {
        RedisError::Io {
            endpoint: self.name.clone(),
            source,
        }
    }

    /// Sends a command without waiting for its reply.
    pub fn send(&mut self, args: &[&[u8]]) -> Result<(), RedisError> {
        let mut out = Vec::new();
        resp::encode(args, &mut out);
        self.stream.write_all(&out).map_err(|e| self.io(e))
    }

    /// The next reply or push.
    pub fn receive(&mut self) -> Result<Value, RedisError> {
        loop {
            match resp::parse(&self.buf, &self.limits) {
                Ok(Some((value, used))) => {
                    self.buf.drain(..used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// Sends a command and returns its reply (pushes before it are skipped), Redis' error
    /// replies included. Not for (un)subscribing: RESP3 confirms those with pushes.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Value, RedisError> {
        self.send(args)?;
        loop {
            match self.receive()? {
                Value::Push(_) => continue,
                reply => return Ok(reply),
            }
        }
    }

    /// Calls a command whose reply must not be an error.
    pub fn ok(&mut self, args: &[&[u8]]) -> Result<Value, RedisError> {
        match self.call(args)? {
            Value::Error(message) => Err(RedisError::Refused {
                endpoint: self.name.clone(),
                message,
            }),
            reply => Ok(reply),
        }
    }

    /// Loads pushnote's script here (once); its SHA1.
    pub fn load_script(&mut self) -> Result<Vec<u8>, RedisError> {
        if let Some(sha) = &self.sha {
            return Ok(sha.clone());
        }
        let reply = self.ok(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()])?;
        let sha = reply
            .bytes()
            .ok_or_else(|| self.protocol("SCRIPT LOAD gave no SHA1"))?
            .to_vec();
        self.sha = Some(sha.clone());
        Ok(sha)
    }

    /// Calls pushnote's script with `args` (`redis_script::publish_args`, `history_args`),
    /// loading it again if Redis lost it (a restart, `SCRIPT FLUSH`).
    pub fn script(&mut self, args: &[Vec<u8>]) -> Result<Value, RedisError> {
        for _ in 0..2 {
            let sha = self.load_script()?;
            let mut call: Vec<&[u8]> = Vec::with_capacity(args.len() + 2);
            call.push(b"EVALSHA");
            call.push(&sha);
            call.extend(args.iter().map(Vec::as_slice));
            match self.call(&call)? {
                Value::Error(e) if e.starts_with("NOSCRIPT") => self.sha = None,
                reply => return Ok(reply),
            }
        }
        Err(self.protocol("the script is not loaded after SCRIPT LOAD"))
    }

    /// The stream and what was read from it but not parsed, for a reader of its own.
    pub fn into_parts(self) -> (Transport, Vec<u8>) {
        (self.stream, self.buf)
    }
}

/// The primary the Sentinels of `endpoint` name for `master`, connected and checked to be
/// one (a Sentinel may name a primary that has just become a replica).
fn primary(
    endpoint: &RedisEndpoint,
    master: &str,
    timeout: Duration,
    limits: Limits,
) -> Result<Connection, RedisError> {
    let mut why = Vec::new();
    // Sentinels take no database and may have no password of their own.
    let sentinel_endpoint = RedisEndpoint {
        db: 0,
        user: None,
        password: None,
        ..endpoint.clone()
    };
    for (host, port) in &endpoint.hosts {
        let addr = match Connection::to(host, *port, &sentinel_endpoint, timeout, limits)
            .and_then(|mut s| s.ok(&[b"SENTINEL", b"get-master-addr-by-name", master.as_bytes()]))
        {
            Ok(reply) => reply,
            Err(e) => {
                why.push(e.to_string());
                continue;
            }
        };
        let Some([h, p]) = addr.items() else {
            why.push(format!("sentinel {host}:{port} knows no master {master:?}"));
            continue;
        };
        let (Some(h), Some(p)) = (
            h.bytes().map(|h| String::from_utf8_lossy(h).into_owned()),
            p.int().and_then(|p| u16::try_from(p).ok()),
        ) else {
            why.push(format!("sentinel {host}:{port} gave no address"));
            continue;
        };
        match Connection::to(&h, p, endpoint, timeout, limits).and_then(|mut c| {
            let role = c.ok(&[b"ROLE"])?;
            let is_primary =
                role.items().and_then(|r| r.first()).and_then(Value::bytes) == Some(b"master");
            if is_primary {
                Ok(c)
            } else {
                Err(c.protocol(format!(
                    "{h}:{p}, named primary of {master:?}, is a replica"
                )))
            }
        }) {
            Ok(c) => return Ok(c),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(RedisError::Protocol {
        endpoint: endpoint.to_string(),
        why: format!("no primary of {master:?} reached: {}", why.join("; ")),
    })
}
