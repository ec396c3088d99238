//! The Redis with Sentinel recipe of docs/DEPLOY.md: the server's unit on Redis and its
//! example environment file start a server that finds the primary through real Sentinels, and
//! the recipe's `redis.conf` and `sentinel.conf` lines are taken by real Redis and Sentinel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pushnote::redis_endpoint::{Reach, RedisEndpoint};
use pushnote::resp::{Limits, Value};

use crate::deploy::{service, spawn_as_unit};
use crate::redis_sentinel_proc::{Sentinels, MASTER};
use crate::support::*;

/// The `NAME=value` lines of an environment file, comments aside.
fn env_file(rel: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Waits until the server at `origin` answers `/health` ready with its bus connected.
async fn wait_ready(origin: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, body) = http_get(&format!("{origin}/health")).await;
        if code == 200 {
            assert!(body.contains(r#""bus":"connected""#), "{body}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server connects: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_units_settings_start_a_server_that_finds_the_primary_through_sentinel() {
    let example = env_file("deploy/systemd/pushnote-server-redis.env.example");
    assert_eq!(example["PUSHNOTE_SECRET"], "", "shipped empty");
    let broker = RedisEndpoint::parse(&example["PUSHNOTE_BROKER"]).expect("the example's broker");
    assert_eq!(
        broker.reach,
        Reach::Sentinel {
            master: MASTER.into()
        }
    );
    assert_eq!(broker.hosts.len(), 3, "three Sentinels");
    assert!(broker.password.is_some(), "Redis' password");

    let redis = Sentinels::start();
    let (mut env, args) = service("pushnote-server-redis@.service");
    assert!(
        !env.keys().any(|k| k.starts_with("PUSHNOTE_MQ")),
        "no forwarder: {env:?}"
    );
    // The example file's lines over the unit's, with the secret set and the tests' Sentinels,
    // whose Redis has no password.
    env.extend(example);
    env.insert("PUSHNOTE_SECRET".into(), SECRET.into());
    env.insert("PUSHNOTE_BROKER".into(), redis.url());
    let args: Vec<String> = args.iter().map(|a| a.replace("%i", "0")).collect();
    let server = spawn_as_unit("pushnote-server", &env, &args);
    let url = server.value_after("listening on");
    let origin = &url[..url[7..].find('/').unwrap() + 7];
    wait_ready(origin).await;
    let (code, metrics) = http_get(&format!("{origin}/metrics")).await;
    assert_eq!(code, 200);
    assert!(metrics.contains("pushnote_bus_connected 1"), "{metrics}");
}

/// The lines of the ```conf blocks of docs/DEPLOY.md's section "Redis with Sentinel": Redis'
/// and the Sentinels'.
fn recipe() -> (String, String) {
    let text = std::fs::read_to_string(repo_path("docs/DEPLOY.md")).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Redis with Sentinel"))
        .expect("the section");
    let blocks: Vec<&str> = section
        .split("```conf\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    let [redis, sentinel] = blocks[..] else {
        panic!("two conf blocks: {blocks:?}");
    };
    (redis.to_owned(), sentinel.to_owned())
}

/// A process of a configuration file, in a folder of its own; killed on drop.
struct Configured {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Configured {
    /// Starts `binary` on a free port with `config` (`port` and `dir` lines added) and waits
    /// until it answers PING (with `password`).
    fn start(binary: &str, config: &str, password: Option<&str>) -> Configured {
        let dir = std::env::temp_dir().join(format!("pushnote-recipe-{}", rand_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let file = dir.join("redis.conf");
        let text = format!(
            "{config}\nport {port}\ndir {}\nlogfile {}\n",
            dir.display(),
            dir.join("log").display()
        );
        std::fs::write(&file, text).unwrap();
        let child = Command::new(binary)
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server and redis-sentinel (installed by scripts/test)");
        let started = Configured { child, dir, port };
        let deadline = Instant::now() + WAIT;
        while started.call(password, &["PING"]).is_none() {
            assert!(
                Instant::now() < deadline,
                "{binary} starts with the recipe's lines: {}",
                std::fs::read_to_string(started.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started
    }

    /// One command's reply; `None` if it could not be had or was an error.
    fn call(&self, password: Option<&str>, args: &[&str]) -> Option<Value> {
        let auth = password.map_or(String::new(), |p| format!(":{p}@"));
        let endpoint = RedisEndpoint::parse(&format!("redis://{auth}127.0.0.1:{}", self.port))
            .expect("endpoint");
        let mut c =
            pushnote::redis_connection::Connection::open(&endpoint, WAIT, Limits::default())
                .ok()?;
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        c.ok(&args).ok()
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Configured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.path());
    }
}

#[test]
fn the_recipes_redis_and_sentinel_lines_make_a_replica_in_sync_and_a_sentinel_that_sees_it() {
    let (redis, sentinel) = recipe();
    let password = "PASSWORD";
    // Every host of the recipe is this one, the ports free ones.
    let local = |text: &str| {
        text.lines()
            .map(|l| match l.split_whitespace().next() {
                Some("bind") => "bind 127.0.0.1".to_owned(),
                Some("port") => String::new(),
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let primary_lines: String = local(&redis)
        .lines()
        .filter(|l| !l.starts_with("replicaof"))
        .map(|l| format!("{l}\n"))
        .collect();
    let primary = Configured::start("redis-server", &primary_lines, Some(password));
    assert!(
        primary.call(None, &["PING"]).is_none(),
        "requirepass holds without the password"
    );
    let replica_lines = local(&redis).replace(
        "replicaof 10.0.0.1 6379",
        &format!("replicaof 127.0.0.1 {}", primary.port),
    );
    assert!(
        replica_lines.contains("replicaof 127.0.0.1"),
        "{replica_lines}"
    );
    let replica = Configured::start("redis-server", &replica_lines, Some(password));
    let deadline = Instant::now() + WAIT;
    while !replica
        .call(Some(password), &["INFO", "replication"])
        .and_then(|i| {
            i.bytes()
                .map(|b| String::from_utf8_lossy(b).contains("master_link_status:up"))
        })
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the replica authenticates to the primary (masterauth) and syncs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sentinel_lines =
        local(&sentinel).replace("10.0.0.1 6379", &format!("127.0.0.1 {}", primary.port));
    let watcher = Configured::start("redis-sentinel", &sentinel_lines, None);
    // It reaches the primary with auth-pass and learns of the replica from its INFO.
    let deadline = Instant::now() + WAIT;
    loop {
        let replicas = watcher.call(None, &["SENTINEL", "replicas", MASTER]);
        let port = replica.port.to_string();
        let known = replicas
            .as_ref()
            .and_then(Value::items)
            .is_some_and(|r| r.iter().any(|m| field(m, "port") == Some(port.as_str())));
        if known {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sentinel knows the replica: {replicas:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let master = watcher
        .call(None, &["SENTINEL", "master", MASTER])
        .expect("the sentinel's master");
    assert_eq!(field(&master, "quorum"), Some("2"), "{master:?}");
    assert_eq!(field(&master, "down-after-milliseconds"), Some("5000"));
    assert_eq!(field(&master, "failover-timeout"), Some("60000"));
}

/// The value of `name` in a map (or RESP2's list of names and values) as text.
fn field<'v>(map: &'v Value, name: &str) -> Option<&'v str> {
    let items = match map {
        Value::Map(items) | Value::Array(items) => items,
        _ => return None,
    };
    items
        .chunks(2)
        .find(|kv| kv[0].bytes() == Some(name.as_bytes()))
        .and_then(|kv| kv.get(1)?.bytes())
        .and_then(|v| std::str::from_utf8(v).ok())
}
