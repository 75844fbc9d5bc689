//! Throttling of failed logins, per username and per client address.
//!
//! Each failure spends one cell of a GCRA bucket (governor) for the username and one for
//! the address. When either bucket is empty, every login for that username or from that
//! address is refused — the right password too, or guessing would still pay — until the
//! bucket has a cell again: seconds, not the hours of an account lockout. Successful
//! logins spend nothing. State is per process; with N gateway replicas an attacker gets
//! at most N times the budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failures allowed in a burst before the next one is refused.
    pub burst: u32,
    /// How fast the budget refills: one failure per this period.
    pub refill_every: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            burst: 10,
            refill_every: Duration::from_secs(6),
        }
    }
}

/// Why a login is refused before its credentials are even looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When the caller may try again.
    pub retry_after: Duration,
}

pub struct LoginLimiter {
    by_user: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    /// Until when each key stays refused after its bucket ran dry. Governor answers
    /// only "may I spend a cell", so the refusal window is remembered here.
    blocked_users: Mutex<HashMap<String, Instant>>,
    blocked_addresses: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        let burst = NonZeroU32::new(limits.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = limits.refill_every.max(Duration::from_millis(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        LoginLimiter {
            by_user: RateLimiter::keyed(quota),
            by_address: RateLimiter::keyed(quota),
            blocked_users: Mutex::new(HashMap::new()),
            blocked_addresses: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Whether a login for `username` from `address` may be attempted now.
    pub fn check(&self, username: &str, address: IpAddr) -> Result<(), Throttled> {
        let now = Instant::now();
        let wait_user = remaining(&self.blocked_users, username, now);
        let wait_address = remaining(&self.blocked_addresses, &address, now);
        match wait_user.max(wait_address) {
            Some(retry_after) => Err(Throttled { retry_after }),
            None => Ok(()),
        }
    }

    /// Records a failed login; the next [`LoginLimiter::check`] may refuse.
    pub fn record_failure(&self, username: &str, address: IpAddr) {
        let now = Instant::now();
        if let Err(not_until) = self.by_user.check_key(&username.to_owned()) {
            let wait = not_until.wait_time_from(self.clock.now());
            lock(&self.blocked_users).insert(username.to_owned(), now + wait);
        }
        if let Err(not_until) = self.by_address.check_key(&address) {
            let wait = not_until.wait_time_from(self.clock.now());
            lock(&self.blocked_addresses).insert(address, now + wait);
        }
        // Forget keys whose buckets are full again, so memory follows active attackers.
        if self.by_user.len() > 10_000 {
            self.by_user.retain_recent();
            lock(&self.blocked_users).retain(|_, until| *until > now);
        }
        if self.by_address.len() > 10_000 {
            self.by_address.retain_recent();
            lock(&self.blocked_addresses).retain(|_, until| *until > now);
        }
    }
}

fn lock<K, V>(map: &Mutex<HashMap<K, V>>) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
    // A panic while holding the lock leaves a consistent map (inserts are atomic).
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn remaining<K, Q>(map: &Mutex<HashMap<K, Instant>>, key: &Q, now: Instant) -> Option<Duration>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let mut map = lock(map);
    match map.get(key) {
        Some(until) if *until > now => Some(*until - now),
        Some(_) => {
            map.remove(key);
            None
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn engages_after_the_burst_and_releases_after_the_refill() {
        let limiter = LoginLimiter::new(LoginLimits {
            burst: 3,
            refill_every: Duration::from_millis(200),
        });
        for _ in 0..3 {
            assert!(limiter.check("alice", addr(1)).is_ok());
            limiter.record_failure("alice", addr(1));
        }
        // The fourth failure finds the bucket empty: now alice is refused.
        limiter.record_failure("alice", addr(1));
        let refused = limiter.check("alice", addr(1)).unwrap_err();
        assert!(refused.retry_after <= Duration::from_millis(200));
        // Another address is refused for alice too (per-user bucket)…
        assert!(limiter.check("alice", addr(2)).is_err());
        // …and the same address is refused for bob (per-address bucket).
        assert!(limiter.check("bob", addr(1)).is_err());
        // Someone else elsewhere is unaffected.
        assert!(limiter.check("bob", addr(3)).is_ok());
        std::thread::sleep(refused.retry_after + Duration::from_millis(20));
        assert!(limiter.check("alice", addr(1)).is_ok());
    }
}
