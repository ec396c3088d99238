//! Replies are opt-in: a page written for the original pushnote, which sends only
//! `{"name":"subscribe","data":{"token":…}}` and shows every message it receives, receives
//! nothing but the published data, on WebSocket and polling alike; what it would have been
//! told (a refused token included) is counted in `/metrics` instead. A page that
//! asks (`"replies": true`), or sends a request the original never had (`positions`, a
//! channel's subscribe or unsubscribe), gets every reply from then on.

use serde_json::{json, Value};

use crate::support::*;
use crate::transports::Polling;

/// The reply counter of `code` (`ok` for a success reply).
fn withheld(code: &str) -> String {
    format!("pushnote_replies_withheld_total{{code=\"{code}\"}}")
}

/// The only request the original's example page sends.
fn originals_subscribe(token: &str) -> Value {
    json!({"name": "subscribe", "data": {"token": token}})
}

/// A forwarder, a server, a publisher, and a session with replies subscribed as `user`
/// whose messages are known to reach the server: a message to `user` published from now on
/// reaches every session of `user` there.
async fn stack_with_user(extra: &[&str], user: &str) -> (Forwarder, Server, pushnote::Publisher) {
    let (fwd, srv, bus, mut witness) = stack(extra).await;
    assert_eq!(
        witness.subscribe(&token(user)).await["name"],
        "pushnote:subscribed"
    );
    sync(&bus, &mut witness, Some(user)).await;
    (fwd, srv, bus)
}

#[tokio::test]
async fn the_originals_page_over_websocket_receives_only_data_and_refusals_are_counted() {
    let (_fwd, srv, bus) = stack_with_user(&[], "ada").await;
    let mut page = Client::connect(&srv).await;
    page.emit(originals_subscribe(&token("ada"))).await;
    // The witness subscribed once; this page is the second.
    srv.wait_metric("pushnote_subscribes_total", 2).await;
    bus.notify(&json!({"msg": "for ada"}), ["ada"]).unwrap();
    assert_eq!(
        page.next().await,
        json!({"msg": "for ada"}),
        "the first message is the data"
    );
    assert_eq!(srv.metric(&withheld("ok")).await, 1);

    // A refused token: the error is counted, not sent; the page keeps its user.
    page.emit(originals_subscribe("42:forged:token")).await;
    srv.wait_metric(&withheld("invalid_token"), 1).await;
    bus.notify(&json!({"msg": "still ada"}), ["ada"]).unwrap();
    bus.notify_all(&json!({"end": true})).unwrap();
    assert_eq!(page.next().await, json!({"msg": "still ada"}));
    assert_eq!(page.next().await, json!({"end": true}));
    assert_eq!(srv.metric("pushnote_client_errors_total").await, 1);

    // Nor is anything else it could be told: an unsubscribe's reply, a malformed message.
    page.emit(json!({"name": "unsubscribe"})).await;
    page.send_text("not json").await;
    srv.wait_metric(&withheld("bad_message"), 1).await;
    assert_eq!(srv.metric(&withheld("ok")).await, 2);
    bus.notify_all(&json!({"end": 2})).unwrap();
    assert_eq!(page.next().await, json!({"end": 2}));
}

#[tokio::test]
async fn the_originals_page_over_xhr_polling_receives_only_data() {
    let (_fwd, srv, bus) = stack_with_user(&["--heartbeat", "1"], "bob").await;
    let mut page = Polling::open(&srv).await;
    page.emit(originals_subscribe(&token("bob"))).await;
    srv.wait_metric("pushnote_subscribes_total", 2).await;
    bus.notify(&json!({"msg": "for bob"}), ["bob"]).unwrap();
    assert_eq!(
        page.next().await,
        json!({"msg": "for bob"}),
        "the first message is the data"
    );
    page.emit(originals_subscribe("")).await;
    srv.wait_metric(&withheld("invalid_token"), 1).await;
    bus.notify_all(&json!({"end": true})).unwrap();
    assert_eq!(page.next().await, json!({"end": true}));
}

#[tokio::test]
async fn a_page_that_asks_for_replies_gets_them() {
    let (_fwd, srv, _bus, mut page) = stack(&[]).await;
    // The request that asks is answered, refused or not.
    page.emit(json!({"name": "subscribe", "data": {"token": "forged", "replies": true}}))
        .await;
    let refused = page.next().await;
    assert_eq!(refused["name"], "pushnote:error", "{refused}");
    assert_eq!(refused["data"]["code"], "invalid_token");
    // And every request after it, with or without the field.
    page.emit(originals_subscribe(&token("cy"))).await;
    assert_eq!(
        page.next().await,
        json!({"name": "pushnote:subscribed", "data": {"user": "cy"}})
    );
    page.emit(json!({"name": "unsubscribe"})).await;
    assert_eq!(
        page.next().await,
        json!({"name": "pushnote:unsubscribed", "data": {}})
    );
    page.send_text("not json").await;
    assert_eq!(page.next().await["data"]["code"], "bad_message");
    assert_eq!(srv.metric(&withheld("ok")).await, 0);
    assert_eq!(srv.metric(&withheld("invalid_token")).await, 0);
}

#[tokio::test]
async fn positions_and_channel_requests_turn_replies_on() {
    let srv = single_server(&["--secret", SECRET]);
    // `positions`: the original never had it.
    let mut positioned = Client::connect(&srv).await;
    positioned.emit(json!({"name": "positions"})).await;
    assert_eq!(positioned.next().await["name"], "pushnote:positions");
    positioned.emit(originals_subscribe(&token("dee"))).await;
    let reply = positioned.next().await;
    assert_eq!(reply["name"], "pushnote:subscribed", "{reply}");
    assert_eq!(reply["data"]["user"], "dee");

    // A channel's subscribe, refused here (a private channel without a token).
    let mut joining = Client::connect(&srv).await;
    joining
        .emit(json!({"name": "subscribe", "data": {"channel": "private-x"}}))
        .await;
    assert_eq!(joining.next().await["data"]["code"], "forbidden");
    joining.emit(originals_subscribe("forged")).await;
    assert_eq!(joining.next().await["data"]["code"], "invalid_token");

    // A channel's unsubscribe.
    let mut leaving = Client::connect(&srv).await;
    leaving
        .emit(json!({"name": "unsubscribe", "data": {"channel": "news"}}))
        .await;
    assert_eq!(
        leaving.next().await,
        json!({"name": "pushnote:unsubscribed", "data": {"channel": "news"}})
    );
    leaving.emit(originals_subscribe(&token("eve"))).await;
    assert_eq!(leaving.next().await["data"]["user"], "eve");

    // Nothing was withheld.
    let body = http_get(&format!("{}/metrics", srv.origin)).await.1;
    assert!(
        body.contains("# TYPE pushnote_replies_withheld_total counter\n"),
        "{body}"
    );
    let withheld_total: u64 = body
        .lines()
        .filter(|l| l.starts_with("pushnote_replies_withheld_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(withheld_total, 0, "{body}");
}
