//! Harbor's list conventions: `page` (from 1) and `page_size` (default 10, at most 100),
//! `X-Total-Count`, and a relative `Link` header with `prev`/`next`.

use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::json::JsonBody;

pub const DEFAULT_PAGE_SIZE: i64 = 10;
pub const MAX_PAGE_SIZE: i64 = 100;

/// The raw `page` / `page_size` parameters; [`PageParams::validate`] turns them into a
/// [`Page`].
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page number, from 1.
    pub page: Option<i64>,
    /// Items per page, 1 to 100 (default 10).
    pub page_size: Option<i64>,
}

/// A validated page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub number: i64,
    pub size: i64,
}

impl PageParams {
    pub fn validate(&self) -> ApiResult<Page> {
        let number = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if number < 1 {
            return Err(ApiError::Unprocessable(format!(
                "validation failure list:\npage in query should be greater than or equal to 1 (got {number})"
            )));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(ApiError::Unprocessable(format!(
                "validation failure list:\npage_size in query should be between 1 and {MAX_PAGE_SIZE} (got {size})"
            )));
        }
        if number.checked_mul(size).is_none() {
            return Err(ApiError::Unprocessable("page is out of range".to_owned()));
        }
        Ok(Page { number, size })
    }
}

impl Page {
    /// Rows to skip: for `OFFSET`.
    pub fn offset(&self) -> i64 {
        (self.number - 1) * self.size
    }

    /// Rows to return: for `LIMIT`.
    pub fn limit(&self) -> i64 {
        self.size
    }
}

/// One page of a list, answered with `X-Total-Count` and a `Link` header built from
/// the request's own path and query (relative, as Harbor and harborapi expect).
pub fn paged<T: Serialize>(uri: &Uri, page: Page, total: i64, items: Vec<T>) -> Response {
    let mut response = JsonBody(items).into_response();
    let headers = response.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(total));
    if let Some(link) = link_header(uri, page, total) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert("link", value);
        }
    }
    response
}

fn link_header(uri: &Uri, page: Page, total: i64) -> Option<String> {
    let mut links = Vec::new();
    if page.number > 1 && (page.number - 1) * page.size < total {
        links.push(format!(
            r#"<{}>; rel="prev""#,
            page_url(uri, page.number - 1, page.size)
        ));
    }
    if page.number * page.size < total {
        links.push(format!(
            r#"<{}>; rel="next""#,
            page_url(uri, page.number + 1, page.size)
        ));
    }
    (!links.is_empty()).then(|| links.join(" , "))
}

/// The request path with its query, `page` and `page_size` replaced.
fn page_url(uri: &Uri, number: i64, size: i64) -> String {
    let mut query: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            key != "page" && key != "page_size"
        })
        .map(str::to_owned)
        .collect();
    query.push(format!("page={number}"));
    query.push(format!("page_size={size}"));
    format!("{}?{}", uri.path(), query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(page: Option<i64>, page_size: Option<i64>) -> PageParams {
        PageParams { page, page_size }
    }

    #[test]
    fn validates_page_and_size() {
        assert_eq!(
            params(None, None).validate().unwrap(),
            Page {
                number: 1,
                size: 10
            }
        );
        assert!(params(Some(0), None).validate().is_err());
        assert!(params(None, Some(0)).validate().is_err());
        assert!(params(None, Some(101)).validate().is_err());
        assert!(params(Some(i64::MAX), Some(100)).validate().is_err());
        assert_eq!(params(Some(3), Some(5)).validate().unwrap().offset(), 10);
    }

    #[test]
    fn links_keep_the_query_and_replace_the_page() {
        let uri: Uri = "/api/v2.0/projects?q=name%3D~a&page=2&page_size=5"
            .parse()
            .unwrap();
        let link = link_header(&uri, Page { number: 2, size: 5 }, 12).unwrap();
        assert_eq!(
            link,
            r#"</api/v2.0/projects?q=name%3D~a&page=1&page_size=5>; rel="prev" , </api/v2.0/projects?q=name%3D~a&page=3&page_size=5>; rel="next""#
        );
        assert_eq!(link_header(&uri, Page { number: 1, size: 5 }, 5), None);
        let last = link_header(&uri, Page { number: 3, size: 5 }, 12).unwrap();
        assert!(!last.contains("next"));
    }
}
