//! A policy's filters in Harbor's shape (`[{type, value, decoration}]`), what Harbor
//! accepts of them (`Filter.Validate`, `src/pkg/reg/model/policy.go`), and how they
//! select repositories and artifacts (`src/pkg/reg/filter/{repository,artifact,resource}.go`).
//!
//! - `name`: a [pattern](crate::pattern) the repository name must match (no decoration).
//! - `tag`: a pattern over tags, `decoration` `matches` (the default) or `excludes`.
//!   A tagged artifact is replicated with the tags that pass (none pass: skipped); an
//!   untagged one passes if the empty string passes. An accessory (signature, SBOM:
//!   an artifact referring to another) is judged by its subject's tags and, when it
//!   passes, replicated with its own.
//! - `resource`: `image` keeps only artifacts of Harbor type `IMAGE` (images and image
//!   indexes); `artifact` keeps everything (no decoration).
//! - `label`: Harbor's label filter. Berth has no labels, so only an empty list is
//!   accepted (Harbor's UI sends one), and it selects everything, as in Harbor.
//!
//! Filters apply in order, each to what the previous ones let through, as in Harbor;
//! an empty pattern lets everything through.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pattern::{Pattern, PatternError};

pub const FILTER_NAME: &str = "name";
pub const FILTER_TAG: &str = "tag";
pub const FILTER_RESOURCE: &str = "resource";
pub const FILTER_LABEL: &str = "label";
pub const MATCHES: &str = "matches";
pub const EXCLUDES: &str = "excludes";
/// Resource filter values.
pub const RESOURCE_IMAGE: &str = "image";
pub const RESOURCE_ARTIFACT: &str = "artifact";

/// One filter as the API takes it and the database keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub value: Value,
    /// `matches`, `excludes`, or empty (omitted when empty, as Harbor writes it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decoration: String,
}

/// Why Harbor (or Berth) refuses a filter; the messages are Harbor's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid filter type")]
    Type,
    #[error("the type of filter value isn't string")]
    NotString,
    #[error("the type of label filter value isn't string slice")]
    NotStringList,
    #[error("invalid resource filter: {0}")]
    Resource(String),
    #[error("only tag and label filter support decoration")]
    Decoration,
    #[error("invalid filter decoration, :{0}")]
    BadDecoration(String),
    #[error("label filters must be empty: Berth has no artifact labels (got {0:?})")]
    Labels(Vec<String>),
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

/// One checked filter.
#[derive(Debug, Clone, PartialEq)]
enum Checked {
    Name(Pattern),
    Tag {
        pattern: Pattern,
        excludes: bool,
    },
    /// `resource: image` (`resource: artifact` selects everything and is not kept).
    ImagesOnly,
}

/// A policy's filters, checked: what the replicate worker matches with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    checked: Vec<Checked>,
}

/// An artifact as the filters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Harbor's artifact type (`IMAGE`, `CHART`, `UNKNOWN`, …), compared ignoring case.
    pub kind: &'a str,
    /// Its own tags.
    pub tags: &'a [String],
    /// For an accessory (a referrer such as a signature or an SBOM): the tags of the
    /// artifact it refers to, which tag filters judge it by.
    pub subject_tags: Option<&'a [String]>,
}

impl Filters {
    /// Checks `filters` as Harbor does, plus the patterns' syntax (Harbor finds a bad
    /// pattern only when a replication runs).
    pub fn parse(filters: &[Filter]) -> Result<Filters, FilterError> {
        let mut checked = Vec::new();
        for filter in filters {
            if let Some(c) = check(filter)? {
                checked.push(c);
            }
        }
        Ok(Filters { checked })
    }

    /// Whether the repository named `repository` passes the name filters.
    pub fn repository_matches(&self, repository: &str) -> Result<bool, PatternError> {
        for filter in &self.checked {
            if let Checked::Name(pattern) = filter {
                if !pattern.matches(repository)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// What of `artifact` the tag and resource filters let through: `None` if nothing
    /// (skip it), else the tags to replicate it with (empty for an untagged artifact).
    pub fn select(&self, artifact: &Candidate<'_>) -> Result<Option<Vec<String>>, PatternError> {
        let mut tags: Vec<String> = artifact.tags.to_vec();
        // Harbor copies the artifact after a tag filter passes it, and the copy is no
        // longer an accessory: later tag filters judge its own (kept) tags.
        let mut subject_tags = artifact.subject_tags.map(<[String]>::to_vec);
        for filter in &self.checked {
            match filter {
                Checked::Name(_) => {}
                Checked::ImagesOnly => {
                    if !artifact.kind.eq_ignore_ascii_case("image") {
                        return Ok(None);
                    }
                }
                Checked::Tag { pattern, excludes } => {
                    if pattern.as_str().is_empty() {
                        continue;
                    }
                    let judged = subject_tags.as_deref().unwrap_or(&tags);
                    if judged.is_empty() {
                        if pattern.matches("")? == *excludes {
                            return Ok(None);
                        }
                    } else {
                        let mut passing = Vec::new();
                        for tag in judged {
                            if pattern.matches(tag)? != *excludes {
                                passing.push(tag.clone());
                            }
                        }
                        if passing.is_empty() {
                            return Ok(None);
                        }
                        if subject_tags.take().is_none() {
                            tags = passing;
                        }
                    }
                }
            }
        }
        Ok(Some(tags))
    }

    /// Whether no filter narrows anything.
    pub fn is_empty(&self) -> bool {
        self.checked.is_empty()
    }
}

fn check(filter: &Filter) -> Result<Option<Checked>, FilterError> {
    let decoration = filter.decoration.as_str();
    let checked = match filter.kind.as_str() {
        FILTER_NAME | FILTER_TAG | FILTER_RESOURCE => {
            let Value::String(value) = &filter.value else {
                return Err(FilterError::NotString);
            };
            if filter.kind == FILTER_RESOURCE
                && value != RESOURCE_IMAGE
                && value != RESOURCE_ARTIFACT
            {
                return Err(FilterError::Resource(value.clone()));
            }
            if filter.kind != FILTER_TAG && !decoration.is_empty() {
                return Err(FilterError::Decoration);
            }
            match filter.kind.as_str() {
                FILTER_NAME => Some(Checked::Name(Pattern::parse(value)?)),
                FILTER_TAG => Some(Checked::Tag {
                    pattern: Pattern::parse(value)?,
                    excludes: decoration == EXCLUDES,
                }),
                _ if value == RESOURCE_IMAGE => Some(Checked::ImagesOnly),
                _ => None,
            }
        }
        FILTER_LABEL => {
            let Value::Array(items) = &filter.value else {
                return Err(FilterError::NotStringList);
            };
            let labels = items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or(FilterError::NotStringList)?;
            if !labels.is_empty() {
                return Err(FilterError::Labels(labels));
            }
            None
        }
        _ => return Err(FilterError::Type),
    };
    if !decoration.is_empty() && decoration != MATCHES && decoration != EXCLUDES {
        return Err(FilterError::BadDecoration(decoration.to_owned()));
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter(kind: &str, value: Value, decoration: &str) -> Filter {
        Filter {
            kind: kind.to_owned(),
            value,
            decoration: decoration.to_owned(),
        }
    }

    fn filters(list: &[Filter]) -> Filters {
        Filters::parse(list).unwrap()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn select(f: &Filters, kind: &str, tags: &[&str]) -> Option<Vec<String>> {
        let tags = strings(tags);
        f.select(&Candidate {
            kind,
            tags: &tags,
            subject_tags: None,
        })
        .unwrap()
    }

    #[test]
    fn harbor_refuses_what_it_refuses() {
        let refused = |f: Filter| Filters::parse(&[f]).unwrap_err();
        assert_eq!(refused(filter("color", json!("x"), "")), FilterError::Type);
        assert_eq!(refused(filter("", json!("x"), "")), FilterError::Type);
        assert_eq!(
            refused(filter("name", json!(3), "")),
            FilterError::NotString
        );
        assert_eq!(
            refused(filter("tag", Value::Null, "")),
            FilterError::NotString
        );
        assert_eq!(
            refused(filter("resource", json!("chart"), "")),
            FilterError::Resource("chart".into())
        );
        assert_eq!(
            refused(filter("name", json!("a/**"), "matches")),
            FilterError::Decoration
        );
        assert_eq!(
            refused(filter("resource", json!("image"), "excludes")),
            FilterError::Decoration
        );
        assert_eq!(
            refused(filter("tag", json!("v*"), "includes")),
            FilterError::BadDecoration("includes".into())
        );
        assert_eq!(
            refused(filter("label", json!("prod"), "")),
            FilterError::NotStringList
        );
        assert_eq!(
            refused(filter("label", json!(["prod", 1]), "")),
            FilterError::NotStringList
        );
        assert_eq!(
            refused(filter("label", json!(["prod"]), "")),
            FilterError::Labels(vec!["prod".into()])
        );
        assert!(matches!(
            refused(filter("tag", json!("v[1"), "")),
            FilterError::Pattern(PatternError::Syntax(_))
        ));
        // What Harbor's UI sends for a policy without filters set.
        assert!(Filters::parse(&[
            filter("name", json!(""), ""),
            filter("tag", json!(""), "matches"),
            filter("label", json!([]), "matches"),
            filter("resource", json!("artifact"), ""),
        ])
        .is_ok());
    }

    #[test]
    fn name_filters_select_repositories() {
        let f = filters(&[filter("name", json!("library/**"), "")]);
        assert!(f.repository_matches("library/app").unwrap());
        assert!(f.repository_matches("library/a/b").unwrap());
        assert!(!f.repository_matches("team/app").unwrap());
        // Every name filter must pass.
        let f = filters(&[
            filter("name", json!("{library,team}/**"), ""),
            filter("name", json!("*/app"), ""),
        ]);
        assert!(f.repository_matches("team/app").unwrap());
        assert!(!f.repository_matches("team/web").unwrap());
        assert!(!f.repository_matches("other/app").unwrap());
        // No filters, or an empty pattern: everything.
        assert!(Filters::default().repository_matches("x/y").unwrap());
        let f = filters(&[filter("name", json!(""), "")]);
        assert!(f.repository_matches("x/y").unwrap());
    }

    #[test]
    fn tag_filters_keep_the_passing_tags() {
        let f = filters(&[filter("tag", json!("v1.*"), "matches")]);
        assert_eq!(
            select(&f, "IMAGE", &["v1.0", "latest", "v1.1"]),
            Some(strings(&["v1.0", "v1.1"]))
        );
        assert_eq!(select(&f, "IMAGE", &["latest", "dev"]), None);
        // The empty decoration means matches.
        let f = filters(&[filter("tag", json!("v1.*"), "")]);
        assert_eq!(select(&f, "IMAGE", &["v1.2"]), Some(strings(&["v1.2"])));
        let f = filters(&[filter("tag", json!("*-dev"), "excludes")]);
        assert_eq!(
            select(&f, "IMAGE", &["1.0", "1.1-dev", "latest"]),
            Some(strings(&["1.0", "latest"]))
        );
        assert_eq!(select(&f, "IMAGE", &["1.1-dev"]), None);
    }

    #[test]
    fn untagged_artifacts_are_judged_by_the_empty_string() {
        // `*` and `**` match "", so untagged artifacts pass them…
        let star = filters(&[filter("tag", json!("*"), "matches")]);
        assert_eq!(select(&star, "IMAGE", &[]), Some(vec![]));
        // …and not a pattern that needs characters…
        let v = filters(&[filter("tag", json!("v*"), "matches")]);
        assert_eq!(select(&v, "IMAGE", &[]), None);
        // …which, excluded, lets them through.
        let not_v = filters(&[filter("tag", json!("v*"), "excludes")]);
        assert_eq!(select(&not_v, "IMAGE", &[]), Some(vec![]));
        let not_star = filters(&[filter("tag", json!("*"), "excludes")]);
        assert_eq!(select(&not_star, "IMAGE", &[]), None);
        // An empty pattern filters nothing.
        let empty = filters(&[filter("tag", json!(""), "excludes")]);
        assert_eq!(select(&empty, "IMAGE", &["a"]), Some(strings(&["a"])));
    }

    #[test]
    fn accessories_follow_their_subjects_tags_and_keep_their_own() {
        let f = filters(&[filter("tag", json!("v1.*"), "matches")]);
        let own = strings(&["sha256-abc.sig"]);
        let subject = strings(&["v1.0", "latest"]);
        let signature = Candidate {
            kind: "SIGNATURE.COSIGN",
            tags: &own,
            subject_tags: Some(&subject),
        };
        assert_eq!(f.select(&signature).unwrap(), Some(own.clone()));
        let other_subject = strings(&["latest"]);
        let skipped = Candidate {
            subject_tags: Some(&other_subject),
            ..signature.clone()
        };
        assert_eq!(f.select(&skipped).unwrap(), None);
        // An untagged subject: judged by "".
        let untagged_subject: Vec<String> = vec![];
        let orphan = Candidate {
            subject_tags: Some(&untagged_subject),
            ..signature.clone()
        };
        assert_eq!(f.select(&orphan).unwrap(), None);
        let star = filters(&[filter("tag", json!("*"), "")]);
        assert_eq!(star.select(&orphan).unwrap(), Some(own.clone()));
        // After the first tag filter the copy is no longer an accessory (Harbor): a
        // second filter judges the accessory's own tags.
        let two = filters(&[
            filter("tag", json!("v1.*"), ""),
            filter("tag", json!("sha256-*"), ""),
        ]);
        assert_eq!(two.select(&signature).unwrap(), Some(own.clone()));
        let two = filters(&[
            filter("tag", json!("v1.*"), ""),
            filter("tag", json!("v1.*"), ""),
        ]);
        assert_eq!(two.select(&signature).unwrap(), None);
    }

    #[test]
    fn resource_filters() {
        let images = filters(&[filter("resource", json!("image"), "")]);
        assert_eq!(select(&images, "IMAGE", &["1"]), Some(strings(&["1"])));
        assert_eq!(select(&images, "image", &["1"]), Some(strings(&["1"])));
        assert_eq!(select(&images, "CHART", &["1"]), None);
        assert_eq!(select(&images, "SIGNATURE.COSIGN", &[]), None);
        let artifacts = filters(&[filter("resource", json!("artifact"), "")]);
        assert!(artifacts.is_empty());
        assert_eq!(select(&artifacts, "CHART", &["1"]), Some(strings(&["1"])));
    }

    #[test]
    fn filters_combine_in_order() {
        let f = filters(&[
            filter("name", json!("library/**"), ""),
            filter("tag", json!("{1.*,latest}"), ""),
            filter("tag", json!("latest"), "excludes"),
            filter("resource", json!("image"), ""),
            filter("label", json!([]), "matches"),
        ]);
        assert!(f.repository_matches("library/nginx").unwrap());
        assert_eq!(
            select(&f, "IMAGE", &["1.0", "latest", "2.0"]),
            Some(strings(&["1.0"]))
        );
        assert_eq!(select(&f, "IMAGE", &["latest"]), None);
        assert_eq!(select(&f, "CHART", &["1.0"]), None);
    }

    #[test]
    fn the_stored_shape_omits_an_empty_decoration() {
        let f = filter("name", json!("a/**"), "");
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"type": "name", "value": "a/**"})
        );
        let back: Filter =
            serde_json::from_value(json!({"type": "tag", "value": "v*", "decoration": "excludes"}))
                .unwrap();
        assert_eq!(back, filter("tag", json!("v*"), "excludes"));
    }
}
