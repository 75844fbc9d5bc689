//! Docker registry token scopes (`repository:team-a/app:pull,push`) and the `access`
//! claim a token carries.

use serde::{Deserialize, Serialize};

/// One requested scope: `type:name:actions`. The name may itself contain `:` (a
/// registry host with a port), so it is everything between the first and last colon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses one scope; `None` when it does not have the `type:name:actions` shape.
    pub fn parse(scope: &str) -> Option<Scope> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        // `repository(plugin):name:pull` carries a resource class; the class is advisory.
        let kind = kind.split('(').next().unwrap_or(kind);
        Some(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Every scope in the values of the `scope` query parameters; each value may hold
    /// several space-separated scopes. Malformed ones are skipped, as Docker's
    /// reference token server does: they can only ask for less.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        values
            .into_iter()
            .flat_map(|v| v.split(' '))
            .filter_map(Scope::parse)
            .collect()
    }
}

/// One entry of a token's `access` claim: what the bearer may do to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl ResourceAccess {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_scopes() {
        let scope = Scope::parse("repository:team-a/app:pull,push").unwrap();
        assert_eq!(scope.kind, "repository");
        assert_eq!(scope.name, "team-a/app");
        assert_eq!(scope.actions, vec!["pull", "push"]);
    }

    #[test]
    fn the_name_keeps_inner_colons() {
        let scope = Scope::parse("repository:localhost:5000/team/app:pull").unwrap();
        assert_eq!(scope.name, "localhost:5000/team/app");
        assert_eq!(scope.actions, vec!["pull"]);
    }

    #[test]
    fn resource_class_is_dropped_and_catalog_parses() {
        assert_eq!(
            Scope::parse("repository(plugin):a/b:pull").unwrap().kind,
            "repository"
        );
        let catalog = Scope::parse("registry:catalog:*").unwrap();
        assert_eq!(
            (catalog.kind.as_str(), catalog.name.as_str()),
            ("registry", "catalog")
        );
        assert_eq!(catalog.actions, vec!["*"]);
    }

    #[test]
    fn malformed_scopes_are_skipped() {
        assert_eq!(Scope::parse("repository"), None);
        assert_eq!(Scope::parse("repository:app"), None);
        assert_eq!(Scope::parse(":a:pull"), None);
        let all = Scope::parse_all(["repository:a/b:pull repository:c/d:push", "junk"]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].name, "c/d");
    }

    #[test]
    fn access_allows_only_listed_actions() {
        let access = ResourceAccess {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        };
        assert!(access.allows("repository", "a/b", "pull"));
        assert!(!access.allows("repository", "a/b", "push"));
        assert!(!access.allows("repository", "a/c", "pull"));
    }
}
