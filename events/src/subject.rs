//! NATS subjects of events: `berth.events.<noun>.<verb>.<project>.<rest of the
//! repository>`, so a consumer filters by kind (`berth.events.artifact.pushed.>`), by
//! project (`berth.events.*.*.team.>`) or by repository.
//!
//! Repository name components may contain `.`, which separates subject tokens; it is
//! written as `%2E` (`%` never occurs in a repository name, so this is reversible).

use crate::kind::Event;

/// Prefix of every domain event subject; the events stream captures `berth.events.>`.
pub const EVENTS_PREFIX: &str = "berth.events";

/// The subject an event is published on.
pub fn for_event(event: &Event) -> String {
    // `io.berth.artifact.pushed.v1` → `artifact.pushed`
    let kind = event
        .type_name()
        .trim_start_matches("io.berth.")
        .rsplit_once('.')
        .map(|(kind, _version)| kind)
        .unwrap_or("unknown");
    let mut subject = format!("{EVENTS_PREFIX}.{kind}");
    for component in event.artifact().repository.split('/') {
        subject.push('.');
        subject.push_str(&escape_token(component));
    }
    subject
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
    fn subject_tokens_never_contain_separators_or_wildcards() {
        let subject = for_event(&pushed("a.b/c-d/e_f.g"));
        for token in subject.split('.') {
            assert!(!token.is_empty());
            assert!(!token.contains(['*', '>', ' ']), "{token}");
        }
    }
}
