//! Copies a message the runtime gives up on to the dead-letter stream, with why, from
//! where and after how many deliveries in headers, before it is terminated: poison
//! input leaves the queue but not the record.

use async_nats::jetstream;
use async_nats::HeaderMap;

use crate::subject;

/// Why the message was given up (the handler's reason, or the parse error).
pub const HEADER_REASON: &str = "Berth-Dead-Reason";
/// The durable consumer that gave up.
pub const HEADER_CONSUMER: &str = "Berth-Dead-Consumer";
/// The subject the message was originally published on.
pub const HEADER_SUBJECT: &str = "Berth-Dead-Subject";
/// Its sequence in its original stream.
pub const HEADER_STREAM_SEQUENCE: &str = "Berth-Dead-Stream-Sequence";
/// How many times it was delivered.
pub const HEADER_DELIVERIES: &str = "Berth-Dead-Deliveries";

/// Reasons are free text from handlers; a header line has a practical size limit.
const MAX_REASON_BYTES: usize = 1024;

/// Where a message came from, as the runtime saw it.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub stream: &'a str,
    pub consumer: &'a str,
    pub subject: &'a str,
    pub stream_sequence: u64,
    pub deliveries: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("dead letter not stored: {0}")]
pub struct DeadLetterError(String);

/// Publishes `payload` to `berth.dead.<consumer>` and waits for the stream's ack. Its
/// message id names the original message, so giving the same message up twice (when
/// the terminate after this was lost) stores it once.
pub async fn publish(
    js: &jetstream::Context,
    origin: &Origin<'_>,
    reason: &str,
    payload: bytes::Bytes,
) -> Result<(), DeadLetterError> {
    let headers = headers(origin, reason);
    let ack = js
        .publish_with_headers(subject::dead_letter(origin.consumer), headers, payload)
        .await
        .map_err(|e| DeadLetterError(e.to_string()))?;
    ack.await.map_err(|e| DeadLetterError(e.to_string()))?;
    Ok(())
}

fn headers(origin: &Origin<'_>, reason: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REASON, header_text(reason));
    headers.insert(HEADER_CONSUMER, header_text(origin.consumer));
    headers.insert(HEADER_SUBJECT, header_text(origin.subject));
    headers.insert(HEADER_STREAM_SEQUENCE, origin.stream_sequence.to_string());
    headers.insert(HEADER_DELIVERIES, origin.deliveries.to_string());
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!(
            "{}:{}:{}",
            origin.stream, origin.consumer, origin.stream_sequence
        ),
    );
    headers
}

/// `text` as one header value: line breaks (which would end the header block) and
/// other control characters become spaces, and it is cut at a character boundary.
pub fn header_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REASON_BYTES));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_one_bounded_line() {
        assert_eq!(header_text("a\r\nb\tc"), "a  b c");
        let long = "é".repeat(2_000);
        let cut = header_text(&long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn headers_name_the_origin() {
        let origin = Origin {
            stream: "BERTH_JOBS",
            consumer: "echo",
            subject: "berth.jobs.echo.default",
            stream_sequence: 12,
            deliveries: 5,
        };
        let h = headers(&origin, "boom\nbang");
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get(HEADER_REASON).as_deref(), Some("boom bang"));
        assert_eq!(get(HEADER_CONSUMER).as_deref(), Some("echo"));
        assert_eq!(
            get(HEADER_SUBJECT).as_deref(),
            Some("berth.jobs.echo.default")
        );
        assert_eq!(get(HEADER_STREAM_SEQUENCE).as_deref(), Some("12"));
        assert_eq!(get(HEADER_DELIVERIES).as_deref(), Some("5"));
        let id = h.get(async_nats::header::NATS_MESSAGE_ID);
        assert_eq!(id.map(|v| v.as_str()), Some("BERTH_JOBS:echo:12"));
    }
}
