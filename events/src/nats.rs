//! Connecting to NATS: one client per process, which reconnects by itself; a process
//! starts even when NATS is down (the relay then waits and the registry keeps serving).

use std::time::Duration;

/// The longest wait between two reconnect attempts. Short on purpose: when NATS comes
/// back, events and jobs should flow again within about a second, and a reconnect
/// attempt against a local or in-cluster server costs next to nothing.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The wait before reconnect attempt `attempts`: 100 ms more per attempt, capped.
fn reconnect_delay(attempts: usize) -> Duration {
    let millis = u64::try_from(attempts)
        .unwrap_or(u64::MAX)
        .saturating_mul(100);
    Duration::from_millis(millis).min(MAX_RECONNECT_DELAY)
}

/// Connects to `url` as `name` (shown in NATS monitoring). Returns at once; the client
/// connects in the background and buffers until it does.
pub async fn connect(
    url: &str,
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(name)
        // Without this, `connect` fails when NATS is down, and a process that cannot
        // start is worse than one whose events wait.
        .retry_on_initial_connect()
        // Never give up: a worker or gateway outlives any NATS outage.
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                async_nats::Event::Connected | async_nats::Event::Closed => {
                    tracing::info!(event = %event, "NATS")
                }
                other => tracing::warn!(event = %other, "NATS"),
            }
        })
        .connect(url)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_then_stays_short() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::from_millis(100));
        assert_eq!(reconnect_delay(5), Duration::from_millis(500));
        assert_eq!(reconnect_delay(10), MAX_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(usize::MAX), MAX_RECONNECT_DELAY);
    }
}
