//! Who is calling, and may they? Every request but `/healthz` and the sign-in routes names its
//! caller: an API key (`Authorization: Bearer KEY`), a browser session cookie (with the CSRF
//! header on anything that changes state), or the implicit local admin of `--no-auth`.
//!
//! What a route needs is decided from its method and path in [`required`], one table the auth
//! matrix test walks route by route. Callers are rate-limited per key or user, and sign-in
//! attempts per client address.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use glmtune_shared::api::Role;
use rand::Rng;

use crate::serve::error::ApiError;
use crate::serve::state::AppState;

pub const SESSION_COOKIE: &str = "glmtune_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The routes that check a password or the setup token.
const SIGN_IN_ROUTES: [&str; 2] = ["/api/v1/auth/login", "/api/v1/auth/setup"];

/// The least a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Anyone (health, sign-in).
    Public,
    /// Any signed-in caller: reads, and inference (which changes nothing stored).
    Read,
    /// A member or admin: creates and changes resources.
    Write,
    /// An admin: users and the server's own disk.
    Admin,
    /// A worker key: leasing runs and reporting on its own leases (and nothing else).
    Worker,
}

impl Need {
    /// The name the OpenAPI document gives it (`x-glmtune-access`).
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Public => "public",
            Need::Read => "read",
            Need::Write => "write",
            Need::Admin => "admin",
            Need::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Caller {
    /// The signed-in user, if the caller is one (keys made by `glmtune token create` are not).
    pub user_id: Option<String>,
    pub role: Role,
    /// The session's CSRF token, for a signed-in browser.
    pub csrf: Option<String>,
    /// Who owns what the caller creates, and the rate-limit bucket: the user's id, else the
    /// key's id, else `local`.
    pub principal: String,
}

impl Caller {
    pub fn allows(&self, need: Need) -> bool {
        match need {
            Need::Public => true,
            Need::Read => self.role != Role::Worker,
            Need::Write => self.role >= Role::Member,
            Need::Admin => self.role == Role::Admin,
            Need::Worker => self.role == Role::Worker,
        }
    }

    /// Members change what they own; admins change anything.
    pub fn may_change(&self, owner: Option<&str>) -> bool {
        self.role == Role::Admin || (self.role == Role::Member && owner == Some(&self.principal))
    }

    pub fn check_owner(&self, owner: Option<&str>, what: &str) -> Result<(), ApiError> {
        if self.may_change(owner) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{what} belongs to another user"
            )))
        }
    }
}

/// The browser's session token, if it sent one.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    axum_extra::extract::CookieJar::from_headers(headers)
        .get(SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim_start();
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer KEY` is as good as `Bearer KEY`.
    let (scheme, secret) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(secret.trim())
}

/// Whether two secrets are equal, in time that does not tell how much of a guess was right.
pub fn same_secret(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Whether the request reached us over HTTPS: only a reverse proxy can say so (`--behind-proxy`
/// trusts its `X-Forwarded-Proto`); the server itself speaks plain HTTP.
pub fn over_https(state: &AppState, headers: &HeaderMap) -> bool {
    state.settings.behind_proxy
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

async fn identify(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Caller>, ApiError> {
    if let Some(secret) = bearer(headers) {
        let key = state
            .db
            .api_key_by_secret(secret)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        return Ok(Some(Caller {
            csrf: None,
            principal: key.user_id.clone().unwrap_or(key.id),
            user_id: key.user_id,
            role: key.role,
        }));
    }
    if let Some(token) = session_token(headers) {
        let (user, csrf) = state
            .db
            .session(&token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the session has expired; sign in again"))?;
        let safe = matches!(*method, Method::GET | Method::HEAD);
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !safe && !sent.is_some_and(|sent| same_secret(sent, &csrf)) {
            return Err(ApiError::forbidden(
                "missing or wrong X-CSRF-Token header for a cookie-authenticated change",
            ));
        }
        return Ok(Some(Caller {
            csrf: Some(csrf),
            user_id: Some(user.id.clone()),
            role: user.role,
            principal: user.id,
        }));
    }
    if state.settings.no_auth {
        return Ok(Some(Caller {
            csrf: None,
            user_id: None,
            role: Role::Admin,
            principal: "local".into(),
        }));
    }
    Ok(None)
}

/// Who the outer middleware found calling: a caller, nobody, or credentials it refused.
#[derive(Clone)]
struct Identity(Result<Option<Caller>, ApiError>);

/// The outer middleware, in front of every request: limits sign-in attempts and identifies the
/// caller; each route then checks its own need ([`enforce`], put there by `routes::router`).
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let (method, headers) = (request.method().clone(), request.headers().clone());
    // Password guessing: sign-in attempts are limited per client address, before any hashing.
    if method == Method::POST && SIGN_IN_ROUTES.contains(&request.uri().path()) {
        let address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |info| info.0.ip().to_string());
        if let Err(error) = state.sign_in_limiter.admit(&address) {
            return error.into_response();
        }
    }
    let identity = identify(&state, &method, &headers).await;
    request.extensions_mut().insert(Identity(identity));
    next.run(request).await
}

/// Why a request is refused before it is even routed (a path no route has): to callers who are
/// not signed in, an unknown API path is as closed as a known one, so they learn no route names.
pub fn refused_unrouted(request: &Request) -> Option<ApiError> {
    match request.extensions().get::<Identity>() {
        Some(Identity(Ok(Some(_)))) => None,
        Some(Identity(Err(error))) => Some(error.clone()),
        _ => Some(ApiError::unauthorized(
            "authentication required: send Authorization: Bearer KEY or sign in",
        )),
    }
}

/// A route's check: the caller its need asks for, then the rate limit.
pub async fn enforce(
    need: Need,
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let identity = request
        .extensions_mut()
        .remove::<Identity>()
        .map_or(Ok(None), |identity| identity.0);
    let caller = match identity {
        Ok(caller) => caller,
        // A stale cookie or a missing CSRF header must not lock anyone out of signing in again.
        Err(_) if need == Need::Public => None,
        Err(error) => return error.into_response(),
    };
    match (need, caller) {
        (Need::Public, caller) => {
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
        }
        (_, None) => {
            return ApiError::unauthorized(
                "authentication required: send Authorization: Bearer KEY or sign in",
            )
            .into_response()
        }
        (need, Some(caller)) => {
            if !caller.allows(need) {
                let what = match need {
                    Need::Admin => "an admin",
                    Need::Worker => "a worker key",
                    Need::Read => "a user or a user's key",
                    _ => "a member or admin",
                };
                return ApiError::forbidden(format!(
                    "this needs {what}; the caller is a {}",
                    caller.role.as_str()
                ))
                .into_response();
            }
            if let Err(error) = state.rate_limiter.admit(&caller.principal) {
                return error.into_response();
            }
            request.extensions_mut().insert(caller);
        }
    }
    next.run(request).await
}

/// The caller, as a handler argument.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("authentication required"))
    }
}

/// Buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 4096;

/// Requests per minute per caller, as a token bucket (a burst of a minute's worth, refilled
/// continuously).
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    pub fn admit(&self, bucket: &str) -> Result<(), ApiError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock();
        let now = Instant::now();
        if buckets.len() >= MAX_BUCKETS {
            // Callers by the thousand (addresses, most likely): forget those whose bucket has
            // refilled, as they would start full anyway.
            buckets.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * per_second < capacity
            });
        }
        let (tokens, last) = buckets.entry(bucket.to_owned()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_second).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / per_second).ceil() as u64;
            Err(ApiError::rate_limited(wait.max(1)))
        }
    }
}

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::encode_b64(&rand::rng().random::<[u8; 16]>())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The hash a sign-in checks a password against when the user does not exist: made with the same
/// parameters as real ones, so that a sign-in costs one argon2 verification whether or not the
/// name exists, and its time does not tell which names do. No password matches it in practice
/// (its own is a random secret, forgotten).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&new_secret("")).unwrap_or_default())
}

/// Checks a sign-in: against the user's hash, or the dummy one when there is no such user, so that
/// both cost the same. True only for an existing user with the right password.
pub fn verify_sign_in(password: &str, hash: Option<&str>) -> bool {
    let verified = verify_password(
        password,
        match hash {
            Some(hash) => hash,
            None => dummy_hash(),
        },
    );
    verified && hash.is_some()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A random secret: `prefix` and 64 hex digits.
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::rng().random::<[u8; 32]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_differ_in_salt() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b);
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn a_missing_user_costs_one_real_verification() {
        // The dummy is a real argon2 hash with the parameters every password gets, so checking
        // against it takes what checking a real one does.
        let real = hash_password("correct horse").unwrap();
        let dummy = PasswordHash::new(dummy_hash()).unwrap();
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
        assert!(!verify_sign_in("correct horse", None));
        let stored = hash_password("correct horse").unwrap();
        assert!(verify_sign_in("correct horse", Some(&stored)));
        assert!(!verify_sign_in("wrong", Some(&stored)));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_secrets_compare_whole() {
        for value in ["Bearer glm-1", "bearer glm-1", "BEARER  glm-1 "] {
            let mut headers = HeaderMap::new();
            headers.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), Some("glm-1"), "{value:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            "Basic Zm9v".parse().unwrap(),
        );
        assert_eq!(bearer(&headers), None);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc") && !same_secret("ab", "abc") && !same_secret("", "abc"));
    }

    #[test]
    fn rate_limit_refuses_past_the_burst() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.admit("k").is_ok());
        }
        assert!(limiter.admit("k").is_err());
        assert!(limiter.admit("other").is_ok());
    }

    #[test]
    fn refilled_buckets_are_forgotten_past_the_limit() {
        // A bucket refills in microseconds at this rate.
        let limiter = RateLimiter::new(600_000_000);
        for address in 0..MAX_BUCKETS {
            assert!(limiter.admit(&address.to_string()).is_ok());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(limiter.admit("one more").is_ok());
        assert_eq!(limiter.buckets.lock().len(), 1);
    }

    #[test]
    fn roles_allow_what_their_need_says() {
        let viewer = Caller {
            csrf: None,
            user_id: Some("u".into()),
            role: Role::Viewer,
            principal: "u".into(),
        };
        assert!(viewer.allows(Need::Read) && !viewer.allows(Need::Write));
        assert!(!viewer.may_change(Some("u")));
    }
}
