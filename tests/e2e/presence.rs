//! Presence channels end to end: pages of several users on servers of one forwarder (or one
//! `--single` server) joining a presence channel, the member lists every page keeps from the
//! server's reply and its `pushnote:presence` messages, servers killed and forwarders restarted,
//! `GET /presence`, and the bounds.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const ROOM: &str = "presence-room";

fn presence_token(channel: &str, user: &str) -> String {
    let info = json!({"name": format!("User {user}")}).to_string();
    signer().presence_token(channel, user, Some(&info)).unwrap()
}

/// A page in a presence channel: its session, and the members as the server told it.
struct Page {
    client: Client,
    members: BTreeMap<String, Value>,
    /// Every member_added and member_removed the page saw, as pushnote.js would fire them.
    added: Vec<String>,
    removed: Vec<String>,
}

impl Page {
    /// A page on `server` that joins `channel` as `user`.
    async fn join(server: &Server, channel: &str, user: &str) -> Page {
        let mut client = Client::connect(server).await;
        let token = presence_token(channel, user);
        client
            .emit(json!({"name": "subscribe", "data": {"channel": channel, "token": token}}))
            .await;
        let reply = loop {
            let v = client.next().await;
            if v["name"] == "pushnote:subscribed" {
                break v;
            }
            // A change may come between the join and its reply: the reply lists it.
            assert_eq!(v["name"], "pushnote:presence", "{v}");
        };
        assert_eq!(reply["data"]["channel"], channel, "{reply}");
        assert_eq!(reply["data"]["me"]["user"], user, "{reply}");
        let members = reply["data"]["members"]
            .as_array()
            .unwrap_or_else(|| panic!("no members in {reply}"))
            .iter()
            .map(|m| (m["user"].as_str().unwrap().to_owned(), m["info"].clone()))
            .collect();
        Page {
            client,
            members,
            added: Vec::new(),
            removed: Vec::new(),
        }
    }

    fn apply(&mut self, v: &Value) {
        assert_eq!(v["name"], "pushnote:presence", "{v}");
        for m in v["data"]["added"].as_array().unwrap() {
            let user = m["user"].as_str().unwrap().to_owned();
            if self
                .members
                .insert(user.clone(), m["info"].clone())
                .is_none()
            {
                self.added.push(user);
            }
        }
        for user in v["data"]["removed"].as_array().unwrap() {
            let user = user.as_str().unwrap();
            if self.members.remove(user).is_some() {
                self.removed.push(user.to_owned());
            }
        }
    }

    fn users(&self) -> Vec<&str> {
        self.members.keys().map(String::as_str).collect()
    }

    /// Takes in the server's messages until the page lists exactly `want`, within `limit`.
    async fn until(&mut self, want: &[&str], limit: Duration) -> Duration {
        let start = Instant::now();
        while self.users() != want {
            let left = limit.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!("members {:?}, not {want:?}, after {limit:?}", self.users())
            });
            let wait = left.min(Duration::from_millis(500));
            if let Ok(v) = tokio::time::timeout(wait, self.client.next()).await {
                self.apply(&v);
            }
        }
        start.elapsed()
    }

    /// Takes in what arrives for `d`.
    async fn drain(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Ok(v) = tokio::time::timeout(left, self.client.next()).await {
                self.apply(&v);
            }
        }
    }
}

/// A forwarder with `--http` (the API key in its environment) on fixed free ports, so that it
/// can be started again on them; its `/presence` URL.
fn forwarder_at(sub: &str, publish: &str, http: &str) -> (Forwarder, String) {
    let fwd = forwarder_of(
        Command::new(bin("pushnote-mq"))
            .env("PUSHNOTE_MQ_API_KEY", API_KEY)
            .args([
                "--sub",
                sub,
                "--pub",
                publish,
                "--http",
                http,
                "--presence-timeout",
                "2",
            ]),
    );
    let url = fwd
        .proc
        .value_after("/publish at")
        .replace("/publish", "/presence");
    (fwd, url)
}

/// The users `GET /presence` lists for `channel`.
async fn listed(url: &str, channel: &str) -> Vec<String> {
    let r = http(
        "GET",
        &format!("{url}?channel={channel}"),
        &[("Authorization", &format!("Bearer {API_KEY}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["channel"], channel);
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect()
}

/// Asks `GET /presence` until it lists `want`, within `limit`.
async fn listed_until(url: &str, channel: &str, want: &[&str], limit: Duration) {
    let start = Instant::now();
    loop {
        let users = listed(url, channel).await;
        if users == want {
            return;
        }
        assert!(start.elapsed() < limit, "{users:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn members_are_shared_by_the_servers_of_a_forwarder_and_a_dead_servers_leave_in_time() {
    let ports = [free_port(), free_port(), free_port()];
    let sub = format!("tcp://127.0.0.1:{}", ports[0]);
    let publish = format!("tcp://127.0.0.1:{}", ports[1]);
    let http_at = format!("127.0.0.1:{}", ports[2]);
    let (fwd, presence_url) = forwarder_at(&sub, &publish, &http_at);
    let flags = ["--presence-timeout", "2"];
    let s1 = server(&fwd, &flags);
    let s2 = server(&fwd, &flags);
    // a has a tab on each server; c is on s1 only, b on s2 only.
    let mut a1 = Page::join(&s1, ROOM, "a").await;
    let mut c = Page::join(&s1, ROOM, "c").await;
    let mut a2 = Page::join(&s2, ROOM, "a").await;
    let mut b = Page::join(&s2, ROOM, "b").await;
    let everyone = ["a", "b", "c"];
    for page in [&mut a1, &mut c, &mut a2, &mut b] {
        page.until(&everyone, WAIT).await;
    }
    assert_eq!(
        b.members["c"],
        json!({"name": "User c"}),
        "the token's info"
    );
    assert_eq!(
        b.added.iter().filter(|u| *u == "a").count(),
        0,
        "b's reply listed a: {:?}",
        b.added
    );
    listed_until(&presence_url, ROOM, &everyone, WAIT).await;

    // The forwarder restarts: no one leaves any list, and its own view comes back.
    drop(fwd);
    let (fwd, presence_url) = forwarder_at(&sub, &publish, &http_at);
    listed_until(&presence_url, ROOM, &everyone, WAIT).await;
    for page in [&mut a1, &mut c, &mut a2, &mut b] {
        page.drain(Duration::from_millis(300)).await;
        assert_eq!(page.users(), everyone);
        assert!(page.removed.is_empty(), "{:?}", page.removed);
    }

    // s1 dies without a word: c leaves the lists of s2's pages within the timeout, a (also on
    // s2) does not.
    s1.proc.signal("KILL");
    let took = b.until(&["a", "b"], Duration::from_secs(15)).await;
    a2.until(&["a", "b"], Duration::from_secs(15)).await;
    assert_eq!(b.removed, ["c"], "{took:?}");
    assert_eq!(a2.removed, ["c"]);
    listed_until(&presence_url, ROOM, &["a", "b"], Duration::from_secs(15)).await;
    eprintln!("a dead server's members left within {took:?} (--presence-timeout 2)");

    // a's last tab closes: a leaves.
    drop(a2);
    b.until(&["b"], WAIT).await;
    assert_eq!(b.removed, ["c", "a"]);
    drop(fwd);
}

#[tokio::test]
async fn a_member_with_another_tab_open_never_leaves_and_a_reload_at_most_leaves_and_comes_back() {
    let fwd = forwarder();
    let flags = ["--presence-interval", "300"];
    let s1 = server(&fwd, &flags);
    let s2 = server(&fwd, &flags);
    let mut watcher = Page::join(&s2, ROOM, "w").await;
    let first = Page::join(&s1, ROOM, "a").await;
    let second = Page::join(&s1, ROOM, "a").await;
    watcher.until(&["a", "w"], WAIT).await;
    // One of a's tabs closes, once s1 holds the other only.
    drop(first);
    s1.wait_metric_at_most("pushnote_sessions", 1).await;
    // A newcomer after it: once the watcher lists it, whatever a's tab did reached it.
    let _y = Page::join(&s1, ROOM, "y").await;
    watcher.until(&["a", "w", "y"], WAIT).await;
    watcher.drain(Duration::from_millis(400)).await;
    assert!(watcher.removed.is_empty(), "{:?}", watcher.removed);
    // a's other tab reloads: it leaves and joins again. Within an interval that is no change;
    // on a slow machine it may take longer, and a leaves and comes back: either way a is
    // listed in the end, and every leave was followed by a coming back.
    drop(second);
    let again = Page::join(&s1, ROOM, "a").await;
    let _z = Page::join(&s1, ROOM, "z").await;
    watcher.until(&["a", "w", "y", "z"], WAIT).await;
    watcher.drain(Duration::from_millis(700)).await;
    assert_eq!(watcher.users(), ["a", "w", "y", "z"]);
    let count = |list: &[String]| list.iter().filter(|u| *u == "a").count();
    assert_eq!(
        count(&watcher.added),
        count(&watcher.removed) + 1,
        "added {:?}, removed {:?}",
        watcher.added,
        watcher.removed
    );
    drop(again);
}

#[tokio::test]
async fn a_page_joining_and_leaving_in_a_loop_costs_the_others_one_message_an_interval() {
    let fwd = forwarder();
    let flags = ["--presence-interval", "200"];
    let s1 = server(&fwd, &flags);
    let s2 = server(&fwd, &flags);
    let mut watcher = Page::join(&s2, ROOM, "w").await;
    let mut looper = Client::connect(&s1).await;
    let token = presence_token(ROOM, "l");
    let sent_before = s1.metric("pushnote_presence_bus_sent_total").await;
    let start = Instant::now();
    // Up to --max-subscribe-attempts (32) joins with a token a session.
    for _ in 0..30 {
        looper
            .emit(json!({"name": "subscribe", "data": {"channel": ROOM, "token": token}}))
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        looper
            .emit(json!({"name": "unsubscribe", "data": {"channel": ROOM}}))
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every request answered (the looper's own presence messages aside).
    let mut replies = 0;
    while replies < 60 {
        let v = looper.next().await;
        assert_ne!(v["name"], "pushnote:error", "{v}");
        if v["name"] != "pushnote:presence" {
            replies += 1;
        }
    }
    let took = start.elapsed();
    watcher.drain(Duration::from_millis(600)).await;
    let sent = s1.metric("pushnote_presence_bus_sent_total").await - sent_before;
    let intervals = (took + Duration::from_millis(600)).as_millis() as u64 / 200 + 2;
    let heartbeats = (took + Duration::from_millis(600)).as_secs() + 2;
    // And perhaps its whole state once, asked by s2 as it started: reset, members, heartbeat.
    let answer = 3;
    assert!(
        sent <= intervals + heartbeats + answer,
        "{sent} presence messages sent for 60 requests over {took:?}"
    );
    let events = watcher.added.len() + watcher.removed.len();
    assert!(
        events as u64 <= intervals,
        "{events} changes over {took:?}: {:?} {:?}",
        watcher.added,
        watcher.removed
    );
    assert_eq!(watcher.users(), ["w"]);
}

#[tokio::test]
async fn a_single_server_answers_presence_and_keeps_its_bounds() {
    let srv = single_server(&[
        "--secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--presence-max-members",
        "2",
        "--presence-max-info",
        "40",
        "--presence-max-channels",
        "1",
    ]);
    let url = format!("{}/presence", srv.origin);
    let mut a = Page::join(&srv, ROOM, "a").await;
    let mut b = Page::join(&srv, ROOM, "b").await;
    a.until(&["a", "b"], WAIT).await;
    listed_until(&url, ROOM, &["a", "b"], WAIT).await;

    let refused = |reply: &Value| {
        reply["data"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mut other = Client::connect(&srv).await;
    let join = |channel: &str, token: String| json!({"name": "subscribe", "data": {"channel": channel, "token": token}});
    // A third member: full. A second tab of a member: welcome.
    other.emit(join(ROOM, presence_token(ROOM, "c"))).await;
    assert_eq!(refused(&other.next().await), "presence_full");
    other.emit(join(ROOM, presence_token(ROOM, "b"))).await;
    assert_eq!(other.next().await["name"], "pushnote:subscribed");
    // One presence channel a session.
    other
        .emit(join("presence-two", presence_token("presence-two", "b")))
        .await;
    assert_eq!(refused(&other.next().await), "too_many_channels");
    // Info over the bound.
    let mut big = Client::connect(&srv).await;
    let info = json!({"name": "x".repeat(40)}).to_string();
    let too_big = signer()
        .presence_token("presence-two", "d", Some(&info))
        .unwrap();
    big.emit(join("presence-two", too_big)).await;
    let reply = big.next().await;
    assert_eq!(refused(&reply), "bad_request", "{reply}");
    // A private channel's token is no presence token, nor the other way round.
    let private = signer().channel_token("presence-two", None);
    assert!(
        private.is_err(),
        "a presence channel's token names its member"
    );
    let grant = signer().channel_token("private-x", None).unwrap();
    big.emit(join("presence-two", grant)).await;
    assert_eq!(refused(&big.next().await), "forbidden");
    // Subscribed as another user: forbidden; subscribing as another user later leaves.
    big.subscribe(&token("e")).await;
    big.emit(join("presence-two", presence_token("presence-two", "d")))
        .await;
    assert_eq!(refused(&big.next().await), "forbidden");
    b.client.subscribe(&token("zz")).await;
    let left = b.client.next().await;
    assert_eq!(
        left,
        json!({"name": "pushnote:unsubscribed", "data": {"channel": ROOM}})
    );
    // b's other session keeps b in.
    a.drain(Duration::from_millis(300)).await;
    assert_eq!(a.users(), ["a", "b"]);
    // That session joins again as another member: it is that one now, and b has left.
    other.emit(join(ROOM, presence_token(ROOM, "f"))).await;
    let reply = other.next().await;
    assert_eq!(reply["data"]["me"]["user"], "f", "{reply}");
    a.until(&["a", "f"], WAIT).await;
    drop(other);
    a.until(&["a"], WAIT).await;

    // GET /presence: the key, a presence channel's name.
    let r = http("GET", &format!("{url}?channel={ROOM}"), &[], "").await;
    assert_eq!(r.status, 401);
    let bearer = format!("Bearer {API_KEY}");
    let r = http(
        "GET",
        &format!("{url}?channel=private-x"),
        &[("Authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http("GET", &url, &[("Authorization", &bearer)], "").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(listed(&url, "presence-nobody").await.is_empty());
    assert_eq!(
        srv.metric("pushnote_presence_refused_total{reason=\"full\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn the_servers_of_a_redis_share_their_members_and_answer_presence() {
    let redis = crate::redis_proc::Redis::start();
    let flags = ["--presence-timeout", "2", "--api-key", API_KEY];
    let s1 = crate::redis_engine::redis_server(&redis, &flags);
    let s2 = crate::redis_engine::redis_server(&redis, &flags);
    let mut a = Page::join(&s1, ROOM, "a").await;
    let mut b = Page::join(&s2, ROOM, "b").await;
    a.until(&["a", "b"], WAIT).await;
    b.until(&["a", "b"], WAIT).await;
    listed_until(&format!("{}/presence", s2.origin), ROOM, &["a", "b"], WAIT).await;
    // s1 dies: its member leaves s2's pages within the timeout.
    s1.proc.signal("KILL");
    b.until(&["b"], Duration::from_secs(15)).await;
    assert_eq!(b.removed, ["a"]);
    drop(a);
}

#[tokio::test]
async fn a_server_restarted_within_the_timeout_makes_no_member_flicker_elsewhere() {
    let fwd = forwarder();
    let port = free_port().to_string();
    let mut args = server_args(&fwd, &port);
    args.extend(["--presence-timeout", "10", "--shutdown-grace", "1"]);
    let s1 = spawn_server(&mut server_cmd(&args), false);
    let s2 = server(&fwd, &["--presence-timeout", "10"]);
    let mut watcher = Page::join(&s2, ROOM, "w").await;
    let a = Page::join(&s1, ROOM, "a").await;
    watcher.until(&["a", "w"], WAIT).await;
    // s1 stops (SIGTERM: its pages are told 3001) and starts again on its port; a's page
    // comes back to it and joins again, as pushnote.js does.
    s1.proc.terminate();
    drop(a);
    drop(s1);
    let s1 = spawn_server(&mut server_cmd(&args), false);
    let _a = Page::join(&s1, ROOM, "a").await;
    // The restarted server's members are known to s2 (a new server); the old one's go
    // after the timeout: a never leaves the watcher's list.
    let deadline = Instant::now() + Duration::from_secs(20);
    while s2.metric("pushnote_presence_servers_expired_total").await < 1 {
        watcher.drain(Duration::from_millis(200)).await;
        assert!(
            Instant::now() < deadline,
            "the old server was never forgotten"
        );
    }
    watcher.drain(Duration::from_millis(300)).await;
    assert_eq!(watcher.users(), ["a", "w"]);
    assert!(watcher.removed.is_empty(), "{:?}", watcher.removed);
}
