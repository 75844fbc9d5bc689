//! A replication policy in Harbor's model, and the rules a new or changed one must
//! meet (`Policy.Validate` in `src/controller/replication/model/model.go`, plus the
//! registry checks of `src/controller/replication/policy.go`).
//!
//! [`PolicyInput`] is what a client sent, every field optional as in Harbor's API;
//! [`PolicySpec::parse`] turns it into a [`PolicySpec`] or says why not, so nothing
//! downstream (queries, the worker) checks a policy again.

use chrono::{DateTime, Utc};

use crate::filter::{Filter, Filters};
use crate::ReplicationError;

/// The worker kind replication tasks and schedules run as; a policy's executions and
/// its schedule carry the policy id as `vendor_id`.
pub const JOB_KIND: &str = "replicate";

/// Longest policy name: Harbor's column is `varchar(256)`.
pub const MAX_NAME_LEN: usize = 256;

/// What starts a policy's executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerType {
    /// Only `POST /replication/executions`.
    Manual,
    /// Its cron.
    Scheduled,
    /// Every push (and, with `replicate_deletion`, delete) in scope, as it happens.
    EventBased,
}

impl TriggerType {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerType::Manual => "manual",
            TriggerType::Scheduled => "scheduled",
            TriggerType::EventBased => "event_based",
        }
    }

    pub fn parse(s: &str) -> Option<TriggerType> {
        match s {
            "manual" => Some(TriggerType::Manual),
            "scheduled" => Some(TriggerType::Scheduled),
            "event_based" => Some(TriggerType::EventBased),
            _ => None,
        }
    }
}

/// Harbor's `trigger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub kind: TriggerType,
    /// `trigger_settings.cron` as given; `None` when no settings were given. Checked
    /// (and used) only for scheduled triggers.
    pub cron: Option<String>,
}

/// Which side of the copy is the remote registry; the other is this Berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Push mode: from Berth to `dest_registry_id`.
    Push { dest_registry_id: i64 },
    /// Pull mode: from `src_registry_id` into Berth.
    Pull { src_registry_id: i64 },
}

impl Direction {
    pub fn src_registry_id(self) -> Option<i64> {
        match self {
            Direction::Pull { src_registry_id } => Some(src_registry_id),
            Direction::Push { .. } => None,
        }
    }

    pub fn dest_registry_id(self) -> Option<i64> {
        match self {
            Direction::Push { dest_registry_id } => Some(dest_registry_id),
            Direction::Pull { .. } => None,
        }
    }

    /// The remote registry's id.
    pub fn remote_registry_id(self) -> i64 {
        match self {
            Direction::Push { dest_registry_id } => dest_registry_id,
            Direction::Pull { src_registry_id } => src_registry_id,
        }
    }
}

/// A policy as a client sent it, before any check. `None` is a field the client left
/// out; Harbor treats most of those as the zero value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyInput {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `src_registry.id`; `None` or 0 is this registry (Harbor's local registry id).
    pub src_registry_id: Option<i64>,
    /// `dest_registry.id`; `None` or 0 is this registry.
    pub dest_registry_id: Option<i64>,
    pub dest_namespace: Option<String>,
    /// `None`: −1, Harbor's legacy flattening.
    pub dest_namespace_replace_count: Option<i64>,
    pub trigger: Option<TriggerInput>,
    pub filters: Option<Vec<Filter>>,
    pub replicate_deletion: Option<bool>,
    pub override_existing: Option<bool>,
    pub enabled: Option<bool>,
    /// Kilobits per second; negative or 0 is unlimited.
    pub speed: Option<i64>,
    pub copy_by_chunk: Option<bool>,
}

/// Harbor's `trigger` as sent: `type`, and `trigger_settings.cron` if settings came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerInput {
    pub kind: String,
    pub cron: Option<String>,
}

/// A policy that passed every check: what is stored, and what the worker runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub name: String,
    pub description: String,
    pub direction: Direction,
    /// Where copies land; empty keeps the source name. See [`crate::naming`].
    pub dest_namespace: String,
    /// Harbor's flattening level, −128 to 127 (Harbor's int8); negative is legacy mode.
    pub dest_namespace_replace_count: i32,
    /// `None`: created without a trigger, started by hand only.
    pub trigger: Option<Trigger>,
    /// As given (Harbor returns them as given); checked with [`Filters::parse`].
    pub filters: Vec<Filter>,
    pub replicate_deletion: bool,
    /// Overwrite an existing tag at the destination that points elsewhere.
    pub override_existing: bool,
    pub enabled: bool,
    /// Per-task bandwidth cap in kilobits per second (Harbor's unit: its throttle lets
    /// `speed × 128` bytes through per second); 0 is unlimited.
    pub speed_kbps: i32,
    pub copy_by_chunk: bool,
}

fn invalid(message: impl Into<String>) -> ReplicationError {
    ReplicationError::Invalid(message.into())
}

impl PolicySpec {
    /// Checks `input` in Harbor's order (name, registries, filters, destination
    /// namespace, trigger), with Harbor's messages, then Berth's own limits. It does not
    /// look the remote registry up: the store does, in the same statement as the
    /// write.
    pub fn parse(input: PolicyInput) -> Result<PolicySpec, ReplicationError> {
        let name = input.name.unwrap_or_default();
        if name.is_empty() {
            return Err(invalid("empty name"));
        }
        if name.chars().count() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "the policy name is longer than {MAX_NAME_LEN} characters"
            )));
        }
        // Harbor's local registry is id 0: a policy read back from the API names it,
        // and sending that policy back must work.
        let src = input.src_registry_id.filter(|id| *id != 0);
        let dest = input.dest_registry_id.filter(|id| *id != 0);
        let direction = match (src, dest) {
            (Some(src_registry_id), None) => Direction::Pull { src_registry_id },
            (None, Some(dest_registry_id)) => Direction::Push { dest_registry_id },
            _ => {
                return Err(invalid(
                    "either src_registry or dest_registry should be empty and the other one shouldn't be empty",
                ))
            }
        };
        let filters = input.filters.unwrap_or_default();
        Filters::parse(&filters).map_err(|e| invalid(e.to_string()))?;
        let dest_namespace = input.dest_namespace.unwrap_or_default();
        if !dest_namespace.is_empty()
            && berth_content::name::RepositoryName::parse(&dest_namespace).is_err()
        {
            return Err(invalid(format!(
                "invalid destination namespace: {dest_namespace}"
            )));
        }
        let trigger = input.trigger.map(parse_trigger).transpose()?;
        let dest_namespace_replace_count = match input.dest_namespace_replace_count {
            None => -1,
            Some(count) => i32::try_from(count)
                .ok()
                .filter(|c| (-128..=127).contains(c))
                .ok_or_else(|| {
                    invalid(format!(
                        "dest_namespace_replace_count must be between -128 and 127 (got {count})"
                    ))
                })?,
        };
        // Harbor stores a negative speed as 0 (unlimited).
        let speed_kbps = match input.speed {
            None => 0,
            Some(speed) if speed <= 0 => 0,
            Some(speed) => i32::try_from(speed).map_err(|_| {
                invalid(format!("speed must be at most {} (got {speed})", i32::MAX))
            })?,
        };
        Ok(PolicySpec {
            name,
            description: input.description.unwrap_or_default(),
            direction,
            dest_namespace,
            dest_namespace_replace_count,
            trigger,
            filters,
            replicate_deletion: input.replicate_deletion.unwrap_or(false),
            override_existing: input.override_existing.unwrap_or(false),
            enabled: input.enabled.unwrap_or(false),
            speed_kbps,
            copy_by_chunk: input.copy_by_chunk.unwrap_or(false),
        })
    }

    /// The cron of an enabled scheduled policy: whether it has a schedule.
    pub fn schedule_cron(&self) -> Option<&str> {
        scheduled_cron(self.enabled, self.trigger.as_ref())
    }
}

fn scheduled_cron(enabled: bool, trigger: Option<&Trigger>) -> Option<&str> {
    match trigger {
        Some(Trigger {
            kind: TriggerType::Scheduled,
            cron: Some(cron),
        }) if enabled => Some(cron),
        _ => None,
    }
}

fn parse_trigger(input: TriggerInput) -> Result<Trigger, ReplicationError> {
    let kind = TriggerType::parse(&input.kind).ok_or_else(|| invalid("invalid trigger type"))?;
    if kind == TriggerType::Scheduled {
        let cron = input.cron.as_deref().unwrap_or("");
        if cron.is_empty() {
            return Err(invalid(
                "the cron string cannot be empty when the trigger type is scheduled",
            ));
        }
        let schedule = berth_events::schedules::parse_cron(cron).map_err(|e| {
            invalid(format!(
                "invalid cron string for scheduled trigger: {cron} ({e})"
            ))
        })?;
        if berth_events::schedules::next_after(&schedule, Utc::now()).is_none() {
            return Err(invalid(format!(
                "invalid cron string for scheduled trigger: {cron} (it has no future time)"
            )));
        }
    }
    Ok(Trigger {
        kind,
        cron: input.cron,
    })
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub direction: Direction,
    pub dest_namespace: String,
    pub dest_namespace_replace_count: i32,
    pub trigger: Option<Trigger>,
    pub filters: Vec<Filter>,
    pub replicate_deletion: bool,
    pub override_existing: bool,
    pub enabled: bool,
    pub speed_kbps: i32,
    pub copy_by_chunk: bool,
    /// Who created it.
    pub creator: String,
    pub creation_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl Policy {
    /// The trigger in effect: a policy created without one is started by hand.
    pub fn trigger_type(&self) -> TriggerType {
        self.trigger
            .as_ref()
            .map_or(TriggerType::Manual, |t| t.kind)
    }

    /// The cron of an enabled scheduled policy: whether it has a schedule.
    pub fn schedule_cron(&self) -> Option<&str> {
        scheduled_cron(self.enabled, self.trigger.as_ref())
    }

    /// The checked filters, for matching. Stored filters passed the same check.
    pub fn checked_filters(&self) -> Result<Filters, ReplicationError> {
        Filters::parse(&self.filters).map_err(|e| invalid(e.to_string()))
    }

    /// The per-task bandwidth cap in bytes per second (Harbor: `speed × 1024 / 8`),
    /// `None` for unlimited.
    pub fn bandwidth_bytes_per_second(&self) -> Option<u64> {
        u64::try_from(self.speed_kbps)
            .ok()
            .filter(|kbps| *kbps > 0)
            .map(|kbps| kbps * 128)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn push_input() -> PolicyInput {
        PolicyInput {
            name: Some("to-hub".into()),
            dest_registry_id: Some(4),
            ..PolicyInput::default()
        }
    }

    fn refused(input: PolicyInput) -> String {
        match PolicySpec::parse(input) {
            Err(ReplicationError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_harbor() {
        let spec = PolicySpec::parse(push_input()).unwrap();
        assert_eq!(
            spec.direction,
            Direction::Push {
                dest_registry_id: 4
            }
        );
        assert_eq!(spec.dest_namespace_replace_count, -1);
        assert_eq!(spec.speed_kbps, 0);
        assert!(!spec.enabled && !spec.override_existing && !spec.replicate_deletion);
        assert_eq!(spec.trigger, None);
        assert!(spec.filters.is_empty());
        assert_eq!(spec.schedule_cron(), None);
    }

    #[test]
    fn exactly_one_remote_registry() {
        let message = "either src_registry or dest_registry should be empty and the other one shouldn't be empty";
        assert_eq!(
            refused(PolicyInput {
                dest_registry_id: None,
                ..push_input()
            }),
            message
        );
        assert_eq!(
            refused(PolicyInput {
                src_registry_id: Some(3),
                ..push_input()
            }),
            message
        );
        // The local side read back as id 0 counts as unset.
        let spec = PolicySpec::parse(PolicyInput {
            src_registry_id: Some(0),
            ..push_input()
        })
        .unwrap();
        assert_eq!(
            spec.direction,
            Direction::Push {
                dest_registry_id: 4
            }
        );
        let pull = PolicySpec::parse(PolicyInput {
            src_registry_id: Some(7),
            dest_registry_id: Some(0),
            ..push_input()
        })
        .unwrap();
        assert_eq!(pull.direction, Direction::Pull { src_registry_id: 7 });
        assert_eq!(pull.direction.remote_registry_id(), 7);
        assert_eq!(pull.direction.dest_registry_id(), None);
    }

    #[test]
    fn names_namespaces_counts_and_speeds() {
        assert_eq!(
            refused(PolicyInput {
                name: None,
                ..push_input()
            }),
            "empty name"
        );
        assert!(refused(PolicyInput {
            name: Some("x".repeat(257)),
            ..push_input()
        })
        .contains("longer than 256"));
        assert_eq!(
            refused(PolicyInput {
                dest_namespace: Some("Mirror".into()),
                ..push_input()
            }),
            "invalid destination namespace: Mirror"
        );
        let spec = PolicySpec::parse(PolicyInput {
            dest_namespace: Some("mirror/hub".into()),
            dest_namespace_replace_count: Some(2),
            speed: Some(-1),
            ..push_input()
        })
        .unwrap();
        assert_eq!(spec.dest_namespace, "mirror/hub");
        assert_eq!(spec.dest_namespace_replace_count, 2);
        assert_eq!(spec.speed_kbps, 0);
        assert!(refused(PolicyInput {
            dest_namespace_replace_count: Some(128),
            ..push_input()
        })
        .contains("between -128 and 127"));
        assert!(refused(PolicyInput {
            speed: Some(i64::from(i32::MAX) + 1),
            ..push_input()
        })
        .contains("speed"));
    }

    #[test]
    fn triggers() {
        let with = |kind: &str, cron: Option<&str>| PolicyInput {
            trigger: Some(TriggerInput {
                kind: kind.into(),
                cron: cron.map(str::to_owned),
            }),
            enabled: Some(true),
            ..push_input()
        };
        assert_eq!(refused(with("", None)), "invalid trigger type");
        assert_eq!(refused(with("immediate", None)), "invalid trigger type");
        assert_eq!(
            refused(with("scheduled", None)),
            "the cron string cannot be empty when the trigger type is scheduled"
        );
        assert_eq!(
            refused(with("scheduled", Some(""))),
            "the cron string cannot be empty when the trigger type is scheduled"
        );
        assert!(refused(with("scheduled", Some("every day")))
            .starts_with("invalid cron string for scheduled trigger: every day"));
        assert!(refused(with("scheduled", Some("0 0 0 1 1 * 2001"))).contains("no future time"));
        let scheduled = PolicySpec::parse(with("scheduled", Some("0 0 3 * * *"))).unwrap();
        assert_eq!(scheduled.schedule_cron(), Some("0 0 3 * * *"));
        // Disabled: no schedule.
        let off = PolicySpec::parse(PolicyInput {
            enabled: Some(false),
            ..with("scheduled", Some("0 3 * * *"))
        })
        .unwrap();
        assert_eq!(off.schedule_cron(), None);
        // A cron beside a manual trigger is kept as given and not checked (Harbor).
        let manual = PolicySpec::parse(with("manual", Some(""))).unwrap();
        assert_eq!(
            manual.trigger,
            Some(Trigger {
                kind: TriggerType::Manual,
                cron: Some(String::new())
            })
        );
        assert_eq!(manual.schedule_cron(), None);
        let event = PolicySpec::parse(with("event_based", None)).unwrap();
        assert_eq!(event.trigger.unwrap().kind, TriggerType::EventBased);
    }

    #[test]
    fn filters_are_checked() {
        let message = refused(PolicyInput {
            filters: Some(vec![Filter {
                kind: "label".into(),
                value: json!(["prod"]),
                decoration: String::new(),
            }]),
            ..push_input()
        });
        assert!(message.contains("labels"), "{message}");
        assert_eq!(
            refused(PolicyInput {
                filters: Some(vec![Filter {
                    kind: "repository".into(),
                    value: json!("x"),
                    decoration: String::new(),
                }]),
                ..push_input()
            }),
            "invalid filter type"
        );
    }

    #[test]
    fn bandwidth_in_bytes() {
        let spec = PolicySpec::parse(PolicyInput {
            speed: Some(1024),
            ..push_input()
        })
        .unwrap();
        let policy = Policy {
            id: 1,
            name: spec.name,
            description: spec.description,
            direction: spec.direction,
            dest_namespace: spec.dest_namespace,
            dest_namespace_replace_count: spec.dest_namespace_replace_count,
            trigger: spec.trigger,
            filters: spec.filters,
            replicate_deletion: spec.replicate_deletion,
            override_existing: spec.override_existing,
            enabled: spec.enabled,
            speed_kbps: spec.speed_kbps,
            copy_by_chunk: spec.copy_by_chunk,
            creator: "admin".into(),
            creation_time: Utc::now(),
            update_time: Utc::now(),
        };
        // 1024 kbit/s is 128 KiB/s.
        assert_eq!(policy.bandwidth_bytes_per_second(), Some(131_072));
        assert_eq!(policy.trigger_type(), TriggerType::Manual);
        let unlimited = Policy {
            speed_kbps: 0,
            ..policy
        };
        assert_eq!(unlimited.bandwidth_bytes_per_second(), None);
    }
}
