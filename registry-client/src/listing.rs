//! Listings: the catalog, a repository's tags, and the referrers of a manifest, each
//! following the registry's `Link: <…>; rel="next"` pagination.

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, LINK};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::client::{expect_status, Request};
use crate::manifests::{pull_scope, read_json};
use crate::names::{check_digest, check_repository};
use crate::types::{media_types, Descriptor, ManifestContent};
use crate::{ClientError, RegistryClient};

/// Largest page body read (a page of 1000 long names is well below).
const MAX_PAGE: usize = 16 * 1024 * 1024;

/// Pages followed at most, so a registry whose `Link` goes round in circles cannot keep
/// the client busy forever.
const MAX_PAGES: usize = 100_000;

#[derive(Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl RegistryClient {
    /// Every repository in the registry (`/v2/_catalog`), `page_size` per request.
    /// Registries without a catalog (Docker Hub) answer an error.
    pub async fn catalog(&self, page_size: u32) -> Result<Vec<String>, ClientError> {
        let mut url = self.url("v2/_catalog")?;
        if page_size > 0 {
            url.query_pairs_mut()
                .append_pair("n", &page_size.to_string());
        }
        let scopes = vec!["registry:catalog:*".to_string()];
        self.paginate(url, scopes, "catalog", |page: CatalogPage| {
            page.repositories.unwrap_or_default()
        })
        .await
    }

    /// Every tag of a repository, in pages of the registry's default size.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, ClientError> {
        self.tags_paged(repository, None).await
    }

    /// Every tag of a repository, asking for `page_size` tags per request.
    pub async fn tags_paged(
        &self,
        repository: &str,
        page_size: Option<u32>,
    ) -> Result<Vec<String>, ClientError> {
        check_repository(repository)?;
        let mut url = self.url(&format!("v2/{repository}/tags/list"))?;
        if let Some(n) = page_size.filter(|n| *n > 0) {
            url.query_pairs_mut().append_pair("n", &n.to_string());
        }
        self.paginate(
            url,
            vec![pull_scope(repository)],
            "tag list",
            |page: TagsPage| page.tags.unwrap_or_default(),
        )
        .await
    }

    /// The manifests whose `subject` is `digest` (signatures, SBOMs, attestations):
    /// the OCI referrers API, or, where the registry does not have it (404), the
    /// referrers tag schema (`sha256-<hex>` tagging an index of them). Empty when
    /// there are none.
    pub async fn referrers(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<Descriptor>, ClientError> {
        check_repository(repository)?;
        check_digest(digest)?;
        let url = self.url(&format!("v2/{repository}/referrers/{digest}"))?;
        let first = {
            let mut request = Request::new(Method::GET, url.clone(), vec![pull_scope(repository)]);
            request
                .headers
                .insert(ACCEPT, HeaderValue::from_static(media_types::OCI_INDEX));
            let (response, _permit) = self.send(request).await?;
            if response.status() == StatusCode::NOT_FOUND {
                None
            } else {
                let response = expect_status(response, &[StatusCode::OK]).await?;
                Some(response)
            }
        };
        let Some(first) = first else {
            return self.referrers_by_tag(repository, digest).await;
        };
        let next = next_link(first.headers(), first.url(), self.base_url())?;
        let index: ManifestContent =
            ManifestContent::parse(&crate::client::read_limited(first, MAX_PAGE).await?)?;
        let mut referrers = index.manifests;
        if let Some(next) = next {
            let more = self
                .paginate(
                    next,
                    vec![pull_scope(repository)],
                    "referrers",
                    |page: ReferrersPage| page.manifests.unwrap_or_default(),
                )
                .await?;
            referrers.extend(more);
        }
        Ok(referrers)
    }

    async fn referrers_by_tag(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<Descriptor>, ClientError> {
        // The spec's tag: `<alg>-<hex>`, cut to the 128 characters a tag may have.
        let tag: String = digest.replacen(':', "-", 1).chars().take(128).collect();
        match self.get_manifest(repository, &tag).await {
            Ok(manifest) => Ok(manifest.content()?.manifests),
            Err(ClientError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// GETs `url` and each `rel="next"` page after it, collecting `extract(page)`.
    async fn paginate<P, T>(
        &self,
        mut url: Url,
        scopes: Vec<String>,
        what: &str,
        extract: impl Fn(P) -> Vec<T>,
    ) -> Result<Vec<T>, ClientError>
    where
        P: serde::de::DeserializeOwned,
    {
        let mut items = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            seen.insert(url.to_string());
            let (response, _permit) = self
                .send(Request::new(Method::GET, url.clone(), scopes.clone()))
                .await?;
            let response = expect_status(response, &[StatusCode::OK]).await?;
            let next = next_link(response.headers(), response.url(), self.base_url())?;
            let page: P = read_json(response, MAX_PAGE, what).await?;
            items.extend(extract(page));
            match next {
                None => return Ok(items),
                Some(next) if seen.contains(next.as_str()) => {
                    return Err(ClientError::Protocol(format!(
                        "{what} pagination loops back to {next}"
                    )));
                }
                Some(next) => url = next,
            }
        }
        Err(ClientError::Protocol(format!(
            "{what} has more than {MAX_PAGES} pages"
        )))
    }
}

#[derive(Deserialize)]
struct ReferrersPage {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// The `rel="next"` target of the `Link` headers, resolved against the URL that was
/// fetched. A link to another host is refused: our credentials would go with it.
fn next_link(headers: &HeaderMap, current: &Url, base: &Url) -> Result<Option<Url>, ClientError> {
    for value in headers.get_all(LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in split_links(value) {
            let Some((target, params)) = parse_link(link) else {
                continue;
            };
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                let Some((name, value)) = p.split_once('=') else {
                    return false;
                };
                name.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|rel| rel.eq_ignore_ascii_case("next"))
            });
            if !is_next {
                continue;
            }
            let next = current
                .join(target)
                .map_err(|e| ClientError::Protocol(format!("bad Link target {target:?}: {e}")))?;
            if next.origin() != base.origin() {
                return Err(ClientError::Protocol(format!(
                    "Link points to another host: {next}"
                )));
            }
            return Ok(Some(next));
        }
    }
    Ok(None)
}

/// Splits a `Link` header value into links at the commas outside `<…>`.
fn split_links(value: &str) -> Vec<&str> {
    let mut links = Vec::new();
    let mut depth = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '<' => depth = true,
            '>' => depth = false,
            ',' if !depth => {
                links.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    links.push(&value[start..]);
    links
}

/// `<target>; params` → (target, params).
fn parse_link(link: &str) -> Option<(&str, &str)> {
    let link = link.trim();
    let rest = link.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((&rest[..end], &rest[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(LINK, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn next_links_resolve_against_the_current_page() {
        let base = Url::parse("http://r:5000/").unwrap();
        let current = Url::parse("http://r:5000/v2/_catalog?n=2").unwrap();
        let next = next_link(
            &headers(&[r#"</v2/_catalog?last=b&n=2>; rel="next""#]),
            &current,
            &base,
        )
        .unwrap();
        assert_eq!(
            next.unwrap().as_str(),
            "http://r:5000/v2/_catalog?last=b&n=2"
        );

        let several = r#"<http://r:5000/v2/x/tags/list?n=1&last=a,b>; rel="prev", </v2/x/tags/list?n=1&last=c>; rel=next"#;
        let next = next_link(&headers(&[several]), &current, &base).unwrap();
        assert_eq!(
            next.unwrap().as_str(),
            "http://r:5000/v2/x/tags/list?n=1&last=c"
        );

        assert_eq!(next_link(&headers(&[]), &current, &base).unwrap(), None);
        assert_eq!(
            next_link(&headers(&["garbage", "<>"]), &current, &base).unwrap(),
            None
        );
        assert!(next_link(
            &headers(&[r#"<http://evil/v2/_catalog>; rel="next""#]),
            &current,
            &base
        )
        .is_err());
    }
}
