//! What a handler's result means for its message: ack, `nak` after a delay, or give up
//! (terminate and dead-letter). Pure functions, so the policy is tested without NATS.

use std::time::Duration;

use ::backoff::backoff::Backoff;

use super::Failure;
use crate::config::ConsumerConfig;

/// Beyond this many steps every sane multiplier has reached `retry_max_ms`; stepping
/// further would only burn time for a delivery count a server will never reach.
const MAX_STEPS: u64 = 64;

/// What to do with a message once its handler returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Done: ack.
    Ack,
    /// Try again later: `nak` with this delay.
    Retry { delay: Duration, reason: String },
    /// Give up: copy to the dead letters with this reason and terminate.
    GiveUp { reason: String },
}

/// The delivery at which the runtime gives a message up (the server's own limit is one
/// higher, see `streams::consumer_config`).
pub fn max_deliver(config: &ConsumerConfig) -> u64 {
    u64::try_from(config.max_deliver.max(1)).unwrap_or(1)
}

/// The action for `result` of delivery `delivery` (1 on first delivery).
pub fn action_for(result: &Result<(), Failure>, delivery: u64, config: &ConsumerConfig) -> Action {
    match result {
        Ok(()) => Action::Ack,
        Err(Failure::Permanent(reason)) => Action::GiveUp {
            reason: reason.clone(),
        },
        Err(Failure::Transient { reason, .. }) if delivery >= max_deliver(config) => {
            Action::GiveUp {
                reason: format!("gave up after {delivery} deliveries: {reason}"),
            }
        }
        Err(Failure::Transient {
            reason,
            retry_after,
        }) => Action::Retry {
            // The peer knows best when it will take us back (429 Retry-After).
            delay: retry_after.unwrap_or_else(|| retry_delay(config, delivery)),
            reason: reason.clone(),
        },
    }
}

/// How long to wait before redelivering a message whose delivery `delivery` failed:
/// `retry_initial_ms × retry_multiplier^(delivery-1)`, at most `retry_max_ms`, spread
/// by ±`retry_jitter`. Computed from the delivery count alone, so any worker process
/// arrives at the same schedule (the jitter apart) without shared state.
pub fn retry_delay(config: &ConsumerConfig, delivery: u64) -> Duration {
    let max = Duration::from_millis(config.retry_max_ms.max(1));
    let initial = Duration::from_millis(config.retry_initial_ms.max(1)).min(max);
    let mut backoff = ::backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(initial)
        .with_multiplier(config.retry_multiplier.max(1.0))
        .with_randomization_factor(config.retry_jitter.clamp(0.0, 1.0))
        .with_max_interval(max)
        // Elapsed time is measured from `build`, meaningless here: never stop.
        .with_max_elapsed_time(None)
        .build();
    // Each step returns the current interval (jittered) and grows it; the growth
    // itself is not random, so stepping n-1 times puts us at delivery n's interval.
    for _ in 1..delivery.clamp(1, MAX_STEPS) {
        backoff.next_backoff();
    }
    // With no elapsed-time limit `next_backoff` always has an answer.
    let delay = backoff.next_backoff().unwrap_or(max);
    // The jitter may push past the maximum; the maximum is a promise.
    delay.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: f64) -> ConsumerConfig {
        ConsumerConfig {
            max_deliver: 5,
            retry_initial_ms: 1_000,
            retry_multiplier: 2.0,
            retry_max_ms: 10_000,
            retry_jitter: jitter,
            ..ConsumerConfig::default()
        }
    }

    #[test]
    fn delays_grow_by_the_multiplier_then_stop_at_the_maximum() {
        let c = config(0.0);
        let delays: Vec<u64> = (1..=7)
            .map(|n| retry_delay(&c, n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000]);
        // Delivery 0 (never happens) is treated as the first; huge counts stay capped.
        assert_eq!(retry_delay(&c, 0), Duration::from_millis(1_000));
        assert_eq!(retry_delay(&c, u64::MAX), Duration::from_millis(10_000));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let c = config(0.2);
        for delivery in 1..=6u64 {
            let nominal = retry_delay(&config(0.0), delivery).as_millis() as f64;
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let d = retry_delay(&c, delivery).as_millis() as f64;
                assert!(
                    d >= nominal * 0.8 - 1.0,
                    "delivery {delivery}: {d} < {nominal}"
                );
                assert!(
                    d <= (nominal * 1.2 + 1.0).min(10_000.0),
                    "delivery {delivery}: {d}"
                );
                seen.insert(d as u64);
            }
            // It does vary (200 draws from a 400 ms+ wide range).
            assert!(seen.len() > 10, "delivery {delivery}: {seen:?}");
        }
    }

    #[test]
    fn nonsense_settings_still_give_sane_delays() {
        let c = ConsumerConfig {
            retry_initial_ms: 0,
            retry_multiplier: 0.5,
            retry_max_ms: 0,
            retry_jitter: 7.0,
            ..ConsumerConfig::default()
        };
        for n in 1..10 {
            assert!(retry_delay(&c, n) <= Duration::from_millis(1));
        }
    }

    #[test]
    fn results_map_to_actions() {
        let c = config(0.0);
        assert_eq!(action_for(&Ok(()), 1, &c), Action::Ack);
        assert_eq!(action_for(&Ok(()), 9, &c), Action::Ack);
        assert_eq!(
            action_for(&Err(Failure::transient("timeout")), 1, &c),
            Action::Retry {
                delay: Duration::from_millis(1_000),
                reason: "timeout".into()
            }
        );
        assert_eq!(
            action_for(&Err(Failure::transient("timeout")), 3, &c),
            Action::Retry {
                delay: Duration::from_millis(4_000),
                reason: "timeout".into()
            }
        );
        // Retry-After wins over the backoff, even beyond the maximum.
        let told = Failure::Transient {
            reason: "429".into(),
            retry_after: Some(Duration::from_secs(42)),
        };
        assert_eq!(
            action_for(&Err(told.clone()), 2, &c),
            Action::Retry {
                delay: Duration::from_secs(42),
                reason: "429".into()
            }
        );
        // The last allowed delivery gives up, whatever the peer said.
        assert_eq!(
            action_for(&Err(told), 5, &c),
            Action::GiveUp {
                reason: "gave up after 5 deliveries: 429".into()
            }
        );
        assert!(matches!(
            action_for(&Err(Failure::transient("x")), 6, &c),
            Action::GiveUp { .. }
        ));
        // Permanent failures give up at once.
        assert_eq!(
            action_for(&Err(Failure::permanent("bad manifest")), 1, &c),
            Action::GiveUp {
                reason: "bad manifest".into()
            }
        );
    }

    #[test]
    fn max_deliver_is_at_least_one() {
        let c = ConsumerConfig {
            max_deliver: 0,
            ..ConsumerConfig::default()
        };
        assert_eq!(max_deliver(&c), 1);
        assert!(matches!(
            action_for(&Err(Failure::transient("x")), 1, &c),
            Action::GiveUp { .. }
        ));
    }
}
