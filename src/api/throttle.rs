//! Login throttling that a stranger cannot turn against a user, and the client address it
//! keys on.
//!
//! Three counters of failed logins, each forgotten after [`FORGET`] without failures:
//! - per (user name, address): after `max_failures`, that address is refused for that name
//!   for a lock-out that doubles with each further failure (capped at [`MAX_LOCK`]);
//! - per address, across names (password spraying): after `4 × max_failures`, the address
//!   is refused for every name, with the same doubling;
//! - per user name, across addresses (a distributed guess): after `2 × max_failures`, logins
//!   for that name from addresses it has never logged in from are *delayed* (growing, up to
//!   [`MAX_DELAY`]), never refused; addresses the user logged in from before are not slowed.
//!
//! So five wrong passwords from one address lock out that address only: the user's correct
//! password from anywhere else still works. Every refusal and delay is logged on the
//! `confab::audit` target. All maps are bounded ([`MAX_KEYS`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use ipnet::IpNet;

/// Failures are forgotten this long after the last one (unless a lock-out is running).
const FORGET: Duration = Duration::from_secs(15 * 60);
/// The longest lock-out of an address.
const MAX_LOCK: Duration = Duration::from_secs(3600);
/// The longest delay of a login for a name under attack from an unknown address.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Entries per map.
const MAX_KEYS: usize = 20_000;
/// Known-good addresses remembered per user, and for how long.
const GOOD_PER_USER: usize = 16;
const GOOD_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// What to do with a login attempt before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Check the password after this delay.
    Delay(Duration),
    /// Refuse (429) without checking; retry after this many seconds.
    Refuse(u64),
}

#[derive(Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Strikes {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.last) < FORGET || self.locked_until.is_some_and(|u| u > now)
    }
}

#[derive(Default)]
struct Counters {
    pairs: HashMap<(String, IpAddr), Strikes>,
    addrs: HashMap<IpAddr, Strikes>,
    users: HashMap<String, Strikes>,
    good: HashMap<String, Vec<(IpAddr, Instant)>>,
}

pub struct LoginThrottle {
    max_failures: u32,
    base_lock: Duration,
    counters: Mutex<Counters>,
}

impl LoginThrottle {
    /// `max_failures` per (name, address) before a lock-out of `base_lock_secs`, doubling.
    pub fn new(max_failures: u32, base_lock_secs: u64) -> Self {
        LoginThrottle {
            max_failures: max_failures.max(1),
            base_lock: Duration::from_secs(base_lock_secs.max(1)),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// The verdict for a login of `user` (lower-cased name) from `addr`.
    pub fn check(&self, user: &str, addr: IpAddr) -> Verdict {
        let Ok(c) = self.counters.lock() else {
            return Verdict::Allow;
        };
        let now = Instant::now();
        let locked = |s: Option<&Strikes>| {
            s.and_then(|s| s.locked_until)
                .filter(|&u| u > now)
                .map(|u| u.duration_since(now).as_secs().max(1))
        };
        if let Some(wait) = locked(c.pairs.get(&(user.to_string(), addr))) {
            tracing::info!(target: "confab::audit", user, %addr, wait_secs = wait, "login refused: too many failures for this user from this address");
            return Verdict::Refuse(wait);
        }
        if let Some(wait) = locked(c.addrs.get(&addr)) {
            tracing::info!(target: "confab::audit", user, %addr, wait_secs = wait, "login refused: too many failures from this address");
            return Verdict::Refuse(wait);
        }
        let known = c.good.get(user).is_some_and(|g| {
            g.iter()
                .any(|(a, at)| *a == addr && now.duration_since(*at) < GOOD_FOR)
        });
        if let Some(s) = c.users.get(user).filter(|s| s.live(now)) {
            let threshold = 2 * self.max_failures;
            if s.failures >= threshold && !known {
                // 1 s at the threshold, doubling every `max_failures` further failures.
                let steps = ((s.failures - threshold) / self.max_failures).min(8);
                let delay = (Duration::from_secs(1) * (1u32 << steps)).min(MAX_DELAY);
                tracing::info!(target: "confab::audit", user, %addr, delay_ms = delay.as_millis() as u64, failures = s.failures, "login delayed: this user name is being guessed from many addresses");
                return Verdict::Delay(delay);
            }
        }
        Verdict::Allow
    }

    /// Before checking a password or code of `user` from `addr`: waits out a delay, or
    /// refuses (429). Login, a password change and turning off two-factor authentication
    /// all pass here, and count their failures with [`Self::failed`].
    pub async fn gate(&self, user: &str, addr: IpAddr) -> Result<(), super::ApiError> {
        match self.check(user, addr) {
            Verdict::Allow => Ok(()),
            Verdict::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Verdict::Refuse(wait) => Err(super::ApiError::TooManyRequests(format!(
                "Too many failed logins from your address; try again in {wait} s"
            ))),
        }
    }

    /// A wrong password (or unknown name) for `user` from `addr`.
    pub fn failed(&self, user: &str, addr: IpAddr) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        let now = Instant::now();
        let max = self.max_failures;
        let base = self.base_lock;
        if let Some(lock) = strike(&mut c.pairs, (user.to_string(), addr), now, max, base) {
            tracing::warn!(target: "confab::audit", user, %addr, lock_secs = lock.as_secs(), "login locked for this user from this address after repeated failures");
        }
        if let Some(lock) = strike(&mut c.addrs, addr, now, 4 * max, base) {
            tracing::warn!(target: "confab::audit", %addr, lock_secs = lock.as_secs(), "address locked out of all logins after repeated failures");
        }
        // The per-user counter never locks: it only slows unknown addresses.
        strike(&mut c.users, user.to_string(), now, u32::MAX, base);
    }

    /// A correct password for `user` from `addr`: that pair starts over, and the address
    /// becomes one of the user's known-good ones.
    pub fn succeeded(&self, user: &str, addr: IpAddr) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        let now = Instant::now();
        c.pairs.remove(&(user.to_string(), addr));
        if c.good.len() >= MAX_KEYS && !c.good.contains_key(user) {
            c.good
                .retain(|_, g| g.iter().any(|(_, at)| now.duration_since(*at) < GOOD_FOR));
            if c.good.len() >= MAX_KEYS {
                return;
            }
        }
        let good = c.good.entry(user.to_string()).or_default();
        good.retain(|(a, at)| *a != addr && now.duration_since(*at) < GOOD_FOR);
        if good.len() >= GOOD_PER_USER {
            good.remove(0);
        }
        good.push((addr, now));
    }
}

/// Counts a failure under `key`; starts or extends a lock-out past `threshold` failures
/// and returns its length when it does.
fn strike<K: Hash + Eq + Clone>(
    map: &mut HashMap<K, Strikes>,
    key: K,
    now: Instant,
    threshold: u32,
    base: Duration,
) -> Option<Duration> {
    if map.len() >= MAX_KEYS && !map.contains_key(&key) {
        map.retain(|_, s| s.live(now));
        if map.len() >= MAX_KEYS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
    }
    let s = map.entry(key).or_insert(Strikes {
        failures: 0,
        last: now,
        locked_until: None,
    });
    if !s.live(now) {
        *s = Strikes {
            failures: 0,
            last: now,
            locked_until: None,
        };
    }
    s.failures = s.failures.saturating_add(1);
    s.last = now;
    if s.failures < threshold {
        return None;
    }
    let doublings = (s.failures - threshold).min(12);
    let lock = (base * (1u32 << doublings)).min(MAX_LOCK);
    s.locked_until = Some(now + lock);
    Some(lock)
}

/// The client's address: the TCP peer, or, when the peer is one of the `trusted` proxies,
/// the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    forwarded_client(peer, req.headers().get_all("x-forwarded-for"), trusted)
}

fn forwarded_client<'a>(
    peer: IpAddr,
    headers: impl Iterator<Item = &'a actix_web::http::header::HeaderValue>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| {
        trusted
            .iter()
            .any(|n| n.contains(&crate::canonical_ip(*ip)))
    };
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An unparsable hop ends the walk: what is left of it came from the client.
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(crate::canonical_ip(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| crate::canonical_ip(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_stranger_locks_out_only_their_own_address() {
        let t = LoginThrottle::new(5, 60);
        for _ in 0..5 {
            assert_eq!(t.check("admin", ip("10.0.0.66")), Verdict::Allow);
            t.failed("admin", ip("10.0.0.66"));
        }
        assert!(matches!(t.check("admin", ip("10.0.0.66")), Verdict::Refuse(s) if s >= 59));
        assert_eq!(t.check("admin", ip("10.0.0.7")), Verdict::Allow);
        assert_eq!(t.check("bob", ip("10.0.0.66")), Verdict::Allow);
        // Each further failure doubles the lock-out.
        t.failed("admin", ip("10.0.0.66"));
        assert!(matches!(t.check("admin", ip("10.0.0.66")), Verdict::Refuse(s) if s >= 119));
    }

    #[test]
    fn spraying_many_names_from_one_address_locks_the_address() {
        let t = LoginThrottle::new(5, 60);
        for i in 0..20 {
            t.failed(&format!("user{i}"), ip("10.0.0.66"));
        }
        assert!(matches!(
            t.check("someone", ip("10.0.0.66")),
            Verdict::Refuse(_)
        ));
        assert_eq!(t.check("someone", ip("10.0.0.7")), Verdict::Allow);
    }

    #[test]
    fn a_name_guessed_from_many_addresses_slows_strangers_not_known_addresses() {
        let t = LoginThrottle::new(5, 60);
        t.succeeded("admin", ip("10.0.0.7"));
        for i in 0..10 {
            t.failed("admin", ip(&format!("10.1.0.{i}")));
        }
        assert_eq!(t.check("admin", ip("10.0.0.7")), Verdict::Allow);
        assert_eq!(
            t.check("admin", ip("10.2.0.1")),
            Verdict::Delay(Duration::from_secs(1))
        );
        for i in 10..20 {
            t.failed("admin", ip(&format!("10.1.0.{i}")));
        }
        assert_eq!(
            t.check("admin", ip("10.2.0.1")),
            Verdict::Delay(Duration::from_secs(4))
        );
        assert_eq!(t.check("admin", ip("10.0.0.7")), Verdict::Allow);
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.9.0.0/16".parse().unwrap(),
        ];
        let h = [
            HeaderValue::from_static("203.0.113.9, 198.51.100.4"),
            HeaderValue::from_static("10.9.1.1"),
        ];
        // From a proxy: the right-most untrusted hop.
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), h.iter(), &trusted),
            ip("198.51.100.4")
        );
        // From anyone else: the header is ignored.
        assert_eq!(
            forwarded_client(ip("192.0.2.1"), h.iter(), &trusted),
            ip("192.0.2.1")
        );
        // Junk in the header: the last good hop before it.
        let junk = [HeaderValue::from_static("nonsense, 10.9.3.3")];
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), junk.iter(), &trusted),
            ip("10.9.3.3")
        );
        let v6 = [HeaderValue::from_static("[2001:db8::5]:4431")];
        assert_eq!(
            forwarded_client(ip("::ffff:127.0.0.1"), v6.iter(), &trusted),
            ip("2001:db8::5")
        );
    }
}
