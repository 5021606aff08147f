//! Users, browser sessions and API keys. Secrets are never stored: passwords as argon2 hashes,
//! session tokens and API keys as SHA-256 (they are long random strings, so a fast hash is safe).

use glmtune_shared::api::{ApiKey, Role, User};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{new_id, now, Db, DbError, DbResult};

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn role_of(row: &AnyRow, table: &'static str) -> DbResult<Role> {
    let text: String = row.try_get("role")?;
    Role::parse(&text).ok_or_else(|| DbError::Corrupt {
        table,
        column: "role",
        message: format!("unknown role {text:?}"),
    })
}

fn user_of(row: &AnyRow) -> DbResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: role_of(row, "users")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_of(row: &AnyRow) -> DbResult<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: role_of(row, "api_keys")?,
        prefix: row.try_get("prefix")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    pub async fn count_users(&self) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a user; `None` when the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> DbResult<Option<User>> {
        let user = User {
            id: new_id("user-"),
            username: username.to_owned(),
            role,
            created_at: now(),
        };
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(user.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((inserted == 1).then_some(user))
    }

    /// The user and their password hash.
    pub async fn user_by_name(&self, username: &str) -> DbResult<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((user_of(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn user(&self, id: &str) -> DbResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_of).transpose()
    }

    pub async fn users(&self) -> DbResult<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_of).collect()
    }

    pub async fn delete_user(&self, id: &str) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM sessions WHERE user_id = $1",
            "DELETE FROM api_keys WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    pub async fn create_session(
        &self,
        user_id: &str,
        token: &str,
        csrf_token: &str,
        lifetime_s: i64,
    ) -> DbResult<()> {
        // Expired sessions go as new ones come, so the table holds only live ones.
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sha256_hex(token))
        .bind(user_id)
        .bind(csrf_token)
        .bind(now())
        .bind(now() + lifetime_s)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The signed-in user and the session's CSRF token, if the session is live.
    pub async fn session(&self, token: &str) -> DbResult<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT users.*, sessions.csrf_token AS csrf_token FROM sessions JOIN users ON users.id = sessions.user_id WHERE sessions.token_hash = $1 AND sessions.expires_at > $2",
        )
        .bind(sha256_hex(token))
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((user_of(&row)?, row.try_get("csrf_token")?)))
            .transpose()
    }

    pub async fn delete_session(&self, token: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(sha256_hex(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn create_api_key(
        &self,
        name: &str,
        role: Role,
        user_id: Option<&str>,
        secret: &str,
    ) -> DbResult<ApiKey> {
        let key = ApiKey {
            id: new_id("key-"),
            name: name.to_owned(),
            role,
            prefix: secret.chars().take(12).collect(),
            user_id: user_id.map(str::to_owned),
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, prefix, role, user_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(sha256_hex(secret))
        .bind(&key.prefix)
        .bind(role.as_str())
        .bind(key.user_id.clone())
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    pub async fn api_key_by_secret(&self, secret: &str) -> DbResult<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(sha256_hex(secret))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_of).transpose()
    }

    /// Live keys; a user's own unless `user_id` is `None` (all).
    pub async fn api_keys(&self, user_id: Option<&str>) -> DbResult<Vec<ApiKey>> {
        let rows = match user_id {
            Some(user) => {
                sqlx::query("SELECT * FROM api_keys WHERE revoked_at IS NULL AND user_id = $1 ORDER BY created_at, id")
                    .bind(user)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(key_of).collect()
    }

    pub async fn api_key(&self, id: &str) -> DbResult<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_of).transpose()
    }

    pub async fn revoke_api_key(&self, id: &str) -> DbResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(done == 1)
    }
}
