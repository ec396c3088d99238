//! Presence channels through pushnote.js in headless Chromium, against two real servers of one
//! forwarder: every page's `members` comes to list the same users with their info; a user with
//! a tab on each server stays listed while either is open; a page back from a dropped
//! connection is told only who came and went meanwhile; and the members of a server killed
//! with `kill -9` leave the other server's pages once its `--presence-timeout` has passed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::Bridge;
use crate::support::*;

/// The channel every page joins.
const ROOM: &str = "presence-room";
/// How long the servers keep the members of a server they no longer hear from, in seconds.
const PRESENCE_TIMEOUT: &str = "2";
/// How long any wait of this test may take.
const LONG: Duration = Duration::from_secs(20);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The info the app gives user `user`: JSON values of several kinds (`d` has none: null).
fn info(user: &str) -> Value {
    match user {
        "a" => json!({"name": "Ann"}),
        "b" => json!({"name": "Bo", "avatar": "/b.png"}),
        "c" => json!("Cy \"the\" </script> ü"),
        "e" => json!([1, 2.5, true]),
        _ => Value::Null,
    }
}

/// Opens page `id` with pushnote.js at `url`, as `user` in the room with a presence token the
/// app minted, reconnecting after `delay` ms (half of it to all of it), and waits until it has
/// joined; it is then listed as itself.
fn join(bridge: &mut Bridge, id: &str, user: &str, url: &str, delay: u64) {
    let given = Some(info(user))
        .filter(|i| !i.is_null())
        .map(|i| i.to_string());
    let token = signer()
        .presence_token(ROOM, user, given.as_deref())
        .unwrap();
    bridge.open_pushnote(
        id,
        url,
        json!({"presence": {ROOM: token}, "minDelay": delay, "maxDelay": delay}),
    );
    let joined = bridge.until(LONG, |e| {
        e["id"] == id && e["event"] == "presence" && e["kind"] == "subscribed"
    });
    assert_eq!(
        joined["me"],
        json!({"id": user, "info": info(user)}),
        "{id}: {joined}"
    );
}

/// The presence events page `id` reported, in order.
fn presence<'a>(bridge: &'a Bridge, id: &'a str) -> impl Iterator<Item = &'a Value> {
    bridge
        .log
        .iter()
        .filter(move |e| e["id"] == id && e["event"] == "presence" && e["channel"] == ROOM)
}

/// The members page `id` lists now (user to info), if it has joined.
fn members(bridge: &Bridge, id: &str) -> Option<BTreeMap<String, Value>> {
    let last = presence(bridge, id).last()?;
    let list: BTreeMap<String, Value> = last["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m["info"].clone()))
        .collect();
    assert_eq!(
        last["count"],
        list.len(),
        "{id}: count and list differ: {last}"
    );
    Some(list)
}

/// The members and their info that `users` are.
fn expected(users: &[&str]) -> BTreeMap<String, Value> {
    users.iter().map(|u| (u.to_string(), info(u))).collect()
}

/// Waits until every page of `ids` lists exactly `users`, with their info.
fn wait_members(bridge: &mut Bridge, ids: &[&str], users: &[&str]) {
    let want = expected(users);
    let what = format!("pages {ids:?} listing {users:?}");
    bridge.wait_for(&what, LONG, |b| {
        ids.iter().all(|id| members(b, id).as_ref() == Some(&want))
    });
}

/// The changes page `id` was told of, in order: ("member_added" or "member_removed", user).
fn changes(bridge: &Bridge, id: &str) -> Vec<(String, String)> {
    presence(bridge, id)
        .filter(|e| e["kind"] != "subscribed")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["member"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Page `id`'s changes about `user`.
fn changes_of(bridge: &Bridge, id: &str, user: &str) -> Vec<String> {
    changes(bridge, id)
        .into_iter()
        .filter(|(_, u)| u == user)
        .map(|(kind, _)| kind)
        .collect()
}

#[test]
fn presence_members_agree_across_servers_and_a_killed_servers_members_leave() {
    let (mut bridge, _) = Bridge::start();
    let fwd = forwarder();
    let presence_flags = ["--presence-timeout", PRESENCE_TIMEOUT];
    let s1 = server(&fwd, &presence_flags);
    let mut s2 = server(&fwd, &presence_flags);

    // Users a (a tab on each server), b and c join.
    join(&mut bridge, "a1", "a", &s1.url, 200);
    // b's page, once dropped, waits for the test to bring it back.
    join(&mut bridge, "b", "b", &s1.url, 600_000);
    join(&mut bridge, "a2", "a", &s2.url, 200);
    join(&mut bridge, "c", "c", &s2.url, 200);
    wait_members(&mut bridge, &["a1", "b", "a2", "c"], &["a", "b", "c"]);

    // a closes its tab on the second server: a stays, on the first. Once the second server has
    // seen the session go, d joins there: when every page lists d, any word of a's leaving
    // (sent before d's coming) has arrived.
    bridge.command(json!({"cmd": "closePage", "id": "a2"}));
    block_on(s2.wait_metric_at_most("pushnote_sessions", 1));
    join(&mut bridge, "d", "d", &s2.url, 200);
    wait_members(&mut bridge, &["a1", "b", "c", "d"], &["a", "b", "c", "d"]);
    for id in ["a1", "b", "c", "d"] {
        assert!(
            !changes_of(&bridge, id, "a").contains(&"member_removed".to_owned()),
            "{id} was told a left: {:?}",
            changes(&bridge, id)
        );
    }

    // b's connection drops and stays down; meanwhile c leaves and e comes. Back, b is told
    // just that.
    bridge.eval("b", "push._sock.close()");
    bridge.until(LONG, |e| e["id"] == "b" && e["state"] == "reconnecting");
    wait_members(&mut bridge, &["a1", "c", "d"], &["a", "c", "d"]);
    bridge.command(json!({"cmd": "closePage", "id": "c"}));
    join(&mut bridge, "e", "e", &s2.url, 200);
    wait_members(&mut bridge, &["a1", "d", "e"], &["a", "d", "e"]);
    let before = changes(&bridge, "b").len();
    bridge.eval("b", "clearTimeout(push._timer); push._connect()");
    wait_members(&mut bridge, &["b"], &["a", "b", "d", "e"]);
    let back = &changes(&bridge, "b")[before..];
    let told: Vec<(&str, &str)> = back.iter().map(|(k, u)| (&k[..], &u[..])).collect();
    assert_eq!(
        told,
        [("member_removed", "c"), ("member_added", "e")],
        "b, back: only who went and came; its events: {:#?}",
        presence(&bridge, "b").collect::<Vec<_>>()
    );
    wait_members(&mut bridge, &["a1", "d", "e"], &["a", "b", "d", "e"]);

    // The second server dies without a word: its members (d, e) leave the first server's
    // pages once it has not been heard from for the presence timeout; a and b stay.
    let before: Vec<usize> = ["a1", "b"]
        .iter()
        .map(|id| changes(&bridge, id).len())
        .collect();
    s2.proc.signal("KILL");
    assert!(s2.proc.wait_exit(WAIT).is_some(), "the server is killed");
    let killed = Instant::now();
    wait_members(&mut bridge, &["a1", "b"], &["a", "b"]);
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    for (id, before) in ["a1", "b"].into_iter().zip(before) {
        let mut gone: Vec<(String, String)> = changes(&bridge, id)[before..].to_vec();
        gone.sort();
        assert_eq!(
            gone,
            [
                ("member_removed".to_owned(), "d".to_owned()),
                ("member_removed".to_owned(), "e".to_owned())
            ],
            "{id}: after the kill"
        );
    }

    // No page was ever told a left, and none was told of an error.
    bridge.drain();
    for id in ["a1", "b", "a2", "c", "d", "e"] {
        assert!(
            !changes_of(&bridge, id, "a").contains(&"member_removed".to_owned()),
            "{id} was told a left: {:?}",
            changes(&bridge, id)
        );
    }
    let errors: Vec<&Value> = bridge
        .log
        .iter()
        .filter(|e| e["event"] == "pnerror" || e["event"] == "pageerror")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
