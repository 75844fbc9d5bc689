//! The access check on every `/v2/` request: who is calling (HTTP Basic, a bearer token
//! from `/service/token`, or nobody) and whether that caller may do what the request
//! does to a repository.
//!
//! Refusals that a Docker client can cure by fetching a token carry the challenge
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, which sends it to the token
//! endpoint; refusals it cannot cure (an authenticated caller without the right) are
//! `403 DENIED`. Bearer tokens are checked without the database: the signature, expiry,
//! audience and the `access` claim say everything, so a pull with a token costs no
//! extra round trip.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, Extensions, HeaderMap};
use berth_access::audit::{self, AuditEntry};
use berth_access::token::{TokenError, VerifiedToken};
use berth_access::{authorize, users, Principal, RegistryAction};
use berth_content::metadata::projects::{self, ProjectRef};
use berth_content::RepositoryName;
use sqlx::PgConnection;

use super::{client_address, AuthError, Credentials};
use crate::config::AuthMode;
use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::state::AppState;

/// Who a registry request comes from.
#[derive(Debug, Clone)]
pub enum RegistryCaller {
    /// Basic credentials, no credentials (anonymous), or anyone when auth is off.
    Principal(Principal),
    /// A verified bearer token: it carries grants, not an identity.
    Token(VerifiedToken),
}

/// One request's caller, with what its refusals and audit entries need.
#[derive(Debug, Clone)]
pub struct RegistryAuth {
    pub caller: RegistryCaller,
    pub client: IpAddr,
    /// The token endpoint's URL, for challenges.
    realm: String,
    /// `service` of challenges; the audience tokens must carry.
    service: String,
}

/// Authenticates the request's `Authorization` header. With `auth.mode = "none"` the
/// header is ignored and everyone is unrestricted. Takes the request's parts rather
/// than the request: a future holding a `&Request` would not be `Send` (the body is
/// not `Sync`).
pub async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> RegistryResult<RegistryAuth> {
    let client = client_address(extensions);
    let config = &state.config;
    // Built before the caller is known, because refusing credentials needs the
    // challenge; the caller starts as nobody.
    let mut auth = RegistryAuth {
        caller: RegistryCaller::Principal(Principal::Anonymous),
        client,
        realm: realm(&config.external_url, headers, config.listen),
        service: config.auth.service.clone(),
    };
    if config.auth.mode == AuthMode::None {
        auth.caller = RegistryCaller::Principal(Principal::Unrestricted);
        return Ok(auth);
    }
    let credentials = Credentials::from_headers(headers, config.auth.max_authorization_bytes)
        .map_err(|e| auth.auth_error(e))?;
    auth.caller = match credentials {
        None => RegistryCaller::Principal(Principal::Anonymous),
        Some(Credentials::Basic { username, password }) => {
            let principal = super::authenticate_basic(state, &username, &password, client)
                .await
                .map_err(|e| auth.auth_error(e))?;
            RegistryCaller::Principal(principal)
        }
        Some(Credentials::Bearer(token)) => {
            let verified = state
                .auth
                .keys
                .verify(&token, &config.auth.service)
                .map_err(|e| auth.unauthorized(&token_problem(&e), None, false))?;
            RegistryCaller::Token(verified)
        }
    };
    Ok(auth)
}

/// `{external_url}/service/token`, or `http://{Host}/service/token` when no external
/// URL is configured. A `Host` that could break out of the quoted challenge falls
/// back to the listen address.
fn realm(external_url: &str, headers: &HeaderMap, listen: SocketAddr) -> String {
    if !external_url.is_empty() {
        return format!("{}/service/token", external_url.trim_end_matches('/'));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| listen.to_string());
    format!("http://{host}/service/token")
}

/// A clear reason for a refused token; the verifier's own words follow for detail.
fn token_problem(error: &TokenError) -> String {
    let reason = match error {
        TokenError::Invalid(reason) => reason.as_str(),
        other => return format!("invalid token: {other}"),
    };
    let lower = reason.to_ascii_lowercase();
    let summary = if lower.contains("expired") {
        "token expired"
    } else if lower.contains("not valid yet") {
        "token not valid yet"
    } else if lower.contains("signature") || lower.contains("key identifier") {
        "token signature invalid (signed by another key, or altered)"
    } else if lower.contains("audience") {
        "token is for another service"
    } else if lower.contains("issuer") {
        "token is from another issuer"
    } else if lower.contains("too long") {
        "token too long"
    } else {
        "token malformed"
    };
    format!("{summary}: {reason}")
}

/// The `scope` a challenge asks for: what a Docker client requests for this action.
fn challenge_actions(action: RegistryAction) -> &'static str {
    match action {
        RegistryAction::Pull => "pull",
        RegistryAction::Push => "pull,push",
        RegistryAction::Delete => "delete",
    }
}

impl RegistryAuth {
    /// The name audit entries record: the principal, or the token's subject.
    pub fn name(&self) -> &str {
        match &self.caller {
            RegistryCaller::Principal(principal) => principal.name(),
            RegistryCaller::Token(token) => &token.subject,
        }
    }

    fn is_anonymous(&self) -> bool {
        matches!(self.caller, RegistryCaller::Principal(Principal::Anonymous))
    }

    /// `401 UNAUTHORIZED` with the Bearer challenge for `scope`.
    fn unauthorized(
        &self,
        message: &str,
        scope: Option<&str>,
        insufficient: bool,
    ) -> RegistryError {
        let mut challenge = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm, self.service
        );
        if let Some(scope) = scope {
            challenge.push_str(&format!(",scope=\"{scope}\""));
        }
        if insufficient {
            challenge.push_str(",error=\"insufficient_scope\"");
        }
        RegistryError::new(ErrorCode::Unauthorized, message)
            .with_header("www-authenticate", challenge)
    }

    fn auth_error(&self, error: AuthError) -> RegistryError {
        match error {
            AuthError::Malformed(reason) => self.unauthorized(&reason, None, false),
            AuthError::InvalidCredentials => {
                self.unauthorized("invalid username or password", None, false)
            }
            AuthError::Throttled(wait) => {
                let secs = wait.as_secs().max(1);
                RegistryError::new(
                    ErrorCode::TooManyRequests,
                    format!("too many failed logins; retry in {secs} s"),
                )
                .with_header("retry-after", secs.to_string())
            }
            AuthError::Database(e) => RegistryError::Database(e),
            AuthError::Hashing(e) => RegistryError::Internal(e.to_string()),
        }
    }

    /// `GET /v2/`: any authenticated caller (or a valid token); anonymous callers get
    /// the challenge that starts the token flow.
    pub fn require_authenticated(&self) -> RegistryResult<()> {
        if self.is_anonymous() {
            return Err(self.unauthorized("authentication required", None, false));
        }
        Ok(())
    }

    /// `GET /v2/_catalog`: system administrators, or a token granting
    /// `registry:catalog:*`.
    pub fn authorize_catalog(&self) -> RegistryResult<()> {
        const SCOPE: &str = "registry:catalog:*";
        match &self.caller {
            RegistryCaller::Principal(principal) if principal.is_sysadmin() => Ok(()),
            RegistryCaller::Principal(Principal::Anonymous) => {
                Err(self.unauthorized("authentication required", Some(SCOPE), false))
            }
            RegistryCaller::Principal(_) => Err(denied()),
            RegistryCaller::Token(token) if token.allows("registry", "catalog", "*") => Ok(()),
            RegistryCaller::Token(_) => Err(self.unauthorized(
                "the token does not grant registry:catalog:*",
                Some(SCOPE),
                true,
            )),
        }
    }

    /// Checks that the caller may do `action` to `name`. Returns the repository's
    /// project when it was looked up: always for Basic and anonymous callers, and for
    /// tokens and unrestricted callers when `needs_project` (a request that creates
    /// something in the project, or whose audit entry names it). A missing project is
    /// created for a system administrator's push when `projects.create_on_push` is set.
    pub async fn authorize(
        &self,
        state: &AppState,
        name: &RepositoryName,
        action: RegistryAction,
        needs_project: bool,
    ) -> RegistryResult<Option<ProjectRef>> {
        let project_name = name.project();
        match &self.caller {
            RegistryCaller::Token(token) => {
                if !token.allows("repository", name.as_str(), action.as_str()) {
                    let scope = format!("repository:{name}:{}", challenge_actions(action));
                    return Err(self.unauthorized(
                        &format!("the token does not grant {} on {name}", action.as_str()),
                        Some(&scope),
                        true,
                    ));
                }
                self.project_if(needs_project, state, name, action).await
            }
            RegistryCaller::Principal(Principal::Unrestricted) => {
                self.project_if(needs_project, state, name, action).await
            }
            RegistryCaller::Principal(principal) => {
                let mut conn = state.db.acquire().await?;
                match authorize::actions_on_project(&mut conn, principal, project_name).await? {
                    Some((project, actions)) if actions.contains(&action) => Ok(Some(project)),
                    Some(_) if self.is_anonymous() => {
                        let scope = format!("repository:{name}:{}", challenge_actions(action));
                        Err(self.unauthorized("authentication required", Some(&scope), false))
                    }
                    Some(_) => Err(denied()),
                    None => self.missing_project(state, &mut conn, name, action).await,
                }
            }
        }
    }

    /// For callers whose rights need no database (tokens, unrestricted): `name`'s
    /// project when `needed`, perhaps created by [`RegistryAuth::missing_project`].
    async fn project_if(
        &self,
        needed: bool,
        state: &AppState,
        name: &RepositoryName,
        action: RegistryAction,
    ) -> RegistryResult<Option<ProjectRef>> {
        if !needed {
            return Ok(None);
        }
        let mut conn = state.db.acquire().await?;
        match projects::find_by_name(&mut conn, name.project()).await? {
            Some(project) => Ok(Some(project)),
            None => self.missing_project(state, &mut conn, name, action).await,
        }
    }

    /// Whether the caller may pull from `name` (the source of a cross-repository
    /// mount). Never an error for lack of rights: the mount then becomes an upload.
    pub async fn may_pull(&self, state: &AppState, name: &RepositoryName) -> RegistryResult<bool> {
        match &self.caller {
            RegistryCaller::Token(token) => {
                Ok(token.allows("repository", name.as_str(), RegistryAction::Pull.as_str()))
            }
            RegistryCaller::Principal(Principal::Unrestricted) => Ok(true),
            RegistryCaller::Principal(principal) => {
                let mut conn = state.db.acquire().await?;
                let rights =
                    authorize::actions_on_project(&mut conn, principal, name.project()).await?;
                Ok(rights.is_some_and(|(_, actions)| actions.contains(&RegistryAction::Pull)))
            }
        }
    }

    /// Whether the caller may pull from every repository: a mount without `from` links
    /// the blob from wherever it is, so only such callers may use it.
    pub fn may_pull_anywhere(&self) -> bool {
        matches!(&self.caller, RegistryCaller::Principal(p) if p.is_sysadmin())
    }

    /// The request names a project that does not exist: create it for a system
    /// administrator's push when configured, let unrestricted callers through to the
    /// handler (its answer is the data path's own), and refuse everyone else.
    async fn missing_project(
        &self,
        state: &AppState,
        conn: &mut PgConnection,
        name: &RepositoryName,
        action: RegistryAction,
    ) -> RegistryResult<Option<ProjectRef>> {
        if action == RegistryAction::Push && state.config.projects.create_on_push {
            if let Some(owner) = self.project_creator(conn).await? {
                return self
                    .create_project(conn, name.project(), owner)
                    .await
                    .map(Some);
            }
        }
        match &self.caller {
            RegistryCaller::Principal(Principal::Unrestricted)
                if action != RegistryAction::Push =>
            {
                Ok(None)
            }
            // Anonymous callers learn nothing about which names exist.
            RegistryCaller::Principal(Principal::Anonymous) => {
                let scope = format!("repository:{name}:{}", challenge_actions(action));
                Err(self.unauthorized("authentication required", Some(&scope), false))
            }
            _ => Err(RegistryError::new(
                ErrorCode::NameUnknown,
                format!("project {} does not exist", name.project()),
            )
            .with_detail(serde_json::json!({ "name": name.as_str() }))),
        }
    }

    /// Who would own a project created by this caller's push: `Some(owner)` for system
    /// administrators (a token's subject is looked up again: the token proves the
    /// grant, not that its holder is still an administrator), `None` for others.
    async fn project_creator(
        &self,
        conn: &mut PgConnection,
    ) -> RegistryResult<Option<Option<i64>>> {
        match &self.caller {
            RegistryCaller::Principal(Principal::Unrestricted) => Ok(Some(None)),
            RegistryCaller::Principal(Principal::User(user)) if user.sysadmin => {
                Ok(Some(Some(user.id)))
            }
            RegistryCaller::Principal(_) => Ok(None),
            RegistryCaller::Token(token) => {
                let user = users::find_for_login(conn, &token.subject).await?;
                Ok(user.filter(|u| u.sysadmin).map(|u| Some(u.id)))
            }
        }
    }

    /// Creates the private project `project_name` and audits it, exactly once even when
    /// the layers of a first push race each other into it.
    /// Runs on the request's connection: taking a second one from the pool while
    /// holding the first could exhaust it when many first pushes arrive at once.
    async fn create_project(
        &self,
        conn: &mut PgConnection,
        project_name: &str,
        owner: Option<i64>,
    ) -> RegistryResult<ProjectRef> {
        let mut tx = sqlx::Connection::begin(conn).await?;
        // Concurrent first pushes serialise here; the first creates the project and
        // writes the audit entry, the others find it.
        sqlx::query!(
            "SELECT 1 AS locked FROM pg_advisory_xact_lock(hashtext('berth-project:' || $1))",
            project_name
        )
        .fetch_one(&mut *tx)
        .await?;
        if let Some(project) = projects::find_by_name(&mut tx, project_name).await? {
            tx.commit().await?;
            return Ok(project);
        }
        let project = projects::find_or_create(&mut tx, project_name, false, owner).await?;
        let entry = self.audit("create", "project", project_name, Some(&project));
        audit::record(&mut tx, &entry).await?;
        tx.commit().await?;
        tracing::info!(
            project = project_name,
            by = self.name(),
            "project created by push"
        );
        Ok(project)
    }

    /// An audit entry about `resource` by this caller.
    pub fn audit(
        &self,
        operation: &str,
        resource_type: &str,
        resource: impl Into<String>,
        project: Option<&ProjectRef>,
    ) -> AuditEntry {
        AuditEntry::new(
            self.name(),
            self.client,
            operation,
            resource_type,
            resource,
            project.map(|p| p.id),
        )
    }
}

/// `403 DENIED`: authenticated, but without the right; a token would not help.
fn denied() -> RegistryError {
    RegistryError::new(
        ErrorCode::Denied,
        "requested access to the resource is denied",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_realm_comes_from_the_external_url_or_the_host() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 5000));
        let mut headers = HeaderMap::new();
        assert_eq!(
            realm("https://registry.example.com/", &headers, listen),
            "https://registry.example.com/service/token"
        );
        assert_eq!(
            realm("", &headers, listen),
            "http://127.0.0.1:5000/service/token"
        );
        headers.insert(header::HOST, HeaderValue::from_static("reg.local:8080"));
        assert_eq!(
            realm("", &headers, listen),
            "http://reg.local:8080/service/token"
        );
        headers.insert(header::HOST, HeaderValue::from_static("evil\",x=\"y"));
        assert_eq!(
            realm("", &headers, listen),
            "http://127.0.0.1:5000/service/token"
        );
    }

    #[test]
    fn token_problems_read_clearly() {
        let problem = |reason: &str| token_problem(&TokenError::Invalid(reason.to_owned()));
        assert!(problem("Token has expired").starts_with("token expired"));
        assert!(problem("Signature tag didn't verify").starts_with("token signature invalid"));
        assert!(problem("JWT key identifier mismatch").starts_with("token signature invalid"));
        assert!(problem("Required audience mismatch").starts_with("token is for another service"));
        assert!(problem("JWT compact encoding error").starts_with("token malformed"));
    }
}
