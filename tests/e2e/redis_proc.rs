//! A real `redis-server` on a free loopback port, in a temporary folder of its own, never a
//! system service: stopped (kill -9 where a test says) and started again on the same port
//! and folder, so that what its append-only file kept survives; a replica of another where
//! asked.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pushnote::redis_connection::Connection;
use pushnote::redis_endpoint::RedisEndpoint;
use pushnote::resp::{Limits, Value};

use crate::support::{free_port, WAIT};

/// The `redis-server` binary: on the PATH, or Debian's.
fn binary() -> &'static str {
    if std::path::Path::new("/usr/bin/redis-server").exists() {
        "/usr/bin/redis-server"
    } else {
        "redis-server"
    }
}

/// A running Redis.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    append_only: bool,
    /// Flags of its own (`--replicaof …`).
    extra: Vec<String>,
    /// TLS only (`rediss://`), with a certificate signed by a CA of the test's
    /// ([`Redis::ca`]).
    tls: bool,
}

impl Redis {
    /// A Redis without persistence.
    pub fn start() -> Redis {
        Redis::with(false)
    }

    /// A Redis that keeps an append-only file (fsync every write) when `append_only`.
    pub fn with(append_only: bool) -> Redis {
        Redis::with_flags(append_only, Vec::new(), false)
    }

    /// A Redis that speaks TLS only, its certificate (for 127.0.0.1) signed by a CA made for
    /// it ([`Redis::ca`]).
    pub fn with_tls() -> Redis {
        Redis::with_flags(false, Vec::new(), true)
    }

    /// The CA file that signed a TLS Redis' certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Makes a CA and a certificate for 127.0.0.1 signed by it in `dir`.
    fn certificates(dir: &std::path::Path) {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (installed by scripts/test)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ]
        .iter()
        .chain(&[
            "-subj",
            "/CN=pushnote test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])
        .copied()
        .collect::<Vec<_>>());
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ]
        .iter()
        .chain(&["-keyout", "redis.key", "-out", "redis.csr"])
        .copied()
        .collect::<Vec<_>>());
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
        ]
        .iter()
        .chain(&[
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "redis.pem",
        ])
        .copied()
        .collect::<Vec<_>>());
    }

    /// A replica of `primary`, without persistence.
    pub fn replica_of(primary: &Redis) -> Redis {
        let port = primary.port.to_string();
        Redis::with_flags(
            false,
            vec!["--replicaof".into(), "127.0.0.1".into(), port],
            false,
        )
    }

    fn with_flags(append_only: bool, extra: Vec<String>, tls: bool) -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "pushnote-redis-{}-{}",
            std::process::id(),
            crate::support::rand_id()
        ));
        std::fs::create_dir_all(&dir).expect("redis folder");
        if tls {
            Redis::certificates(&dir);
        }
        let mut redis = Redis {
            child: None,
            port: 0,
            dir,
            append_only,
            extra,
            tls,
        };
        // A port free when asked may be taken before Redis binds it: try another.
        for _ in 0..5 {
            redis.port = free_port();
            if redis.launch() {
                return redis;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts the process on `self.port`; false if it did not come up (the port was taken).
    fn launch(&mut self) -> bool {
        let appendonly = if self.append_only { "yes" } else { "no" };
        let port = self.port.to_string();
        let listen: Vec<&str> = if self.tls {
            vec![
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                "redis.pem",
                "--tls-key-file",
                "redis.key",
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "no",
            ]
        } else {
            vec!["--port", &port]
        };
        let child = Command::new(binary())
            .current_dir(&self.dir)
            .args(["--bind", "127.0.0.1"])
            .args(&listen)
            .args(["--dir", self.dir.to_str().expect("utf-8 folder")])
            .args([
                "--save",
                "",
                "--appendonly",
                appendonly,
                "--appendfsync",
                "always",
            ])
            .args([
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server (installed by scripts/test)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if let Ok(mut c) = self.connect() {
                // Loading an append-only file answers LOADING until it is done.
                if matches!(c.call(&[b"PING"]), Ok(Value::Simple(_))) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:PORT`, or with TLS `rediss://127.0.0.1:PORT?ca=CA_FILE`.
    pub fn url(&self) -> String {
        match self.tls {
            true => format!(
                "rediss://127.0.0.1:{}?ca={}",
                self.port,
                self.ca().display()
            ),
            false => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A new connection to it.
    pub fn connect(&self) -> Result<Connection, pushnote::redis_connection::RedisError> {
        let endpoint = RedisEndpoint::parse(&self.url()).expect("endpoint");
        Connection::open(&endpoint, Duration::from_secs(2), Limits::default())
    }

    /// Runs one command and returns its reply.
    pub fn call(&self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.connect()
            .expect("connect to redis")
            .call(&args)
            .expect("redis reply")
    }

    /// Sends the signal named `name` (STOP, CONT, …).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{name}");
    }

    /// The value of `field` in `INFO section`, if it has one.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        let reply = self.call(&["INFO", section]);
        let text = String::from_utf8_lossy(reply.bytes()?).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and folder, as a replica of the Redis on `port`.
    pub fn restart_as_replica_of(&mut self, port: u16) {
        self.extra = vec!["--replicaof".into(), "127.0.0.1".into(), port.to_string()];
        self.restart();
    }

    /// Starts it again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.launch(), "redis-server did not start again");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw RESP3 subscriber of `channels` on `redis`, its subscriptions confirmed.
pub fn subscriber(redis: &Redis, channels: &[&str]) -> Connection {
    let mut c = redis.connect().unwrap();
    let mut command: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    command.extend(channels.iter().map(|c| c.as_bytes()));
    c.send(&command).unwrap();
    for _ in channels {
        let push = c.receive().unwrap();
        assert_eq!(push.items().unwrap()[0].bytes(), Some(&b"subscribe"[..]));
    }
    c
}

/// The next message a [`subscriber`] receives: its channel, position and body.
pub fn message(c: &mut Connection) -> (String, pushnote::Position, String) {
    let push = c.receive().unwrap();
    let items = push.items().unwrap();
    assert_eq!(items[0].bytes(), Some(&b"message"[..]));
    let payload = items[2].bytes().unwrap();
    let (stamp, body) = payload.split_at(pushnote::wire::STAMP_BYTES);
    (
        String::from_utf8(items[1].bytes().unwrap().to_vec()).unwrap(),
        pushnote::wire::read_stamp(stamp.try_into().unwrap()),
        String::from_utf8(body.to_vec()).unwrap(),
    )
}
