//! Where a replicated repository lands: Harbor's destination namespace and flattening
//! (`replaceNamespace` in `src/controller/replication/flow/stage.go`), rule for rule.
//!
//! The source repository's path components are all but the last (its namespace) and
//! the last (its name, always kept). With a destination namespace `ns`, the replace
//! count says how many leading namespace components `ns` replaces:
//!
//! | source `library/a/b/c`, `dest_namespace` = `ns` | destination |
//! |---|---|
//! | count −1 (or any negative: Harbor's default, "legacy mode") | `ns/c`: the whole namespace is replaced |
//! | count 0 | `ns/library/a/b/c`: `ns` is prefixed, nothing replaced |
//! | count 1 | `ns/a/b/c` |
//! | count 2 | `ns/b/c` |
//! | count 3 | `ns/c` |
//! | count 4 | an error: the source has only 3 namespace components |
//!
//! Without a destination namespace (empty) the name is kept as it is, whatever the
//! count. A single-component source `c` gives `ns/c` for counts −1 and 0 and fails for
//! 1 or more. Some destinations constrain the result's depth (Docker Hub takes exactly
//! two components, Harbor at least two): [`PathComponents`].

/// What path depth the destination registry accepts (Harbor's adapter info
/// `SupportedRepositoryPathComponentType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathComponents {
    /// Any depth (a plain distribution registry, Berth).
    #[default]
    Any,
    /// Exactly `namespace/name` (Docker Hub).
    OnlyTwo,
    /// At least `project/name` (Harbor).
    AtLeastTwo,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("the source repository {repository:?} contains only {available} path components {components:?} excepting the last one, but the destination namespace flattening level is {replace_count}")]
    ReplaceCountTooLarge {
        repository: String,
        available: usize,
        components: Vec<String>,
        replace_count: i32,
    },
    #[error("the destination repository {repository:?} contains {depth} path components, but the destination registry only supports 2")]
    NotTwoComponents { repository: String, depth: usize },
    #[error("the destination repository {repository:?} contains only {depth} path components, but the destination registry requires at least 2")]
    FewerThanTwoComponents { repository: String, depth: usize },
}

/// The destination name of `repository` under `dest_namespace` and `replace_count`,
/// checked against what the destination accepts. See the module docs for the rules.
pub fn destination_repository(
    repository: &str,
    dest_namespace: &str,
    replace_count: i32,
    accepts: PathComponents,
) -> Result<String, NamingError> {
    if dest_namespace.is_empty() {
        // Harbor returns the name before it checks the destination's depth.
        return Ok(repository.to_owned());
    }
    let components: Vec<&str> = repository.split('/').collect();
    let (name, namespace) = match components.split_last() {
        Some((name, namespace)) => (*name, namespace),
        None => (repository, &[][..]),
    };
    let kept: &[&str] = if replace_count < 0 {
        &[]
    } else {
        let count = usize::try_from(replace_count).unwrap_or(usize::MAX);
        if count > namespace.len() {
            return Err(NamingError::ReplaceCountTooLarge {
                repository: repository.to_owned(),
                available: namespace.len(),
                components: namespace.iter().map(|c| (*c).to_owned()).collect(),
                replace_count,
            });
        }
        &namespace[count..]
    };
    // Go's path.Join, which also drops the empty pieces an empty remainder leaves.
    let joined: Vec<&str> = dest_namespace
        .split('/')
        .chain(kept.iter().copied())
        .chain(std::iter::once(name))
        .filter(|c| !c.is_empty())
        .collect();
    let result = joined.join("/");
    let depth = joined.len();
    match accepts {
        PathComponents::OnlyTwo if depth != 2 => Err(NamingError::NotTwoComponents {
            repository: result,
            depth,
        }),
        PathComponents::AtLeastTwo if depth < 2 => Err(NamingError::FewerThanTwoComponents {
            repository: result,
            depth,
        }),
        _ => Ok(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(repository: &str, namespace: &str, count: i32) -> Result<String, NamingError> {
        destination_repository(repository, namespace, count, PathComponents::Any)
    }

    #[test]
    fn the_documented_table() {
        let repo = "library/a/b/c";
        assert_eq!(dest(repo, "ns", -1).unwrap(), "ns/c");
        assert_eq!(dest(repo, "ns", -7).unwrap(), "ns/c");
        assert_eq!(dest(repo, "ns", 0).unwrap(), "ns/library/a/b/c");
        assert_eq!(dest(repo, "ns", 1).unwrap(), "ns/a/b/c");
        assert_eq!(dest(repo, "ns", 2).unwrap(), "ns/b/c");
        assert_eq!(dest(repo, "ns", 3).unwrap(), "ns/c");
        let err = dest(repo, "ns", 4).unwrap_err();
        assert_eq!(
            err,
            NamingError::ReplaceCountTooLarge {
                repository: repo.to_owned(),
                available: 3,
                components: vec!["library".into(), "a".into(), "b".into()],
                replace_count: 4,
            }
        );
    }

    #[test]
    fn harbor_stage_test_cases() {
        // src/controller/replication/flow/stage_test.go, TestReplaceNamespace.
        assert_eq!(dest("c", "", 0).unwrap(), "c");
        assert_eq!(dest("c", "n", -1).unwrap(), "n/c");
        assert_eq!(dest("b/c", "n", -1).unwrap(), "n/c");
        assert_eq!(dest("a/b/c", "n", -1).unwrap(), "n/c");
        assert!(dest("a/b", "n", 2).is_err());
        assert_eq!(dest("a/b/c", "n", 0).unwrap(), "n/a/b/c");
        assert_eq!(dest("a/b/c", "n", 1).unwrap(), "n/b/c");
        assert_eq!(dest("a/b/c", "n", 2).unwrap(), "n/c");
        assert!(destination_repository("a/b/c", "n", 1, PathComponents::OnlyTwo).is_err());
        assert_eq!(dest("a", "n", 0).unwrap(), "n/a");
    }

    #[test]
    fn no_namespace_keeps_the_name_whatever_the_count() {
        assert_eq!(dest("library/a/b/c", "", 9).unwrap(), "library/a/b/c");
        assert_eq!(dest("library/app", "", -1).unwrap(), "library/app");
        // Even when the destination would refuse its depth: Harbor checks only
        // rewritten names.
        assert_eq!(
            destination_repository("app", "", 0, PathComponents::AtLeastTwo).unwrap(),
            "app"
        );
    }

    #[test]
    fn nested_destination_namespaces() {
        assert_eq!(
            dest("library/a/b", "mirror/hub", 1).unwrap(),
            "mirror/hub/a/b"
        );
        assert_eq!(
            dest("library/a/b", "mirror/hub", -1).unwrap(),
            "mirror/hub/b"
        );
        assert!(dest("c", "n", 1).is_err());
    }

    #[test]
    fn destination_depth_limits() {
        let only_two = |r, n, c| destination_repository(r, n, c, PathComponents::OnlyTwo);
        assert_eq!(only_two("library/a/b", "ns", -1).unwrap(), "ns/b");
        assert_eq!(only_two("library/a/b", "ns", 2).unwrap(), "ns/b");
        assert!(matches!(
            only_two("library/a/b", "ns", 1),
            Err(NamingError::NotTwoComponents { depth: 3, .. })
        ));
        let at_least_two = |r, n, c| destination_repository(r, n, c, PathComponents::AtLeastTwo);
        assert_eq!(at_least_two("a/b/c", "ns", 0).unwrap(), "ns/a/b/c");
        assert_eq!(at_least_two("c", "ns", 0).unwrap(), "ns/c");
    }
}
