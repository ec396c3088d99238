//! Who may open a session, and how many: the bounds on what one client can take.
//!
//! A server bounds its sessions in all (the application does, in [`Handler::on_open`]); that
//! alone lets one client take every slot: a single keep-alive connection pipelining
//! `POST /<server>/<new id>/xhr` opens tens of thousands of sessions a second. Two bounds keep
//! one client to its share:
//!
//! - **per connection**, a count: the HTTP sessions opened through one connection and not yet
//!   forgotten ([`Options::max_sessions_per_connection`]). A browser opens one session per
//!   page, on whichever of its few pooled connections is free, so a handful per connection is
//!   what real clients reach. A WebSocket connection holds one session by itself.
//! - **per address**, a rate: new sessions of every transport from one client address, as an
//!   allowance that grows back ([`Options::sessions_per_address`]). A count would have to be
//!   as large as the largest office behind one NAT address, and would then bound nothing for
//!   everyone else; a rate lets any number of pages open over time while bounding how fast
//!   one address fills the server, and how many sessions it can hold without keeping them
//!   alive (those it opens within the disconnect delay). IPv6 addresses count by their /64,
//!   the block one subscriber gets.
//!
//! Behind a reverse proxy every client arrives from the proxy's address, and one upstream
//! connection carries many clients' requests. So a trusted proxy
//! ([`Options::trusted_proxies`]) is not a client: its connections are not bounded, and the
//! address counted is the client's that the request names (`X-Forwarded-For`, `X-Real-IP` or
//! `Forwarded`); a request that names none is not bounded per address either (naming clients
//! is the proxy's part). Anyone else's forwarding headers are ignored: they are the client's
//! to forge.
//!
//! [`Handler::on_open`]: crate::Handler::on_open
//! [`Options::max_sessions_per_connection`]: crate::Options::max_sessions_per_connection
//! [`Options::sessions_per_address`]: crate::Options::sessions_per_address
//! [`Options::trusted_proxies`]: crate::Options::trusted_proxies

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use warp::http::HeaderMap;

use crate::Options;

/// The connection a request came on, as the server that accepted it knows it. A server that
/// serves [`routes`](crate::routes) through its own connection loop inserts it into each
/// request's extensions (`request.extensions_mut().insert(peer)`), so sessions can be
/// bounded per connection and per address; without it, warp's remote address is used where
/// warp knows it, and there is no bound per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Tells the connection apart from every other one this process has accepted.
    pub connection: u64,
    /// The address the connection came from.
    pub address: IpAddr,
}

impl Peer {
    /// The peer of connection number `connection`, from `address`.
    pub fn new(connection: u64, address: IpAddr) -> Peer {
        Peer {
            connection,
            address: address.to_canonical(),
        }
    }
}

/// Addresses whose forwarding headers are believed: reverse proxies in front of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxies(Vec<(IpAddr, u8)>);

impl Proxies {
    /// Believe no one's forwarding headers.
    pub fn none() -> Proxies {
        Proxies(Vec::new())
    }

    /// Believe the loopback addresses' (127.0.0.0/8 and ::1): a proxy on the same machine.
    pub fn loopback() -> Proxies {
        Proxies(vec![
            (IpAddr::from([127, 0, 0, 0]), 8),
            (IpAddr::from(Ipv6Addr::LOCALHOST), 128),
        ])
    }

    /// A list of addresses and networks (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`, `::1`), or
    /// `loopback`; empty items are skipped, so an empty list trusts no one.
    pub fn list<S: AsRef<str>>(items: &[S]) -> Result<Proxies, String> {
        let mut nets = Vec::new();
        for item in items {
            let item = item.as_ref().trim();
            if item.is_empty() {
                continue;
            }
            if item == "loopback" {
                nets.extend(Proxies::loopback().0);
                continue;
            }
            let (address, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let bad = || format!("{item:?} is not an IP address or network (such as 10.0.0.0/8)");
            let address: IpAddr = address.parse().map_err(|_| bad())?;
            let address = address.to_canonical();
            let most = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => most,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|&b| b <= most)
                    .ok_or_else(bad)?,
            };
            nets.push((address, bits));
        }
        Ok(Proxies(nets))
    }

    /// Whether `address` is one of the trusted proxies.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0
            .iter()
            .any(|&(net, bits)| prefix(net, bits) == prefix(address, bits))
    }
}

/// The first `bits` of `address`, as a number (IPv4 and IPv6 never equal: a tag sets them
/// apart).
fn prefix(address: IpAddr, bits: u8) -> (bool, u128) {
    match address {
        IpAddr::V4(a) => {
            let n = u32::from(a);
            let kept = if bits == 0 {
                0
            } else {
                n >> (32 - u32::from(bits.min(32)))
            };
            (false, u128::from(kept))
        }
        IpAddr::V6(a) => {
            let n = u128::from(a);
            let kept = if bits == 0 {
                0
            } else {
                n >> (128 - u32::from(bits.min(128)))
            };
            (true, kept)
        }
    }
}

/// How fast one address may open sessions: `per_second`, after a burst of `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Sessions the allowance grows back by each second.
    pub per_second: u32,
    /// Sessions that may open at once.
    pub burst: u32,
}

/// Why a new session was refused (see [`crate::Handler::on_refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its connection opened [`crate::Options::max_sessions_per_connection`] already.
    Connection,
    /// Its address spent its allowance ([`crate::Options::sessions_per_address`]).
    Address(IpAddr),
}

/// Who a request is from, as far as the bounds are concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Client {
    /// The connection, when it carries this client alone (not a trusted proxy's).
    pub(crate) connection: Option<u64>,
    /// The client's address, forwarded by a trusted proxy or the peer's own.
    pub(crate) address: Option<IpAddr>,
}

impl Client {
    /// Who sent a request with `headers` on the connection of `peer` (or, without one, from
    /// `remote`).
    pub(crate) fn of(
        peer: Option<Peer>,
        remote: Option<SocketAddr>,
        headers: &HeaderMap,
        proxies: &Proxies,
    ) -> Client {
        let connection = peer.map(|p| p.connection);
        let Some(address) = peer.map(|p| p.address).or(remote.map(|r| r.ip())) else {
            return Client::default();
        };
        let address = address.to_canonical();
        if proxies.trusts(address) {
            // The proxy is not a client: the one it names is, if it names one.
            return Client {
                connection: None,
                address: forwarded(headers, proxies),
            };
        }
        Client {
            connection,
            address: Some(address),
        }
    }
}

/// The client a trusted proxy names: in `X-Forwarded-For`, the last address not itself a
/// trusted proxy (each proxy appends the address it was reached from, so the entries left of
/// the last untrusted one are the client's to forge); else `X-Real-IP`; else the last `for=`
/// of `Forwarded`.
fn forwarded(headers: &HeaderMap, proxies: &Proxies) -> Option<IpAddr> {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !xff.is_empty() {
        return last_untrusted(xff.iter().copied(), proxies);
    }
    if let Some(real) = headers.get("x-real-ip").and_then(|v| v.to_str().ok()) {
        return parse_address(real);
    }
    let fors: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
        })
        .collect();
    if !fors.is_empty() {
        return last_untrusted(fors.into_iter(), proxies);
    }
    None
}

/// The last of `hops` (nearest the server first, walking back) that is not a trusted proxy;
/// the first of them if all are. `None` when one on the way is not an address.
fn last_untrusted<'a>(
    hops: impl DoubleEndedIterator<Item = &'a str>,
    proxies: &Proxies,
) -> Option<IpAddr> {
    let mut client = None;
    for hop in hops.rev() {
        let address = parse_address(hop)?;
        client = Some(address);
        if !proxies.trusts(address) {
            break;
        }
    }
    client
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, quoted or not.
fn parse_address(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(a) = s.parse::<IpAddr>() {
        return Some(a.to_canonical());
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

/// What an address is counted by: itself for IPv4, its /64 for IPv6.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// An allowance that grows back: sessions spent beyond what has grown back, in thousandths.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    spent_milli: u64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: Rate) {
        let grown =
            now.saturating_duration_since(self.at).as_millis() as u64 * u64::from(rate.per_second);
        self.spent_milli = self.spent_milli.saturating_sub(grown);
        self.at = now;
    }
}

/// Below this many entries a map is neither swept nor shrunk.
const MIN_ROOM: usize = 1024;

/// The counts behind the bounds.
#[derive(Default)]
pub(crate) struct Admission {
    /// HTTP sessions opened through each connection and not yet forgotten.
    per_connection: HashMap<u64, usize>,
    /// What each address (or IPv6 /64) has spent of its allowance.
    per_address: HashMap<IpAddr, Bucket>,
    /// How many addresses there were after the last sweep of the full allowances.
    swept_at: usize,
}

impl Admission {
    /// Admits a new session of `client` at `now`, counting it against its connection when
    /// `http` (an HTTP session, held in the registry until [`Admission::release`]).
    pub(crate) fn admit(
        &mut self,
        client: &Client,
        options: &Options,
        http: bool,
        now: Instant,
    ) -> Result<(), Refused> {
        let connection = client.connection.filter(|_| http);
        if let Some(c) = connection {
            if self.per_connection.get(&c).copied().unwrap_or(0)
                >= options.max_sessions_per_connection
            {
                return Err(Refused::Connection);
            }
        }
        if let (Some(rate), Some(address)) = (options.sessions_per_address, client.address) {
            if rate.per_second > 0 {
                self.spend(address, rate, now)?;
            }
        }
        if let Some(c) = connection {
            *self.per_connection.entry(c).or_default() += 1;
        }
        Ok(())
    }

    fn spend(&mut self, address: IpAddr, rate: Rate, now: Instant) -> Result<(), Refused> {
        let key = address_key(address);
        let bucket = self.per_address.entry(key).or_insert(Bucket {
            spent_milli: 0,
            at: now,
        });
        bucket.refill(now, rate);
        if bucket.spent_milli + 1000 > u64::from(rate.burst.max(1)) * 1000 {
            return Err(Refused::Address(address));
        }
        bucket.spent_milli += 1000;
        if self.per_address.len() >= MIN_ROOM.max(self.swept_at * 2) {
            self.sweep(now, rate);
        }
        Ok(())
    }

    /// Forgets the addresses whose allowance has grown back whole: they are as if new. Run
    /// when the map has doubled since the last sweep, so each entry costs a constant on
    /// average, and the map holds about twice the addresses that opened sessions within the
    /// time a burst takes to grow back.
    fn sweep(&mut self, now: Instant, rate: Rate) {
        self.per_address.retain(|_, b| {
            b.refill(now, rate);
            b.spent_milli > 0
        });
        self.swept_at = self.per_address.len();
        give_back(&mut self.per_address);
    }

    /// A session opened through `connection` is forgotten.
    pub(crate) fn release(&mut self, connection: u64) {
        if let Some(n) = self.per_connection.get_mut(&connection) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_connection.remove(&connection);
                give_back(&mut self.per_connection);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        self.per_address.len()
    }

    #[cfg(test)]
    pub(crate) fn connections(&self) -> usize {
        self.per_connection.len()
    }
}

/// Gives back most of a map's room once it holds under a quarter of it (a map never shrinks
/// by itself).
fn give_back<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > MIN_ROOM && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use warp::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn client_of(from: &str, h: &[(&'static str, &str)], proxies: &Proxies) -> Client {
        Client::of(Some(Peer::new(7, ip(from))), None, &headers(h), proxies)
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let loopback = Proxies::loopback();
        let xff = [("x-forwarded-for", "198.51.100.9, 203.0.113.5")];
        // From the proxy: the last hop it appended; the connection carries many clients.
        assert_eq!(
            client_of("127.0.0.1", &xff, &loopback),
            Client {
                connection: None,
                address: Some(ip("203.0.113.5"))
            }
        );
        // From anyone else, the header is the client's own word.
        assert_eq!(
            client_of("192.0.2.1", &xff, &loopback),
            Client {
                connection: Some(7),
                address: Some(ip("192.0.2.1"))
            }
        );
        assert_eq!(
            client_of("127.0.0.1", &xff, &Proxies::none()).address,
            Some(ip("127.0.0.1"))
        );
        // A trusted proxy that names no client is not bounded at all.
        assert_eq!(client_of("::1", &[], &loopback), Client::default());
        // Dual-stack listeners see IPv4 peers as mapped addresses.
        assert!(loopback.trusts(ip("::ffff:127.0.0.1")));
        assert!(!loopback.trusts(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn the_client_is_the_last_hop_no_trusted_proxy_wrote() {
        let proxies = Proxies::list(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let of = |h: &[(&'static str, &str)]| client_of("127.0.0.1", h, &proxies).address;
        assert_eq!(
            of(&[("x-forwarded-for", "1.2.3.4, 198.51.100.1, 10.1.2.3")]),
            Some(ip("198.51.100.1"))
        );
        // Several header lines are one list.
        assert_eq!(
            of(&[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "198.51.100.2")
            ]),
            Some(ip("198.51.100.2"))
        );
        assert_eq!(
            of(&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")]),
            Some(ip("10.0.0.1")),
            "all trusted: the first"
        );
        assert_eq!(
            of(&[("x-real-ip", "198.51.100.3")]),
            Some(ip("198.51.100.3"))
        );
        assert_eq!(
            of(&[(
                "forwarded",
                "for=1.2.3.4, for=\"[2001:db8::7]:4711\";proto=https"
            )]),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            of(&[("x-forwarded-for", "[2001:db8::1]:80")]),
            Some(ip("2001:db8::1"))
        );
        // Garbage where the client should be names no one.
        assert_eq!(of(&[("x-forwarded-for", "nonsense")]), None);
    }

    #[test]
    fn proxy_lists() {
        let p = Proxies::list(&["", " 10.0.0.0/8 ", "::1", "fd00::/8"]).unwrap();
        assert!(p.trusts(ip("10.255.0.1")));
        assert!(!p.trusts(ip("11.0.0.1")));
        assert!(p.trusts(ip("fd12::1")));
        assert!(!p.trusts(ip("fe80::1")));
        assert_eq!(Proxies::list(&["", " "]).unwrap(), Proxies::none());
        assert_eq!(Proxies::list(&["loopback"]).unwrap(), Proxies::loopback());
        for bad in ["localhost", "10.0.0.0/33", "::/129", "1.2.3.4/x"] {
            assert!(Proxies::list(&[bad]).is_err(), "{bad}");
        }
        assert!(Proxies::list(&["0.0.0.0/0"]).unwrap().trusts(ip("8.8.8.8")));
    }

    fn options(per_connection: usize, rate: Option<Rate>) -> Options {
        Options {
            max_sessions_per_connection: per_connection,
            sessions_per_address: rate,
            ..Options::default()
        }
    }

    #[test]
    fn a_connection_holds_its_bound_until_its_sessions_are_forgotten() {
        let options = options(2, None);
        let mut a = Admission::default();
        let now = Instant::now();
        let one = Client {
            connection: Some(1),
            address: Some(ip("192.0.2.1")),
        };
        let other = Client {
            connection: Some(2),
            ..one
        };
        assert_eq!(a.admit(&one, &options, true, now), Ok(()));
        assert_eq!(a.admit(&one, &options, true, now), Ok(()));
        assert_eq!(a.admit(&one, &options, true, now), Err(Refused::Connection));
        assert_eq!(a.admit(&other, &options, true, now), Ok(()));
        assert_eq!(a.admit(&one, &options, false, now), Ok(()), "a WebSocket");
        a.release(1);
        assert_eq!(a.admit(&one, &options, true, now), Ok(()));
        a.release(1);
        a.release(1);
        a.release(2);
        assert_eq!(
            a.connections(),
            0,
            "nothing kept for connections without sessions"
        );
        // Behind a trusted proxy there is no connection to count.
        let proxied = Client {
            connection: None,
            ..one
        };
        for _ in 0..10 {
            assert_eq!(a.admit(&proxied, &options, true, now), Ok(()));
        }
    }

    #[test]
    fn an_address_opens_its_burst_then_at_its_rate() {
        let rate = Rate {
            per_second: 10,
            burst: 5,
        };
        let options = options(usize::MAX, Some(rate));
        let mut a = Admission::default();
        let start = Instant::now();
        let client = |s: &str| Client {
            connection: None,
            address: Some(ip(s)),
        };
        for _ in 0..5 {
            assert_eq!(a.admit(&client("192.0.2.1"), &options, true, start), Ok(()));
        }
        let refused = a.admit(&client("192.0.2.1"), &options, true, start);
        assert_eq!(refused, Err(Refused::Address(ip("192.0.2.1"))));
        assert_eq!(a.admit(&client("192.0.2.2"), &options, true, start), Ok(()));
        let later = start + Duration::from_millis(100);
        assert_eq!(a.admit(&client("192.0.2.1"), &options, true, later), Ok(()));
        assert!(a
            .admit(&client("192.0.2.1"), &options, true, later)
            .is_err());
        // One IPv6 /64 is one client.
        for i in 0..5 {
            let c = client(&format!("2001:db8:0:1::{i}"));
            assert_eq!(a.admit(&c, &options, true, start), Ok(()));
        }
        assert!(a
            .admit(&client("2001:db8:0:1::ff"), &options, true, start)
            .is_err());
        assert_eq!(
            a.admit(&client("2001:db8:0:2::1"), &options, true, start),
            Ok(())
        );
        // No bound without a rate, or at rate 0.
        let off = options_off();
        for _ in 0..100 {
            assert_eq!(a.admit(&client("192.0.2.1"), &off, true, start), Ok(()));
        }
    }

    fn options_off() -> Options {
        options(
            usize::MAX,
            Some(Rate {
                per_second: 0,
                burst: 1,
            }),
        )
    }

    #[test]
    fn addresses_whose_allowance_grew_back_are_forgotten() {
        let rate = Rate {
            per_second: 1000,
            burst: 1000,
        };
        let options = options(usize::MAX, Some(rate));
        let mut a = Admission::default();
        let start = Instant::now();
        for i in 0..5000u32 {
            let c = Client {
                connection: None,
                address: Some(IpAddr::from(std::net::Ipv4Addr::from(0xC000_0000u32 + i))),
            };
            // A second later each address's allowance is whole again.
            let at = start + Duration::from_secs(u64::from(i / 1000));
            assert_eq!(a.admit(&c, &options, true, at), Ok(()));
        }
        assert!(a.addresses() <= 2 * 1024 + 1000, "{} kept", a.addresses());
    }
}
