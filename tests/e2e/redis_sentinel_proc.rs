//! A Redis watched by Sentinel, all real processes on free loopback ports, never system
//! services: a primary, its replica, and three `redis-sentinel`s (quorum 2), each in a
//! temporary folder of its own with the configuration file it rewrites. Failures are noticed
//! within a second (`down-after-milliseconds`), so that a failover completes within seconds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pushnote::redis_connection::Connection;
use pushnote::redis_endpoint::RedisEndpoint;
use pushnote::resp::{Limits, Value};

use crate::redis_proc::Redis;
use crate::support::{free_port, rand_id, WAIT};

/// The name the Sentinels monitor the primary under.
pub const MASTER: &str = "pushnote";

/// How long a setup may take to be ready: Sentinels find each other through the primary's
/// hello messages, sent every 2 s.
const READY: Duration = Duration::from_secs(30);

/// The `redis-sentinel` binary: on the PATH, or Debian's.
fn binary() -> &'static str {
    if std::path::Path::new("/usr/bin/redis-sentinel").exists() {
        "/usr/bin/redis-sentinel"
    } else {
        "redis-sentinel"
    }
}

/// One running Sentinel.
struct Sentinel {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Sentinel {
    /// A Sentinel of the primary on `primary_port`, ready to answer.
    fn start(primary_port: u16) -> Sentinel {
        let dir = std::env::temp_dir().join(format!(
            "pushnote-sentinel-{}-{}",
            std::process::id(),
            rand_id()
        ));
        std::fs::create_dir_all(&dir).expect("sentinel folder");
        let mut sentinel = Sentinel {
            child: None,
            port: 0,
            dir,
        };
        // A port free when asked may be taken before Sentinel binds it: try another.
        for _ in 0..5 {
            sentinel.port = free_port();
            if sentinel.launch(primary_port) {
                return sentinel;
            }
        }
        panic!("redis-sentinel did not start");
    }

    /// Writes its configuration and starts it; false if it did not come up.
    fn launch(&mut self, primary_port: u16) -> bool {
        let dir = self.dir.to_str().expect("utf-8 folder");
        let config = self.dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 protected-mode no\n\
                 daemonize no\n\
                 dir {dir}\n\
                 logfile {dir}/sentinel.log\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 4000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                port = self.port,
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new(binary())
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-sentinel (installed by scripts/test)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if matches!(self.call(&["PING"]), Some(Value::Simple(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Runs one command; its reply, or `None` if the Sentinel could not be reached.
    fn call(&self, args: &[&str]) -> Option<Value> {
        let endpoint =
            RedisEndpoint::parse(&format!("redis://127.0.0.1:{}", self.port)).expect("endpoint");
        let mut c = Connection::open(&endpoint, Duration::from_secs(2), Limits::default()).ok()?;
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        c.call(&args).ok()
    }

    /// Whether it knows the replica and the two other Sentinels, and could fail over.
    fn ready(&self) -> bool {
        let known = |what: &str, n: usize| {
            self.call(&["SENTINEL", what, MASTER])
                .is_some_and(|v| v.items().is_some_and(|i| i.len() == n))
        };
        known("replicas", 1)
            && known("sentinels", 2)
            && matches!(
                self.call(&["SENTINEL", "ckquorum", MASTER]),
                Some(Value::Simple(_))
            )
    }

    /// The primary's port as this Sentinel names it.
    fn primary_port(&self) -> Option<u16> {
        let reply = self.call(&["SENTINEL", "get-master-addr-by-name", MASTER])?;
        let port = reply.items()?.get(1)?.int()?;
        u16::try_from(port).ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, its replica, and three Sentinels watching them.
pub struct Sentinels {
    // Dropped first: Sentinels never see their Redis go.
    sentinels: Vec<Sentinel>,
    pub primary: Redis,
    pub replica: Redis,
}

impl Sentinels {
    /// Starts them all; returns once the replica is in sync and every Sentinel knows it, the
    /// other Sentinels and that a failover could be authorised.
    pub fn start() -> Sentinels {
        let primary = Redis::start();
        let replica = Redis::replica_of(&primary);
        // Sentinels learn of replicas from the primary's INFO, asked at once and then every
        // 10 s: the replica is linked before they start.
        let deadline = Instant::now() + READY;
        while replica.info("replication", "master_link_status").as_deref() != Some("up") {
            assert!(
                Instant::now() < deadline,
                "the replica syncs with the primary"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sentinels = (0..3).map(|_| Sentinel::start(primary.port)).collect();
        let set = Sentinels {
            sentinels,
            primary,
            replica,
        };
        for s in &set.sentinels {
            while !s.ready() {
                assert!(
                    Instant::now() < deadline,
                    "sentinel {} knows the replica and the other sentinels",
                    s.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        set
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/pushnote`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// A new connection to the primary, as the Sentinels name it.
    pub fn connect(&self) -> Result<Connection, pushnote::redis_connection::RedisError> {
        let endpoint = RedisEndpoint::parse(&self.url()).expect("endpoint");
        Connection::open(&endpoint, Duration::from_secs(1), Limits::default())
    }

    /// Asks a Sentinel to fail over now, the primary alive (`SENTINEL FAILOVER`).
    pub fn failover(&self) {
        let reply = self.sentinels[0].call(&["SENTINEL", "failover", MASTER]);
        assert!(matches!(reply, Some(Value::Simple(_))), "{reply:?}");
    }

    /// Waits until every Sentinel names the replica the primary (a failover completed).
    pub fn wait_promoted(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for s in &self.sentinels {
            while s.primary_port() != Some(self.replica.port) {
                assert!(
                    Instant::now() < deadline,
                    "sentinel {} names the replica the primary",
                    s.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
