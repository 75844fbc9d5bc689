//! Harbor's per-task bandwidth cap (`speed`, kilobits per second; see
//! `Policy::bandwidth_bytes_per_second`): a stream wrapper for the blob bodies the
//! replicate worker pulls (`get_blob`'s stream) and pushes (`push_blob`'s body).
//!
//! Each piece is let through once the bytes already sent fit in `rate × elapsed`, so the
//! cumulative total never exceeds `rate × elapsed + one piece`. Large chunks are split
//! (at most 64 KiB, and about an eighth of a second's worth at low rates) so the flow is
//! smooth rather than a burst and a long pause. Time is tokio's, so tests can pause it.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

/// The largest piece let through at once.
pub const MAX_PIECE: usize = 64 * 1024;
/// The smallest split (below it, per-piece overhead dominates).
const MIN_PIECE: usize = 1024;

/// How big the pieces of a stream capped at `bytes_per_second` are.
fn piece_size(bytes_per_second: u64) -> usize {
    let eighth = usize::try_from(bytes_per_second / 8).unwrap_or(MAX_PIECE);
    eighth.clamp(MIN_PIECE, MAX_PIECE)
}

struct State<S> {
    inner: Pin<Box<S>>,
    bytes_per_second: u64,
    piece: usize,
    /// Set when the first piece is asked for: a stream created early and polled later
    /// gets no credit for the wait.
    started: Option<Instant>,
    sent: u64,
    /// The rest of the chunk being split.
    pending: Bytes,
}

/// `stream`, no faster than `bytes_per_second` (0: unlimited, the stream as it is).
/// Errors pass through at once.
pub fn throttle<S, E>(stream: S, bytes_per_second: u64) -> impl Stream<Item = Result<Bytes, E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let state = State {
        inner: Box::pin(stream),
        bytes_per_second,
        piece: piece_size(bytes_per_second),
        started: None,
        sent: 0,
        pending: Bytes::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.bytes_per_second == 0 {
            let item = state.inner.next().await?;
            return Some((item, state));
        }
        let started = *state.started.get_or_insert_with(Instant::now);
        while state.pending.is_empty() {
            match state.inner.next().await? {
                Ok(chunk) => state.pending = chunk,
                Err(e) => return Some((Err(e), state)),
            }
        }
        // `sent` bytes are due at `sent / rate` seconds after the start.
        let due = started
            + std::time::Duration::from_secs_f64(state.sent as f64 / state.bytes_per_second as f64);
        tokio::time::sleep_until(due).await;
        let take = state.piece.min(state.pending.len());
        let piece = state.pending.split_to(take);
        state.sent += piece.len() as u64;
        Some((Ok(piece), state))
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use super::*;

    fn source(chunks: Vec<usize>) -> impl Stream<Item = Result<Bytes, Infallible>> {
        futures::stream::iter(chunks.into_iter().map(|n| Ok(Bytes::from(vec![7u8; n]))))
    }

    /// Drains the stream, checking after every piece that the total stays within
    /// `rate × elapsed + MAX_PIECE`; returns the total and the elapsed time.
    async fn drain<S: Stream<Item = Result<Bytes, Infallible>>>(
        stream: S,
        rate: u64,
    ) -> (u64, Duration, usize) {
        let start = Instant::now();
        let mut stream = std::pin::pin!(stream);
        let (mut total, mut largest) = (0u64, 0usize);
        while let Some(Ok(piece)) = stream.next().await {
            total += piece.len() as u64;
            largest = largest.max(piece.len());
            if rate > 0 {
                let allowed = rate as f64 * start.elapsed().as_secs_f64() + MAX_PIECE as f64;
                assert!(
                    total as f64 <= allowed,
                    "{total} bytes after {:?}",
                    start.elapsed()
                );
            }
        }
        (total, start.elapsed(), largest)
    }

    #[tokio::test(start_paused = true)]
    async fn caps_the_rate_and_splits_large_chunks() {
        // 1 MiB in chunks of 300 KiB and less at 256 KiB/s: about 4 s.
        let rate = 256 * 1024;
        let chunks = vec![300 * 1024, 300 * 1024, 300 * 1024, 124 * 1024, 100];
        let (total, elapsed, largest) = drain(throttle(source(chunks), rate), rate).await;
        assert_eq!(total, 1024 * 1024 + 100);
        assert!(largest <= MAX_PIECE, "{largest}");
        // The last piece goes once everything before it is due: (total − last) / rate.
        assert!(elapsed >= Duration::from_millis(3_750), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(5), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn low_rates_use_small_pieces() {
        // Harbor's speed 8 kbps = 1024 B/s: 1 KiB pieces, 10 KiB in about 9 s.
        let rate = 1024;
        let (total, elapsed, largest) = drain(throttle(source(vec![10 * 1024]), rate), rate).await;
        assert_eq!(total, 10 * 1024);
        assert_eq!(largest, 1024);
        assert!(elapsed >= Duration::from_secs(9), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_unlimited() {
        let (total, elapsed, largest) = drain(throttle(source(vec![1 << 20, 5]), 0), 0).await;
        assert_eq!(total, (1 << 20) + 5);
        assert_eq!(largest, 1 << 20);
        assert_eq!(elapsed, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_pass_through() {
        let items: Vec<Result<Bytes, &str>> = vec![Ok(Bytes::from_static(b"ab")), Err("boom")];
        let mut stream = std::pin::pin!(throttle(futures::stream::iter(items), 1));
        assert_eq!(stream.next().await, Some(Ok(Bytes::from_static(b"ab"))));
        assert_eq!(stream.next().await, Some(Err("boom")));
        assert_eq!(stream.next().await, None);
    }
}
