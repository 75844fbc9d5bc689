//! NATS subjects of events: `berth.events.<noun>.<verb>.<project>.<rest of the
//! repository>`, so a consumer filters by kind (`berth.events.artifact.pushed.>`), by
//! project (`berth.events.*.*.team.>`) or by repository.
//!
//! Repository name components may contain `.`, which separates subject tokens; it is
//! written as `%2E` (`%` never occurs in a repository name, so this is reversible).

use crate::kind::Event;

/// Prefix of every domain event subject; the events stream captures `berth.events.>`.
pub const EVENTS_PREFIX: &str = "berth.events";
/// Prefix of job subjects, `berth.jobs.<kind>.<destination>`; the jobs stream (work
/// queue) captures `berth.jobs.>`.
pub const JOBS_PREFIX: &str = "berth.jobs";
/// Prefix of dead letters, `berth.dead.<consumer>`; the dead-letter stream captures
/// `berth.dead.>`.
pub const DEAD_PREFIX: &str = "berth.dead";
/// Core NATS (not JetStream) subject of control messages: cancellations and queue
/// pause/resume. Every worker subscribes; a lost message is caught by polling.
pub const CONTROL_SUBJECT: &str = "berth.control";

/// The subject an event is published on.
pub fn for_event(event: &Event) -> String {
    match event {
        Event::JobRequested { job } => for_job(&job.kind, &job.destination),
        Event::JobCancelled { kind, .. } => {
            format!("{EVENTS_PREFIX}.job.cancelled.{}", escape_token(kind))
        }
        other => {
            // `io.berth.artifact.pushed.v1` → `artifact.pushed`
            let kind = other
                .type_name()
                .trim_start_matches("io.berth.")
                .rsplit_once('.')
                .map(|(kind, _version)| kind)
                .unwrap_or("unknown");
            let mut subject = format!("{EVENTS_PREFIX}.{kind}");
            let repository = other.artifact().map(|a| a.repository.as_str());
            for component in repository.unwrap_or("unknown").split('/') {
                subject.push('.');
                subject.push_str(&escape_token(component));
            }
            subject
        }
    }
}

/// The subject of a task of worker kind `kind` bound for `destination`.
pub fn for_job(kind: &str, destination: &str) -> String {
    format!(
        "{JOBS_PREFIX}.{}.{}",
        escape_token(kind),
        escape_token(destination)
    )
}

/// Every job subject of worker kind `kind` (a consumer's filter).
pub fn jobs_of_kind(kind: &str) -> String {
    format!("{JOBS_PREFIX}.{}.>", escape_token(kind))
}

/// The dead-letter subject of messages given up by consumer `consumer`.
pub fn dead_letter(consumer: &str) -> String {
    format!("{DEAD_PREFIX}.{}", escape_token(consumer))
}

/// A repository name component as one subject token.
pub fn escape_token(component: &str) -> String {
    component.replace('.', "%2E")
}

/// The repository name component a token stands for.
pub fn unescape_token(token: &str) -> String {
    token.replace("%2E", ".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::ArtifactRef;

    fn pushed(repository: &str) -> Event {
        Event::ArtifactPushed {
            artifact: ArtifactRef {
                project: repository.split('/').next().unwrap_or_default().into(),
                repository: repository.into(),
                digest: "sha256:abc".into(),
            },
            media_type: "m".into(),
            tag: None,
            actor: "a".into(),
        }
    }

    #[test]
    fn subjects_carry_kind_project_and_repository() {
        assert_eq!(
            for_event(&pushed("team/app/web")),
            "berth.events.artifact.pushed.team.app.web"
        );
        assert_eq!(
            for_event(&pushed("my.team/app.v2")),
            "berth.events.artifact.pushed.my%2Eteam.app%2Ev2"
        );
        assert_eq!(unescape_token("my%2Eteam"), "my.team");
    }

    #[test]
    fn job_subjects_carry_kind_and_destination() {
        let job = Event::JobRequested {
            job: crate::kind::JobRef {
                execution_id: 1,
                task_id: 2,
                kind: "replicate".into(),
                destination: "hub.docker.io".into(),
            },
        };
        assert_eq!(for_event(&job), "berth.jobs.replicate.hub%2Edocker%2Eio");
        assert_eq!(jobs_of_kind("echo"), "berth.jobs.echo.>");
        assert_eq!(dead_letter("echo"), "berth.dead.echo");
    }

    #[test]
    fn subject_tokens_never_contain_separators_or_wildcards() {
        let subject = for_event(&pushed("a.b/c-d/e_f.g"));
        for token in subject.split('.') {
            assert!(!token.is_empty());
            assert!(!token.contains(['*', '>', ' ']), "{token}");
        }
    }
}
