//! Emitting domain events: each one goes into the outbox on the transaction of the
//! change it describes, so it is published if and only if the change committed.

use berth_events::{outbox, Event};
use sqlx::PgConnection;

/// CloudEvents `source` of everything the gateway emits.
pub const SOURCE: &str = "/berth/gateway";

/// Writes `event` to the outbox on `conn`, which must be the change's transaction.
pub async fn emit(conn: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
    outbox::emit(conn, SOURCE, event).await.map(|_| ())
}
