//! The worker kinds this binary runs, one subcommand each.

pub mod echo;
pub mod replicate;

/// What a process runs besides the relay, the scheduler and the control listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The echo handler on its jobs consumer and its `artifact.pushed` consumer.
    Echo,
    /// Replication: event-based, manual and scheduled copies to and from remote
    /// registries.
    Replicate,
    /// No consumer: the outbox relay and the scheduler only.
    Relay,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Echo, Kind::Replicate, Kind::Relay];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The subcommand, and the kind recorded in `worker_processes`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => echo::KIND,
            Kind::Replicate => replicate::KIND,
            Kind::Relay => "relay",
        }
    }

    /// One line for the usage text.
    pub fn about(self) -> &'static str {
        match self {
            Kind::Echo => "echo tasks and echo's reactions to pushed artifacts (tests, benchmark)",
            Kind::Replicate => {
                "replication to and from remote registries (event-based, manual, scheduled)"
            }
            Kind::Relay => "the outbox relay and the scheduler only, no consumer",
        }
    }

    /// Whether it consumes jobs (and so has a concurrency in the pools API).
    pub fn runs_jobs(self) -> bool {
        matches!(self, Kind::Echo | Kind::Replicate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
        assert_eq!(Kind::parse("scan"), None);
    }
}
