//! Signing in and out, first-run setup, users (admins) and API keys.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glmtune_shared::api::{
    ApiKey, AuthStatus, CreateApiKey, CreateUser, CreatedApiKey, List, LoginRequest, Me, Role,
    SessionInfo, SetupRequest, User,
};

use crate::serve::auth::{self, Caller, SESSION_COOKIE};
use crate::serve::{ApiError, AppState};

/// The longest password accepted, in characters: argon2 takes any length, but a sign-in must not
/// make the server hash megabytes.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// `Secure` when the browser reached us over HTTPS, so that the cookie never travels in clear.
fn session_cookie(token: &str, max_age: i64, secure: bool) -> String {
    use axum_extra::extract::cookie::{Cookie, SameSite};
    use cookie::time;
    Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time::Duration::seconds(max_age))
        .secure(secure)
        .build()
        .to_string()
}

async fn start_session(
    state: &AppState,
    user: User,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // Always a new token from the server: a session id planted before sign-in (fixation) is
    // never the one that gets signed in.
    let token = auth::new_secret("");
    let csrf_token = auth::new_secret("");
    let lifetime = state.settings.session_seconds;
    state
        .db
        .create_session(&user.id, &token, &csrf_token, lifetime)
        .await?;
    Ok((
        [(
            header::SET_COOKIE,
            session_cookie(&token, lifetime, auth::over_https(state, headers)),
        )],
        Json(SessionInfo { user, csrf_token }),
    )
        .into_response())
}

fn check_credentials(username: &str, password: &str) -> Result<(), ApiError> {
    if username.trim().is_empty() || username.len() > 64 {
        return Err(ApiError::invalid("username: 1 to 64 characters"));
    }
    if password.chars().count() < 8 {
        return Err(ApiError::invalid("password: at least 8 characters"));
    }
    check_password_length(password)
}

fn check_password_length(password: &str) -> Result<(), ApiError> {
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!(
            "password: at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/status",
    summary = "Whether first-run setup is needed",
    responses((status = 200, body = AuthStatus))
)]
pub async fn status(State(state): State<AppState>) -> Result<Json<AuthStatus>, ApiError> {
    Ok(Json(AuthStatus {
        setup_needed: state.db.count_users().await? == 0,
        no_auth: state.settings.no_auth,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/setup",
    summary = "Create the first admin with the setup token",
    request_body = SetupRequest,
    responses((status = 200, body = SessionInfo, description = "Signed in; sets the session cookie"))
)]
pub async fn setup(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SetupRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let expected = state.setup_token.lock().clone();
    if expected.is_none() || state.db.count_users().await? > 0 {
        return Err(ApiError::conflict("setup is done: sign in instead"));
    }
    if !expected
        .as_deref()
        .is_some_and(|expected| auth::same_secret(&request.setup_token, expected))
    {
        return Err(ApiError::forbidden(
            "wrong setup token (it is printed at server start)",
        ));
    }
    check_credentials(&request.username, &request.password)?;
    let hash = hash(request.password).await?;
    let user = state
        .db
        .create_user(&request.username, &hash, Role::Admin)
        .await?
        .ok_or_else(|| ApiError::conflict("that username is taken"))?;
    *state.setup_token.lock() = None;
    start_session(&state, user, &headers).await
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    summary = "Sign in; sets the session cookie",
    request_body = LoginRequest,
    responses((status = 200, body = SessionInfo, description = "Signed in; sets the session cookie"))
)]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    check_password_length(&request.password)?;
    let found = state.db.user_by_name(&request.username).await?;
    let password = request.password;
    let (user, hash) = found.map_or((None, None), |(user, hash)| (Some(user), Some(hash)));
    // One argon2 verification whether or not the user exists (against a dummy hash if not).
    let verified =
        tokio::task::spawn_blocking(move || auth::verify_sign_in(&password, hash.as_deref()))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    match user.filter(|_| verified) {
        Some(user) => start_session(&state, user, &headers).await,
        None => Err(ApiError::unauthorized("wrong username or password")),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    summary = "Sign out",
    responses((status = 204, description = "Signed out; clears the session cookie"))
)]
pub async fn logout(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = auth::session_token(&headers) {
        state.db.delete_session(&token).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            session_cookie("", 0, auth::over_https(&state, &headers)),
        )],
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    summary = "The caller",
    responses((status = 200, body = Me))
)]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let user = match &caller.user_id {
        Some(id) => state.db.user(id).await?,
        None => None,
    };
    Ok(Json(Me {
        user,
        role: caller.role,
        principal: caller.principal,
        csrf_token: caller.csrf,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    summary = "List users",
    responses((status = 200, body = List<User>))
)]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<List<User>>, ApiError> {
    Ok(Json(List {
        data: state.db.users().await?,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    summary = "Create a user",
    request_body = CreateUser,
    responses((status = 201, body = User))
)]
pub async fn create_user(
    State(state): State<AppState>,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    check_credentials(&request.username, &request.password)?;
    if request.role == Role::Worker {
        return Err(ApiError::invalid(
            "role: a user cannot be a worker; make a worker key (POST /api/v1/keys) instead",
        ));
    }
    let hash = hash(request.password).await?;
    let user = state
        .db
        .create_user(&request.username, &hash, request.role)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("username {:?} is taken", request.username)))?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    summary = "Delete a user",
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if caller.user_id.as_deref() == Some(id.as_str()) {
        return Err(ApiError::conflict("you cannot delete yourself"));
    }
    if state.db.delete_user(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("user {id} does not exist")))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/keys",
    summary = "List API keys",
    responses((status = 200, body = List<ApiKey>))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<ApiKey>>, ApiError> {
    let owner = if caller.role == Role::Admin {
        None
    } else {
        Some(caller.user_id.clone().unwrap_or_default())
    };
    Ok(Json(List {
        data: state.db.api_keys(owner.as_deref()).await?,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/keys",
    summary = "Create an API key (the secret is shown once)",
    request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey))
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateApiKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if request.name.trim().is_empty() {
        return Err(ApiError::invalid("name: must not be empty"));
    }
    let role = request.role.unwrap_or(caller.role);
    // A worker key leases runs for a machine the server trusts with its datasets: admins only.
    if role == Role::Worker && caller.role != Role::Admin {
        return Err(ApiError::forbidden("role: only an admin makes worker keys"));
    }
    if role > caller.role {
        return Err(ApiError::forbidden(format!(
            "role: a {} cannot make a {} key",
            caller.role.as_str(),
            role.as_str()
        )));
    }
    let secret = auth::new_secret("glm-");
    let key = state
        .db
        .create_api_key(&request.name, role, caller.user_id.as_deref(), &secret)
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key, secret })).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    summary = "Revoke an API key",
    responses((status = 204, description = "Revoked"))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key = state
        .db
        .api_key(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("API key {id} does not exist")))?;
    let own = key.user_id.is_some() && key.user_id == caller.user_id;
    if !(own || caller.role == Role::Admin) {
        return Err(ApiError::forbidden(format!(
            "API key {id} belongs to another user"
        )));
    }
    state.db.revoke_api_key(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
