//! Where a Redis is: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` for TLS
//! (`?ca=PATH`: the PEM file of the CA that signed Redis' certificate, else the system's
//! roots), and `redis+sentinel://host:port,host:port/master[/db]` (pure).

use std::fmt;

/// Redis' port when an endpoint names none.
pub const DEFAULT_PORT: u16 = 6379;
/// Sentinel's port when an endpoint names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// How the endpoint reaches Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// A plain TCP connection to `hosts[0]`.
    Plain,
    /// TLS to `hosts[0]`.
    Tls,
    /// The primary of `master`, as the Sentinels at `hosts` name it.
    Sentinel {
        /// The name the Sentinels monitor it under.
        master: String,
    },
}

/// A Redis endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    /// How it is reached.
    pub reach: Reach,
    /// Host and port of Redis, or of each Sentinel.
    pub hosts: Vec<(String, u16)>,
    /// The database number.
    pub db: u32,
    /// The user to authenticate as (with a password), if any.
    pub user: Option<String>,
    /// The password to authenticate with, if any.
    pub password: Option<String>,
    /// With TLS: the CA file Redis' certificate is checked against (else the system's roots).
    pub ca: Option<String>,
}

/// Whether `endpoint` names a Redis rather than a ZeroMQ endpoint.
pub fn is_redis(endpoint: &str) -> bool {
    ["redis://", "rediss://", "redis+sentinel://"]
        .iter()
        .any(|scheme| endpoint.starts_with(scheme))
}

/// Why an endpoint is not a Redis endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EndpointError(String);

fn error(endpoint: &str, why: &str) -> EndpointError {
    EndpointError(format!(
        "{} is not a Redis endpoint: {why} (redis://[:password@]host[:port][/db], or \
         redis+sentinel://host:port[,host:port…]/master[/db])",
        redacted(endpoint)
    ))
}

/// `endpoint` with any password hidden, fit for logs and errors.
fn redacted(endpoint: &str) -> String {
    match (endpoint.find("://"), endpoint.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &endpoint[..scheme + 3], &endpoint[at + 1..])
        }
        _ => endpoint.to_owned(),
    }
}

fn host_port(text: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@,".contains(c)) {
        return None;
    }
    let port = match port {
        None => default,
        Some(p) => p.parse().ok().filter(|&p: &u16| p != 0)?,
    };
    Some((host.to_owned(), port))
}

fn decode(text: &str) -> Option<String> {
    // Percent-encoding, so that a password may hold `@`, `:` or `/`.
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl RedisEndpoint {
    /// Reads `endpoint`.
    pub fn parse(endpoint: &str) -> Result<RedisEndpoint, EndpointError> {
        let err = |why: &str| error(endpoint, why);
        let (reach, rest) = if let Some(rest) = endpoint.strip_prefix("redis://") {
            (Reach::Plain, rest)
        } else if let Some(rest) = endpoint.strip_prefix("rediss://") {
            (Reach::Tls, rest)
        } else if let Some(rest) = endpoint.strip_prefix("redis+sentinel://") {
            (
                Reach::Sentinel {
                    master: String::new(),
                },
                rest,
            )
        } else {
            return Err(err(
                "its scheme is none of redis, rediss and redis+sentinel",
            ));
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut ca = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ca", path)) if reach == Reach::Tls && !path.is_empty() => {
                    ca = Some(decode(path).ok_or_else(|| err("its ca is badly encoded"))?);
                }
                Some(("ca", _)) if reach != Reach::Tls => {
                    return Err(err("only rediss:// (TLS) takes a ca"))
                }
                _ => return Err(err("its query holds what is not ca=PATH")),
            }
        }
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(auth) => {
                let (user, password) = auth.split_once(':').unwrap_or(("", auth));
                let user = decode(user).ok_or_else(|| err("its user is badly encoded"))?;
                let password =
                    decode(password).ok_or_else(|| err("its password is badly encoded"))?;
                ((!user.is_empty()).then_some(user), Some(password))
            }
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut path = path.split('/').filter(|p| !p.is_empty());
        let reach = match reach {
            Reach::Sentinel { .. } => Reach::Sentinel {
                master: path
                    .next()
                    .ok_or_else(|| err("it names no master"))?
                    .to_owned(),
            },
            other => other,
        };
        let db = match path.next() {
            None => 0,
            Some(db) => db
                .parse()
                .map_err(|_| err("its database is not a number"))?,
        };
        if path.next().is_some() {
            return Err(err("its path is longer than a database"));
        }
        let default = match reach {
            Reach::Sentinel { .. } => DEFAULT_SENTINEL_PORT,
            _ => DEFAULT_PORT,
        };
        let hosts = hosts
            .split(',')
            .map(|h| host_port(h, default))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| err("a host or port is not valid"))?;
        if hosts.len() > 1 && !matches!(reach, Reach::Sentinel { .. }) {
            return Err(err("only Sentinel endpoints list several hosts"));
        }
        Ok(RedisEndpoint {
            reach,
            hosts,
            db,
            user,
            password,
            ca,
        })
    }
}

impl fmt::Display for RedisEndpoint {
    /// The endpoint without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.reach {
            Reach::Plain => "redis",
            Reach::Tls => "rediss",
            Reach::Sentinel { .. } => "redis+sentinel",
        };
        write!(f, "{scheme}://")?;
        if self.password.is_some() {
            write!(f, "{}:***@", self.user.as_deref().unwrap_or(""))?;
        }
        for (i, (host, port)) in self.hosts.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if host.contains(':') {
                write!(f, "{sep}[{host}]:{port}")?;
            } else {
                write!(f, "{sep}{host}:{port}")?;
            }
        }
        if let Reach::Sentinel { master } = &self.reach {
            write!(f, "/{master}")?;
        }
        write!(f, "/{}", self.db)?;
        if let Some(ca) = &self.ca {
            write!(f, "?ca={ca}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_endpoints_read_with_their_defaults() {
        let e = RedisEndpoint::parse("redis://127.0.0.1").unwrap();
        assert_eq!(e.reach, Reach::Plain);
        assert_eq!(e.hosts, [("127.0.0.1".to_owned(), 6379)]);
        assert_eq!(
            (e.db, e.user.as_deref(), e.password.as_deref()),
            (0, None, None)
        );
        let e = RedisEndpoint::parse("redis://app:p%40ss@[::1]:7000/3").unwrap();
        assert_eq!(e.hosts, [("::1".to_owned(), 7000)]);
        assert_eq!((e.db, e.user.as_deref()), (3, Some("app")));
        assert_eq!(e.password.as_deref(), Some("p@ss"));
        assert_eq!(e.to_string(), "redis://app:***@[::1]:7000/3");
        let e = RedisEndpoint::parse("rediss://h:6380/2?ca=/etc/redis/ca%20file.pem").unwrap();
        assert_eq!((e.reach, e.db), (Reach::Tls, 2));
        assert_eq!(e.ca.as_deref(), Some("/etc/redis/ca file.pem"));
        let e = RedisEndpoint::parse("redis://:secret@localhost:6380/").unwrap();
        assert_eq!((e.user, e.password.as_deref()), (None, Some("secret")));
        assert!(is_redis("rediss://h") && !is_redis("tcp://127.0.0.1:8002"));
    }

    #[test]
    fn sentinel_endpoints_list_their_sentinels_and_master() {
        let e = RedisEndpoint::parse("redis+sentinel://a:1,b,[::1]:3/primary/2").unwrap();
        assert_eq!(
            e.reach,
            Reach::Sentinel {
                master: "primary".into()
            }
        );
        let hosts: Vec<_> = e.hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        assert_eq!(hosts, ["a:1", "b:26379", "::1:3"]);
        assert_eq!(e.db, 2);
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_reason_and_no_password() {
        for (bad, why) in [
            ("tcp://127.0.0.1:8002", "scheme"),
            ("redis://", "host"),
            ("redis://h:0", "host or port"),
            ("redis://h:99999", "host or port"),
            ("redis://h/x", "database"),
            ("redis://h/1/2", "path"),
            ("redis://a,b", "several"),
            ("redis+sentinel://a:1", "master"),
            ("redis://:pw%zz@h", "password"),
            ("redis://h?ca=/x.pem", "only rediss"),
            ("rediss://h?verify=no", "query"),
        ] {
            let e = RedisEndpoint::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = RedisEndpoint::parse("redis://:hunter2@h/x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
