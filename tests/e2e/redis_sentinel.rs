//! A server on a Redis watched by Sentinel (`--broker redis+sentinel://…`): the primary's
//! death while an app publishes, the failover, and every message the app was told is kept
//! (the script's positions and `WAIT 1` from the replica) reaching the page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use pushnote::redis_connection::{Connection, RedisError};
use pushnote::redis_script::{self, Keys};
use pushnote::resp::Value;
use pushnote::Position;

use crate::redis_engine::{broker_server, notify_all, positions, synced};
use crate::redis_sentinel_proc::Sentinels;
use crate::support::*;

/// How long a failover may take: noticed after a second, agreed on and carried out within a
/// few more, on a busy machine.
const FAILOVER: Duration = Duration::from_secs(30);

/// A server of the Redis `sentinels` watch, with positions kept deep enough for the messages
/// published while it reconnects.
fn sentinel_server(sentinels: &Sentinels) -> Server {
    broker_server(&sentinels.url(), &["--history-size", "10000"])
}

/// Publishes broadcast `{"n": n}` and waits for one replica to hold it; its position when
/// the replica does (`None`: Redis published it, but no replica acknowledged it in time).
fn publish_kept(c: &mut Connection, n: u64) -> Result<Option<Position>, RedisError> {
    let body = json!({"name": "notify_all", "data": {"n": n}}).to_string();
    let args = redis_script::publish_args(
        &Keys::new(redis_script::DEFAULT_PREFIX),
        body.as_bytes(),
        &[b"all"],
    );
    let reply = c.script(&args)?;
    let positions = redis_script::publish_reply(&reply, 1).map_err(|e| {
        // READONLY from a primary turned replica, or the like: not published, and the
        // primary is elsewhere.
        RedisError::Refused {
            endpoint: c.name().to_owned(),
            message: format!("{e}: {reply:?}"),
        }
    })?;
    match c.call(&[b"WAIT", b"1", b"2000"])? {
        Value::Int(replicas) if replicas >= 1 => Ok(Some(positions[0])),
        _ => Ok(None),
    }
}

/// An app publishing `{"n": n}` to everyone, one every few milliseconds, through the primary
/// the Sentinels name, connecting again through them after any failure; it notes each
/// message a replica acknowledged, with its position.
struct Publishing {
    kept: Arc<Mutex<Vec<(u64, Position)>>>,
    /// Held while a message is on its way: holding it, nothing is half published.
    between: Arc<Mutex<()>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Publishing {
    fn start(sentinels: &Sentinels) -> Publishing {
        let kept: Arc<Mutex<Vec<(u64, Position)>>> = Default::default();
        let between: Arc<Mutex<()>> = Default::default();
        let stop: Arc<AtomicBool> = Default::default();
        let (k, b, s) = (kept.clone(), between.clone(), stop.clone());
        let url = sentinels.url();
        let thread = std::thread::spawn(move || {
            let endpoint = pushnote::redis_endpoint::RedisEndpoint::parse(&url).unwrap();
            let mut connection: Option<Connection> = None;
            let mut n = 0u64;
            while !s.load(Ordering::Acquire) {
                if connection.is_none() {
                    match Connection::open(
                        &endpoint,
                        Duration::from_secs(1),
                        pushnote::resp::Limits::default(),
                    ) {
                        Ok(c) => connection = Some(c),
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    }
                }
                let Some(c) = connection.as_mut() else {
                    continue;
                };
                n += 1;
                let result = {
                    let _on_its_way = b.lock().unwrap();
                    publish_kept(c, n)
                };
                match result {
                    Ok(Some(position)) => k.lock().unwrap().push((n, position)),
                    Ok(None) => {}
                    Err(_) => connection = None,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Publishing {
            kept,
            between,
            stop,
            thread: Some(thread),
        }
    }

    /// How many messages were kept so far.
    fn count(&self) -> usize {
        self.kept.lock().unwrap().len()
    }

    /// Waits until `n` messages were kept in all.
    fn wait_kept(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{n} messages kept, not {}",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops; every message kept, in the order published.
    fn stop(mut self) -> Vec<(u64, Position)> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.kept.lock().unwrap().clone()
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What a page received of `{"n": n}`, in order, each with its position, read as it comes
/// (a page that does not read is closed as slow).
struct Received {
    got: Arc<Mutex<Vec<(u64, serde_json::Value)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Received {
    fn start(mut page: Client) -> Received {
        let got: Arc<Mutex<Vec<(u64, serde_json::Value)>>> = Default::default();
        let stop: Arc<AtomicBool> = Default::default();
        let (g, s) = (got.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Acquire) {
                // Within the client's own deadline for a frame, which a failover may exceed.
                if let Ok(v) = tokio::time::timeout(Duration::from_secs(1), page.next()).await {
                    if let Some(n) = v["data"]["n"].as_u64() {
                        g.lock().unwrap().push((n, v["position"].clone()));
                    }
                }
            }
        });
        Received { got, stop, task }
    }

    /// Waits until the page received message `last` or one after it (or panics past
    /// `limit`); all it received.
    async fn until(self, last: u64, limit: Duration) -> Vec<(u64, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let latest = self.got.lock().unwrap().last().map_or(0, |(n, _)| *n);
            if latest >= last {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page receives up to {last}; its latest is {latest}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Release);
        self.task.await.expect("the page's reader");
        let got = self.got.lock().unwrap().clone();
        got
    }
}

/// How the primary goes.
#[derive(Clone, Copy, PartialEq)]
enum Failover {
    /// kill -9, and its machine back later as the new primary's replica.
    Killed,
    /// `SENTINEL FAILOVER`: Sentinel promotes the replica and makes the primary its replica.
    Asked,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_no_message_a_replica_acknowledged_and_the_server_follows_it() {
    through_a_failover(Failover::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_asked_of_sentinel_moves_the_server_off_the_demoted_primary() {
    through_a_failover(Failover::Asked).await;
}

/// A page with positions on a server of the Sentinels' Redis, an app publishing with `WAIT`,
/// and the primary going `how` while it does: every message the app was told is kept reaches
/// the page, in order, once, at its position, a page away meanwhile recovers it from the new
/// primary, and the server is ready again by itself.
async fn through_a_failover(how: Failover) {
    let mut redis = Sentinels::start();
    let srv = sentinel_server(&redis);
    let mut page = Client::connect(&srv).await;
    let mut c = redis.connect().expect("the primary through Sentinel");
    synced(&mut c, &mut page).await;
    positions(&mut page, None).await;

    let page = Received::start(page);
    let app = Publishing::start(&redis);
    app.wait_kept(20, WAIT);
    // The primary dies between two messages: each one before is on the replica. (A message
    // in flight, published and pushed to the server but not yet on the replica, would be lost
    // and its position given to the next: a page that had it skips that one. DEPLOY.md says
    // so; this test is about what WAIT keeps.)
    let before = if how == Failover::Killed {
        let before = {
            let _between = app.between.lock().unwrap();
            redis.primary.kill();
            app.count()
        };
        srv.wait_metric_at_most("pushnote_bus_connected", 0).await;
        redis.wait_promoted(FAILOVER);
        // The old primary's machine comes back as the new one's replica: messages are kept
        // again.
        let new_primary = redis.replica.port;
        redis.primary.restart_as_replica_of(new_primary);
        before
    } else {
        // Sentinel promotes the replica without waiting for it to catch up: nothing is on its
        // way meanwhile. The demoted primary's clients are closed, the server's with them.
        let _between = app.between.lock().unwrap();
        redis.failover();
        redis.wait_promoted(FAILOVER);
        app.count()
    };
    app.wait_kept(before + 20, FAILOVER);
    let kept = app.stop();

    let last = kept.last().map_or(0, |&(n, _)| n);
    let got = page.until(last, FAILOVER).await;
    let ns: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order, once: {ns:?}");
    for (n, at) in &kept {
        let Some((_, position)) = got.iter().find(|(g, _)| g == n) else {
            panic!("kept message {n} reached the page: {ns:?}");
        };
        assert_eq!(
            (&position["epoch"], &position["offset"]),
            (&json!(at.epoch), &json!(at.offset)),
            "{n}"
        );
    }
    // A page away since the last message kept before the failover is given from the new
    // primary's history what it missed, the acknowledged messages among it; it is told the
    // epoch changed (PROTOCOL §2c): the failover may have lost messages no one can give.
    let (away, since) = kept[before - 1];
    let mut back = Client::connect(&srv).await;
    let since = json!({"epoch": since.epoch, "offset": since.offset});
    let (reply, given) = positions(&mut back, Some(&since)).await;
    let missed: Vec<u64> = given
        .iter()
        .filter_map(|v| v["data"]["n"].as_u64())
        .collect();
    assert_eq!(reply["data"]["reason"], "epoch", "{reply}");
    assert!(
        missed.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {missed:?}"
    );
    for (n, _) in kept.iter().filter(|(n, _)| *n > away) {
        assert!(missed.contains(n), "kept message {n} recovered: {missed:?}");
    }
    srv.wait_metric("pushnote_bus_connected", 1).await;
    let (status, body) = http_get(&format!("{}/health", srv.origin)).await;
    assert_eq!(status, 200, "{body}");
    assert!(srv.metric("pushnote_broker_errors_total").await >= 1);
}

/// A message the primary published (and servers delivered) that never reached the replica is
/// lost when the replica is promoted, as Sentinel promotes it (`REPLICAOF NO ONE`); the
/// promoted replica's numbering ends before it, so it starts the topic's next epoch: the next
/// message is never given the lost one's position, which servers (a fill) and pages
/// (pushnote.js) that had the lost one would take for one they had, and skip.
#[test]
fn a_message_lost_in_a_failover_leaves_its_position_to_no_other() {
    let primary = crate::redis_proc::Redis::start();
    let replica = crate::redis_proc::Redis::replica_of(&primary);
    let deadline = Instant::now() + WAIT;
    while replica.info("replication", "master_link_status").as_deref() != Some("up") {
        assert!(Instant::now() < deadline, "the replica syncs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut on_primary = primary.connect().unwrap();
    let kept = notify_all(&mut on_primary, json!({"n": 1}));
    assert_eq!(
        on_primary.call(&[b"WAIT", b"1", b"1000"]).unwrap(),
        Value::Int(1),
        "the replica holds the first"
    );
    // Promoted while the primary goes on: what it publishes now never reaches the replica.
    assert!(matches!(
        replica.call(&["REPLICAOF", "NO", "ONE"]),
        Value::Simple(_)
    ));
    let lost = notify_all(&mut on_primary, json!({"n": 2}));
    let next = notify_all(&mut replica.connect().unwrap(), json!({"n": 3}));
    assert_eq!(lost.offset, kept.offset + 1);
    assert_ne!(
        (next.epoch, next.offset),
        (lost.epoch, lost.offset),
        "the lost message's position is given to another"
    );
}
