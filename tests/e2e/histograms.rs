//! The server's histograms in `/metrics`: every bucket listed, cumulative, and moving as
//! messages flow and pages recover; `promtool` finds nothing to say about either process.

use serde_json::{json, Value};

use crate::deploy::promtool;
use crate::support::*;

/// The `le` labels of the histograms of time, in seconds.
const TIME_BUCKETS: [&str; 18] = [
    "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// The `le` labels of the histogram of messages given.
const COUNT_BUCKETS: [&str; 14] = [
    "0", "1", "2", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "10000", "+Inf",
];

/// A histogram as `/metrics` shows it.
struct Histogram {
    /// Each bucket's `le` and cumulative count, in order.
    buckets: Vec<(String, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Histogram `name` of `text`, checked: its type, its buckets `les`, cumulative, the last
    /// one holding everything.
    fn of(text: &str, name: &str, les: &[&str]) -> Histogram {
        assert!(
            text.lines()
                .any(|l| l == format!("# TYPE {name} histogram")),
            "{name} in\n{text}"
        );
        let value = |suffix: &str| -> &str {
            let prefix = format!("{name}{suffix} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("{name}{suffix} in\n{text}"))
        };
        let bucket = format!("{name}_bucket{{le=\"");
        let buckets: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&bucket))
            .map(|l| {
                let (le, count) = l.split_once("\"} ").unwrap();
                (le.to_owned(), count.parse().unwrap())
            })
            .collect();
        let got: Vec<&str> = buckets.iter().map(|(le, _)| le.as_str()).collect();
        assert_eq!(got, les, "{name}'s buckets");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}'s buckets are cumulative: {buckets:?}"
        );
        let count: u64 = value("_count").parse().unwrap();
        assert_eq!(buckets.last().unwrap().1, count, "+Inf holds all of {name}");
        Histogram {
            sum: value("_sum").parse().unwrap(),
            buckets,
            count,
        }
    }

    fn bucket(&self, le: &str) -> u64 {
        self.buckets.iter().find(|(l, _)| l == le).unwrap().1
    }
}

async fn text(server: &Server) -> String {
    http_get(&format!("{}/metrics", server.origin)).await.1
}

/// Waits until `server`'s histogram `name` has counted `at_least` observations.
async fn wait_count(server: &Server, name: &str, at_least: u64) -> Histogram {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h = Histogram::of(&text(server).await, name, &TIME_BUCKETS);
        if h.count >= at_least {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {}",
            h.count
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends `positions` (with `since`, if any) and returns its reply, and the messages before it.
async fn positions(client: &mut Client, since: Option<&Value>) -> (Value, Vec<Value>) {
    let mut data = json!({"replies": true});
    if let Some(since) = since {
        data["since"] = since.clone();
    }
    client
        .emit(json!({"name": "positions", "data": data}))
        .await;
    let mut before = Vec::new();
    loop {
        let v = client.next_unmarked().await;
        if v["name"] == "pushnote:positions" {
            return (v, before);
        }
        before.push(v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_histograms_of_delivery_and_recovery_fill_as_messages_flow_and_pages_recover() {
    let metrics_port = free_port().to_string();
    let metrics_at = format!("127.0.0.1:{metrics_port}");
    let fwd = forwarder_with(&[
        "--sub",
        "tcp://127.0.0.1:*",
        "--pub",
        "tcp://127.0.0.1:*",
        "--history-size",
        "100",
        "--metrics",
        &metrics_at,
    ]);
    let srv = server(&fwd, &[]);
    let bus = publisher(&fwd.sub);
    let mut page = Client::connect(&srv).await;
    sync(&bus, &mut page, None).await;

    let before = text(&srv).await;
    let lag = Histogram::of(&before, "pushnote_bus_delivery_lag_seconds", &TIME_BUCKETS);
    let latency = Histogram::of(&before, "pushnote_delivery_latency_seconds", &TIME_BUCKETS);
    let recovery_time = Histogram::of(&before, "pushnote_recovery_seconds", &TIME_BUCKETS);
    let recovery_size = Histogram::of(&before, "pushnote_recovery_messages", &COUNT_BUCKETS);
    assert_eq!((recovery_time.count, recovery_size.count), (0, 0));

    // Messages flow: each one's wait and delivery are counted.
    for n in 0..20 {
        bus.notify_all(&json!({ "n": n })).unwrap();
    }
    for n in 0..20 {
        assert_eq!(page.next_unmarked().await, json!({ "n": n }));
    }
    let lag_after = wait_count(&srv, "pushnote_bus_delivery_lag_seconds", lag.count + 20).await;
    let latency_after = wait_count(
        &srv,
        "pushnote_delivery_latency_seconds",
        latency.count + 20,
    )
    .await;
    assert!(lag_after.sum >= lag.sum && latency_after.sum > latency.sum);
    // Read off the bus before it is written: a message's latency is at least its wait.
    assert!(latency_after.sum >= lag_after.sum - lag.sum);

    // A page takes its position, three broadcasts pass, and another page recovers them.
    let (reply, _) = positions(&mut page, None).await;
    let since = reply["data"]["position"].clone();
    for n in 20..23 {
        bus.notify_all(&json!({ "n": n })).unwrap();
        assert_eq!(page.next_unmarked().await["data"], json!({ "n": n }));
    }
    let mut back = Client::connect(&srv).await;
    let (reply, given) = positions(&mut back, Some(&since)).await;
    assert_eq!(reply["data"]["recovered"], json!(true), "{reply}");
    assert_eq!(given.len(), 3, "{given:?}");
    let after = text(&srv).await;
    let recovery_time = Histogram::of(&after, "pushnote_recovery_seconds", &TIME_BUCKETS);
    let recovery_size = Histogram::of(&after, "pushnote_recovery_messages", &COUNT_BUCKETS);
    assert_eq!(recovery_time.count, 1, "one request with a position");
    assert_eq!(recovery_size.count, 1);
    assert_eq!(recovery_size.sum, 3.0, "three messages given");
    assert_eq!(
        (recovery_size.bucket("2"), recovery_size.bucket("5")),
        (0, 1),
        "three messages: in the bucket up to 5"
    );

    assert_eq!(promtool(&after), "", "the server's /metrics");
    let (_, mq) = http_get(&format!("http://{metrics_at}/metrics")).await;
    assert_eq!(promtool(&mq), "", "the forwarder's /metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_servers_own_recoveries_fill_its_histograms() {
    let srv = single_server(&["--history-size", "100"]);
    let bus = publisher(srv.bus.as_deref().unwrap());
    let mut page = Client::connect(&srv).await;
    sync(&bus, &mut page, None).await;
    let (reply, _) = positions(&mut page, None).await;
    let since = reply["data"]["position"].clone();
    for n in 0..12 {
        bus.notify_all(&json!({ "n": n })).unwrap();
    }
    for n in 0..12 {
        assert_eq!(page.next_unmarked().await["data"], json!({ "n": n }));
    }
    let mut back = Client::connect(&srv).await;
    let (reply, given) = positions(&mut back, Some(&since)).await;
    assert_eq!(reply["data"]["recovered"], json!(true), "{reply}");
    assert_eq!(given.len(), 12, "{given:?}");
    let lag = wait_count(&srv, "pushnote_bus_delivery_lag_seconds", 12).await;
    assert!(lag.count >= 12);
    wait_count(&srv, "pushnote_delivery_latency_seconds", 12).await;
    let after = text(&srv).await;
    let recovery_time = Histogram::of(&after, "pushnote_recovery_seconds", &TIME_BUCKETS);
    let recovery_size = Histogram::of(&after, "pushnote_recovery_messages", &COUNT_BUCKETS);
    assert_eq!((recovery_time.count, recovery_size.count), (1, 1));
    assert_eq!(recovery_size.sum, 12.0, "twelve messages given");
    assert_eq!(
        (recovery_size.bucket("10"), recovery_size.bucket("25")),
        (0, 1),
        "twelve messages: in the bucket up to 25"
    );
    assert_eq!(promtool(&after), "", "a single server's /metrics");
}
