//! Chat sessions bound to a model (and a run's adapter), with their messages in order.

use glmtune_shared::api::{Chat, ChatMessageRecord};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{last_seq_locked, now, Db, DbResult};

fn chat_of(row: &AnyRow) -> DbResult<Chat> {
    Ok(Chat {
        id: row.try_get("id")?,
        model: row.try_get("model")?,
        run_id: row.try_get("run_id")?,
        title: row.try_get("title")?,
        system: row.try_get("system")?,
        owner_id: row.try_get("owner_id")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    pub async fn insert_chat(&self, chat: &Chat) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO chats (id, model, run_id, title, owner_id, created_at, system) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&chat.id)
        .bind(&chat.model)
        .bind(chat.run_id.clone())
        .bind(&chat.title)
        .bind(chat.owner_id.clone())
        .bind(chat.created_at)
        .bind(chat.system.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn chat(&self, id: &str) -> DbResult<Option<Chat>> {
        let row = sqlx::query("SELECT * FROM chats WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(chat_of).transpose()
    }

    /// A user's chats (all when `owner` is `None`).
    pub async fn chats(&self, owner: Option<&str>) -> DbResult<Vec<Chat>> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query("SELECT * FROM chats WHERE owner_id = $1 ORDER BY created_at DESC, id")
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM chats ORDER BY created_at DESC, id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(chat_of).collect()
    }

    pub async fn delete_chat(&self, id: &str) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM chat_messages WHERE chat_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM chats WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }

    pub async fn chat_messages(&self, chat_id: &str) -> DbResult<Vec<ChatMessageRecord>> {
        let rows = sqlx::query("SELECT * FROM chat_messages WHERE chat_id = $1 ORDER BY seq")
            .bind(chat_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ChatMessageRecord {
                    role: row.try_get("role")?,
                    content: row.try_get("content")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Appends a question and its answer together, so a chat never holds half a turn.
    pub async fn append_turn(&self, chat_id: &str, question: &str, answer: &str) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        let last = last_seq_locked(&mut tx, "chats", "chat_messages", "chat_id", chat_id).await?;
        for (offset, (role, content)) in [("user", question), ("assistant", answer)]
            .into_iter()
            .enumerate()
        {
            sqlx::query(
                "INSERT INTO chat_messages (chat_id, seq, role, content, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(chat_id)
            .bind(last + 1 + offset as i64)
            .bind(role)
            .bind(content)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
