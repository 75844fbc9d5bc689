//! Deterministic, cheap test data: a wyrand PRNG stream, its SHA-256 digest,
//! and an HTTP body that generates the stream on the fly so a 1 GiB upload
//! needs only one small buffer at a time.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

/// Size of the frames a streamed body yields. Small enough to stay in cache
/// between generating the bytes and copying them into the socket.
pub const FRAME: usize = 256 * 1024;

pub const MIB: u64 = 1024 * 1024;

/// wyrand: one multiply per 8 bytes, several GB/s on one core.
#[derive(Clone, Debug)]
pub struct Prng {
    state: u64,
}

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.state as u128).wrapping_mul((self.state ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Fills `buf` with the next bytes of the stream. The stream is the
    /// concatenation of little-endian u64s, so filling in pieces whose
    /// lengths are multiples of 8 yields the same bytes as one big fill.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rem.len();
            rem.copy_from_slice(&v[..n]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Bytes {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        Bytes::from(v)
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Digest of the first `len` bytes of the stream for `seed`, generated in
/// `FRAME`-sized pieces (the same pieces `PrngBody` sends).
pub fn stream_digest(seed: u64, len: u64) -> String {
    let mut rng = Prng::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; FRAME];
    let mut left = len;
    while left > 0 {
        let n = left.min(FRAME as u64) as usize;
        rng.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        left -= n as u64;
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A request body of exactly `len` bytes of the stream for `seed`.
pub struct PrngBody {
    rng: Prng,
    remaining: u64,
}

impl PrngBody {
    pub fn new(seed: u64, len: u64) -> Self {
        PrngBody {
            rng: Prng::new(seed),
            remaining: len,
        }
    }
}

impl Body for PrngBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(FRAME as u64) as usize;
        let chunk = self.rng.bytes(n);
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn fill_is_piecewise_consistent() {
        let mut a = Prng::new(7);
        let mut whole = vec![0u8; 4096 + 5];
        a.fill(&mut whole);
        let mut b = Prng::new(7);
        let mut pieces = vec![0u8; 4096 + 5];
        let (x, y) = pieces.split_at_mut(1024);
        b.fill(x);
        b.fill(y);
        assert_eq!(whole, pieces);
        assert_ne!(Prng::new(8).bytes(64), Prng::new(7).bytes(64));
    }

    #[tokio::test]
    async fn body_matches_digest() {
        let len = 3 * FRAME as u64 + 13;
        let body = PrngBody::new(42, len);
        assert_eq!(body.size_hint().exact(), Some(len));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len() as u64, len);
        assert_eq!(sha256_digest(&all), stream_digest(42, len));
    }
}
