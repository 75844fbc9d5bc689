//! The transactional outbox: events written in the transaction of their change, for
//! the relay to publish. An event row exists if and only if its change committed.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::kind::Event;
use crate::subject;

/// PostgreSQL `NOTIFY` channel raised by every insert, so the relay publishes within
/// milliseconds instead of waiting for its next poll. Notifications are delivered on
/// commit (and dropped on rollback), like the rows.
pub const NOTIFY_CHANNEL: &str = "berth_outbox";

/// One event to publish.
pub struct OutboxRow<'a> {
    pub event_id: Uuid,
    pub subject: &'a str,
    /// Events with the same key are published in the order they were written.
    pub ordering_key: &'a str,
    pub payload: &'a [u8],
}

/// Writes `event`, emitted by `source` (`/berth/gateway`), to the outbox on `conn`,
/// which must be the transaction of the change the event describes. Returns the
/// event id.
pub async fn emit(
    conn: &mut PgConnection,
    source: &str,
    event: &Event,
) -> Result<Uuid, sqlx::Error> {
    let envelope = Envelope::new(event, source);
    // An envelope of strings and JSON values always serializes.
    let payload = serde_json::to_vec(&envelope).unwrap_or_default();
    insert(
        conn,
        &OutboxRow {
            event_id: envelope.id,
            subject: &subject::for_event(event),
            ordering_key: &event.ordering_key(),
            payload: &payload,
        },
    )
    .await?;
    Ok(envelope.id)
}

/// Writes `row`; call it on the transaction of the change it describes.
pub async fn insert(conn: &mut PgConnection, row: &OutboxRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO outbox (event_id, subject, ordering_key, payload)
           VALUES ($1, $2, $3, $4)"#,
        row.event_id,
        row.subject,
        row.ordering_key,
        row.payload
    )
    .execute(&mut *conn)
    .await?;
    // Several notifications with the same payload in one transaction fold into one.
    sqlx::query!("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
