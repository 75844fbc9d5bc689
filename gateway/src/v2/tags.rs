//! Tag listing (`GET /v2/<name>/tags/list?n=&last=`) and the pagination it shares with
//! `_catalog`.
//!
//! Pages are in lexical byte order (the columns are `COLLATE "C"`), `last` is exclusive,
//! and `n` is clamped to `limits.page_max_entries`; absent, it means that maximum. A
//! `Link: <…?n=&last=>; rel="next"` header appears only when more entries exist, which
//! we learn by fetching one more than asked. An `n` that is not a non-negative integer is
//! refused with 400 `SIZE_INVALID`: Distribution's `PAGINATION_NUMBER_INVALID` is not in
//! the OCI spec's list of codes, and clients treat any 400 as a bad request.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_content::metadata::{repositories, tags};
use berth_content::RepositoryName;
use serde_json::json;
use tracing::instrument;

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;

/// `n` and `last` from a listing's query string, validated and clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Entries to return, at most the configured maximum.
    pub n: i64,
    /// Return entries strictly after this one.
    pub last: Option<String>,
}

impl Page {
    /// Parses `n` and `last` from `query`; other parameters are ignored.
    pub fn parse(query: Option<&str>, max: i64) -> RegistryResult<Page> {
        let mut n = None;
        let mut last = None;
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "n" => n = Some(value.into_owned()),
                "last" => last = Some(value.into_owned()),
                _ => {}
            }
        }
        let max = max.max(0);
        let n = match n.as_deref() {
            // `n=` with nothing after it says nothing; treat it as absent.
            None | Some("") => max,
            Some(text) => parse_n(text).ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::SizeInvalid,
                    format!("n={text:?} is not a valid page size; use a non-negative integer"),
                )
            })?,
        }
        .min(max);
        // `last=` empty is the same as starting from the beginning.
        let last = last.filter(|l| !l.is_empty());
        Ok(Page { n, last })
    }

    /// Splits what was fetched with [`Page::fetch_limit`] into this page and the `last`
    /// of the next page, if another page follows.
    pub fn take_page(&self, mut entries: Vec<String>) -> (Vec<String>, Option<String>) {
        let n = usize::try_from(self.n).unwrap_or(0);
        if entries.len() > n {
            entries.truncate(n);
            // With n = 0 nothing is fetched and no link given: a next link with n=0
            // would never advance.
            let next = entries.last().cloned();
            (entries, next)
        } else {
            (entries, None)
        }
    }

    /// How many rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        self.n.saturating_add(1)
    }

    /// The `Link` header value pointing at the page after `next_last`.
    pub fn link(&self, path: &str, next_last: &str) -> Option<HeaderValue> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &self.n.to_string())
            .append_pair("last", next_last)
            .finish();
        HeaderValue::from_str(&format!("<{path}?{query}>; rel=\"next\"")).ok()
    }
}

/// Digits only (no sign, no spaces); values beyond `i64` saturate, since they are
/// clamped to the maximum anyway.
fn parse_n(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<i64>().unwrap_or(i64::MAX))
}

/// Adds the `Link` header when there is a next page.
pub fn paged_response(
    body: serde_json::Value,
    page: &Page,
    path: &str,
    next: Option<String>,
) -> Response {
    let mut response = Json(body).into_response();
    if let Some(link) = next.and_then(|last| page.link(path, &last)) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

#[instrument(skip_all, fields(repository = %name))]
pub async fn list(state: AppState, name: RepositoryName, req: Request) -> RegistryResult<Response> {
    let page = Page::parse(req.uri().query(), state.config.limits.page_max_entries)?;
    let mut conn = state.db.acquire().await?;
    let Some(repository_id) = repositories::find(&mut conn, &name).await? else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} is unknown to this registry"),
        )
        .with_detail(json!({"name": name.as_str()})));
    };
    let entries = if page.n == 0 {
        Vec::new()
    } else {
        tags::list(
            &mut conn,
            repository_id,
            page.last.as_deref(),
            page.fetch_limit(),
        )
        .await?
    };
    drop(conn);
    let (entries, next) = page.take_page(entries);
    Ok(paged_response(
        json!({"name": name.as_str(), "tags": entries}),
        &page,
        &format!("/v2/{name}/tags/list"),
        next,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(q: &str) -> RegistryResult<Page> {
        Page::parse(Some(q), 100)
    }

    #[test]
    fn parses_and_clamps() {
        assert_eq!(page("").unwrap(), Page { n: 100, last: None });
        assert_eq!(page("n=5&last=b").unwrap().n, 5);
        assert_eq!(page("n=5&last=b").unwrap().last.as_deref(), Some("b"));
        assert_eq!(page("n=1000").unwrap().n, 100);
        assert_eq!(page("n=99999999999999999999999").unwrap().n, 100);
        assert_eq!(page("n=0").unwrap().n, 0);
        assert_eq!(page("n=").unwrap().n, 100);
        assert_eq!(page("last=a%2Fb").unwrap().last.as_deref(), Some("a/b"));
        assert_eq!(page("last=").unwrap().last, None);
    }

    #[test]
    fn refuses_bad_n() {
        for q in ["n=-1", "n=abc", "n=1.5", "n=+3", "n=%201"] {
            assert_eq!(page(q).unwrap_err().code(), ErrorCode::SizeInvalid, "{q}");
        }
    }

    #[test]
    fn splits_and_links() {
        let p = page("n=2").unwrap();
        let all = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let (entries, next) = p.take_page(all.clone());
        assert_eq!(entries, vec!["a", "b"]);
        assert_eq!(next.as_deref(), Some("b"));
        assert_eq!(
            p.link("/v2/x/tags/list", "b").unwrap(),
            "</v2/x/tags/list?n=2&last=b>; rel=\"next\""
        );
        let (entries, next) = p.take_page(all[..2].to_vec());
        assert_eq!(entries.len(), 2);
        assert_eq!(next, None);
        let (entries, next) = page("n=0").unwrap().take_page(Vec::new());
        assert!(entries.is_empty());
        assert_eq!(next, None);
    }
}
