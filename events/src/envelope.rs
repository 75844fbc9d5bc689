//! The CloudEvents 1.0 JSON envelope (structured mode): what is stored in the outbox
//! and published to JetStream, byte for byte.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::kind::{Event, KindError};

pub const SPEC_VERSION: &str = "1.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// Unique per event; also the JetStream `Nats-Msg-Id`, so a republished outbox row
    /// is dropped by the server's de-duplication.
    pub id: Uuid,
    /// The component that emitted the event, e.g. `/berth/gateway`.
    pub source: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub time: DateTime<Utc>,
    /// What the event is about, for humans and filters: `team/app@sha256:…`.
    pub subject: String,
    pub datacontenttype: String,
    pub data: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a CloudEvents JSON envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported CloudEvents specversion {0:?}")]
    SpecVersion(String),
    #[error(transparent)]
    Kind(#[from] KindError),
}

impl Envelope {
    /// A new envelope for `event`, with a fresh id and the current time.
    pub fn new(event: &Event, source: &str) -> Envelope {
        Envelope {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::new_v4(),
            source: source.to_owned(),
            type_name: event.type_name().to_owned(),
            time: Utc::now(),
            subject: event.about(),
            datacontenttype: "application/json".to_owned(),
            data: event.data(),
        }
    }

    /// Parses published bytes; anything that is not a 1.0 envelope is an error (the
    /// consumer dead-letters it rather than crash).
    pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let envelope: Envelope = serde_json::from_slice(bytes)?;
        if envelope.specversion != SPEC_VERSION {
            return Err(EnvelopeError::SpecVersion(envelope.specversion));
        }
        Ok(envelope)
    }

    /// The typed event inside.
    pub fn event(&self) -> Result<Event, EnvelopeError> {
        Ok(Event::from_parts(&self.type_name, self.data.clone())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::ArtifactRef;

    #[test]
    fn envelopes_round_trip_as_cloudevents_json() {
        let event = Event::ArtifactDeleted {
            artifact: ArtifactRef {
                project: "team".into(),
                repository: "team/app".into(),
                digest: "sha256:abc".into(),
            },
            actor: "alice".into(),
        };
        let envelope = Envelope::new(&event, "/berth/gateway");
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "io.berth.artifact.deleted.v1");
        assert_eq!(json["subject"], "team/app@sha256:abc");
        assert_eq!(json["data"]["repository"], "team/app");
        let back = Envelope::parse(&serde_json::to_vec(&envelope).unwrap()).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(back.event().unwrap(), event);
    }

    #[test]
    fn malformed_envelopes_are_errors_not_panics() {
        assert!(Envelope::parse(b"not json").is_err());
        assert!(Envelope::parse(b"{}").is_err());
        let mut envelope = serde_json::to_value(Envelope::new(
            &Event::TagDeleted {
                artifact: ArtifactRef {
                    project: "p".into(),
                    repository: "p/r".into(),
                    digest: "sha256:1".into(),
                },
                tag: "t".into(),
                actor: "a".into(),
            },
            "/x",
        ))
        .unwrap();
        envelope["specversion"] = "0.3".into();
        assert!(matches!(
            Envelope::parse(&serde_json::to_vec(&envelope).unwrap()),
            Err(EnvelopeError::SpecVersion(_))
        ));
        envelope["specversion"] = "1.0".into();
        envelope["type"] = "io.berth.unknown.v9".into();
        let parsed = Envelope::parse(&serde_json::to_vec(&envelope).unwrap()).unwrap();
        assert!(parsed.event().is_err());
    }
}
