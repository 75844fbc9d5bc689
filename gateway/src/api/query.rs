//! Harbor's `q` list filter: comma-separated `key=value` terms, where a value is exact
//! (`name=app`), fuzzy (`name=~app`), a range (`op_time=[2024-01-01 00:00:00~]`), an
//! OR list (`operation={push pull}`) or an AND list (`(a b)`).
//!
//! Handlers turn the parsed terms into SQL parameters for the keys they support and
//! refuse other keys with `BAD_REQUEST`, so a typo never silently widens a listing.
//!
//! Also the rest of a list request that every list shares: Harbor's one-field `sort`,
//! and [`ListParams`], the `q`, `sort` and page parameters of a list.

use serde::Deserialize;
use utoipa::IntoParams;

pub use berth_content::metadata::Sort;

use super::error::{ApiError, ApiResult};
use super::pagination::{Page, PageParams};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryValue {
    Exact(String),
    Fuzzy(String),
    Range {
        min: Option<String>,
        max: Option<String>,
    },
    AnyOf(Vec<String>),
    AllOf(Vec<String>),
}

/// The inclusive ends of a time range; `None` is open.
pub type TimeBounds = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTerm {
    pub key: String,
    pub value: QueryValue,
}

/// The parsed terms of a `q` parameter (already URL-decoded once by the query
/// extractor). An absent or empty `q` has no terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub terms: Vec<QueryTerm>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Result<Query, ApiError> {
        let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) else {
            return Ok(Query::default());
        };
        let mut terms = Vec::new();
        for term in split_terms(q) {
            let (key, value) = term.split_once('=').ok_or_else(|| {
                ApiError::bad_request(
                    r#"the query string must contain "=" and the key/value cannot be empty"#,
                )
            })?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || value.is_empty() {
                return Err(ApiError::bad_request(
                    r#"the query string must contain "=" and the key/value cannot be empty"#,
                ));
            }
            terms.push(QueryTerm {
                key: key.to_owned(),
                value: parse_value(value)?,
            });
        }
        Ok(Query { terms })
    }

    /// Refuses any key not in `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self
            .terms
            .iter()
            .find(|t| !allowed.contains(&t.key.as_str()))
        {
            Some(term) => Err(ApiError::bad_request(format!(
                "unsupported query key {:?}; supported: {}",
                term.key,
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&QueryValue> {
        self.terms.iter().find(|t| t.key == key).map(|t| &t.value)
    }

    /// An exact value for `key`, as a string.
    pub fn exact(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(QueryValue::Exact(v)) => Ok(Some(v)),
            Some(_) => Err(ApiError::bad_request(format!(
                "query key {key:?} takes an exact value"
            ))),
        }
    }

    /// A value for `key` as an SQL `LIKE` pattern: exact values match themselves, fuzzy
    /// ones anywhere (`%v%`); `%`, `_` and `\` in the value match only themselves.
    pub fn like_pattern(&self, key: &str) -> Result<Option<String>, ApiError> {
        self.like_pattern_of(key, |v| v)
    }

    /// [`Query::like_pattern`] of the value as `stored` turns it into what the column
    /// holds.
    pub fn like_pattern_of(
        &self,
        key: &str,
        stored: impl Fn(&str) -> &str,
    ) -> Result<Option<String>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(QueryValue::Exact(v)) => Ok(Some(escape_like(stored(v)))),
            Some(QueryValue::Fuzzy(v)) => Ok(Some(contains_pattern(stored(v)))),
            Some(_) => Err(ApiError::bad_request(format!(
                "query key {key:?} takes an exact (k=v) or fuzzy (k=~v) value"
            ))),
        }
    }

    /// An exact value or an OR list for `key`.
    pub fn one_of(&self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(QueryValue::Exact(v)) => Ok(Some(vec![v.clone()])),
            Some(QueryValue::AnyOf(vs)) => Ok(Some(vs.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "query key {key:?} takes a value (k=v) or a list (k={{a b}})"
            ))),
        }
    }

    /// A time range for `key` (`[min~max]`, either end optional), or an exact time.
    pub fn time_range(&self, key: &str) -> Result<TimeBounds, ApiError> {
        match self.get(key) {
            None => Ok((None, None)),
            Some(QueryValue::Range { min, max }) => Ok((
                min.as_deref().map(parse_time).transpose()?,
                max.as_deref().map(parse_time).transpose()?,
            )),
            Some(QueryValue::Exact(v)) => {
                let t = parse_time(v)?;
                Ok((Some(t), Some(t)))
            }
            Some(_) => Err(ApiError::bad_request(format!(
                "query key {key:?} takes a time range [min~max]"
            ))),
        }
    }
}

/// `q`, `sort`, `page` and `page_size`: the parameters every filtered, sorted list
/// takes. A list with more filters takes them in a second query struct.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Harbor's query: `name=app` (exact) or `name=~app` (fuzzy), …
    pub q: Option<String>,
    /// One field, `-field` for descending.
    pub sort: Option<String>,
    /// Page number, from 1.
    pub page: Option<i64>,
    /// Items per page, 1 to 100 (default 10).
    pub page_size: Option<i64>,
}

impl ListParams {
    pub fn page(&self) -> ApiResult<Page> {
        PageParams {
            page: self.page,
            page_size: self.page_size,
        }
        .validate()
    }

    /// The parsed `q`.
    pub fn query(&self) -> ApiResult<Query> {
        Query::parse(self.q.as_deref())
    }

    /// The parsed `sort`: one of `allowed`, absent `default`.
    pub fn sort<'a>(&self, allowed: &[&'a str], default: Sort<'a>) -> ApiResult<Sort<'a>> {
        parse_sort(self.sort.as_deref(), allowed, default)
    }
}

/// Harbor's `sort` parameter for a list sorted by one field: `field` ascending,
/// `-field` descending, one of `allowed`; absent, `default`. The listings order by it
/// and then by id, so pages stay stable.
pub fn parse_sort<'a>(
    sort: Option<&str>,
    allowed: &[&'a str],
    default: Sort<'a>,
) -> ApiResult<Sort<'a>> {
    let Some(sort) = sort.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(default);
    };
    let mut fields = sort.split(',').map(str::trim).filter(|f| !f.is_empty());
    let (Some(field), None) = (fields.next(), fields.next()) else {
        return Err(ApiError::bad_request(format!(
            "sort {sort:?}: this list sorts by one field"
        )));
    };
    let (descending, field) = match field.strip_prefix('-') {
        Some(field) => (true, field),
        None => (false, field),
    };
    match allowed.iter().find(|key| **key == field) {
        Some(key) => Ok(Sort { key, descending }),
        None => Err(ApiError::bad_request(format!(
            "cannot sort by {field:?}; supported: {}",
            allowed.join(", ")
        ))),
    }
}

/// Splits on commas that are not inside `[]`, `{}` or `()`.
fn split_terms(q: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in q.char_indices() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth <= 0 => {
                terms.push(&q[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&q[start..]);
    terms.into_iter().filter(|t| !t.trim().is_empty()).collect()
}

fn parse_value(value: &str) -> Result<QueryValue, ApiError> {
    let invalid = || ApiError::bad_request(format!("invalid query string value: {value}"));
    if let Some(escaped) = value.strip_prefix('\\') {
        return Ok(QueryValue::Exact(escaped.to_owned()));
    }
    if let Some(fuzzy) = value.strip_prefix('~') {
        return Ok(QueryValue::Fuzzy(fuzzy.to_owned()));
    }
    if let Some(inner) = value.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(invalid)?;
        let mut parts = inner.split('~');
        let (Some(min), Some(max), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let end = |s: &str| Some(unquote(s.trim())).filter(|s| !s.is_empty());
        return Ok(QueryValue::Range {
            min: end(min),
            max: end(max),
        });
    }
    let list = |inner: &str| -> Vec<String> {
        inner
            .split_whitespace()
            .map(unquote)
            .filter(|s| !s.is_empty())
            .collect()
    };
    if let Some(inner) = value.strip_prefix('{') {
        let inner = inner.strip_suffix('}').ok_or_else(invalid)?;
        return Ok(QueryValue::AnyOf(list(inner)));
    }
    if let Some(inner) = value.strip_prefix('(') {
        let inner = inner.strip_suffix(')').ok_or_else(invalid)?;
        return Ok(QueryValue::AllOf(list(inner)));
    }
    Ok(QueryValue::Exact(value.to_owned()))
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '\'').to_owned()
}

/// An SQL `LIKE` pattern matching values that contain `value` (Harbor's fuzzy match).
pub fn contains_pattern(value: &str) -> String {
    format!("%{}%", escape_like(value))
}

pub fn escape_like(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Harbor's time layouts: `2006-01-02 15:04:05`, `2006-01-02T15:04:05`, RFC 3339, or a
/// date alone; times without a zone are UTC.
fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for layout in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, layout) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    Err(ApiError::bad_request(format!(
        "invalid time {s:?}: use \"2006-01-02 15:04:05\" or RFC 3339"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_value_form() {
        let q = Query::parse(Some(
            "name=~app,level=project,op_time=[2024-01-01 00:00:00~],operation={push pull},tags=(a b)",
        ))
        .unwrap();
        assert_eq!(q.get("name"), Some(&QueryValue::Fuzzy("app".into())));
        assert_eq!(q.exact("level").unwrap(), Some("project"));
        assert_eq!(
            q.get("op_time"),
            Some(&QueryValue::Range {
                min: Some("2024-01-01 00:00:00".into()),
                max: None
            })
        );
        assert_eq!(
            q.one_of("operation").unwrap(),
            Some(vec!["push".to_owned(), "pull".to_owned()])
        );
        assert_eq!(
            q.get("tags"),
            Some(&QueryValue::AllOf(vec!["a".into(), "b".into()]))
        );
        assert!(q.time_range("op_time").unwrap().0.is_some());
    }

    #[test]
    fn refuses_malformed_terms_and_unknown_keys() {
        assert!(Query::parse(Some("name")).is_err());
        assert!(Query::parse(Some("=x")).is_err());
        assert!(Query::parse(Some("name=")).is_err());
        assert!(Query::parse(Some("t=[a~b~c]")).is_err());
        assert!(Query::parse(Some("t={a b")).is_err());
        let q = Query::parse(Some("nmae=x")).unwrap();
        assert!(q.only(&["name"]).is_err());
        assert!(Query::parse(Some("t=[nope~]"))
            .unwrap()
            .time_range("t")
            .is_err());
        assert_eq!(Query::parse(None).unwrap(), Query::default());
    }

    #[test]
    fn sorts_by_one_allowed_key() {
        let keys = ["name", "id"];
        let default = Sort {
            key: "id",
            descending: false,
        };
        let sort = parse_sort(Some("-name"), &keys, default).unwrap();
        assert_eq!(sort.signed_key(), "-name");
        let sort = parse_sort(Some("id"), &keys, default).unwrap();
        assert_eq!(sort.signed_key(), "id");
        assert_eq!(parse_sort(None, &["name"], default).unwrap(), default);
        assert!(parse_sort(Some("secret"), &["name"], default).is_err());
        assert!(parse_sort(Some("name,-id"), &["name", "id"], default).is_err());
    }

    #[test]
    fn sort_takes_one_known_field() {
        let default = Sort {
            key: "id",
            descending: false,
        };
        let sort = |s| parse_sort(s, &["id", "name"], default);
        assert_eq!(sort(None).unwrap(), default);
        assert_eq!(
            sort(Some("-name")).unwrap(),
            Sort {
                key: "name",
                descending: true
            }
        );
        assert!(sort(Some("size")).is_err());
        assert!(sort(Some("name,-id")).is_err());
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        let q = Query::parse(Some("name=~a_b%")).unwrap();
        assert_eq!(q.like_pattern("name").unwrap().unwrap(), r"%a\_b\%%");
        assert_eq!(escape_like(r"a\b"), r"a\\b");
        let q = Query::parse(Some("name=~robot$a_b")).unwrap();
        let pattern = q.like_pattern_of("name", |v| v.strip_prefix("robot$").unwrap_or(v));
        assert_eq!(pattern.unwrap().unwrap(), r"%a\_b%");
    }
}
