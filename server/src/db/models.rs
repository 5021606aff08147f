//! Registered base models: a name for a checkpoint folder on the server's disk.

use glmtune_shared::api::ModelInfo;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now, Db, DbError, DbResult};

/// What the list shows of a model's `config.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Models registered before generations were told apart are ChatGLM-6B.
    #[serde(default = "glm_family")]
    pub family: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub vocab_size: usize,
}

fn glm_family() -> String {
    glmtune_engine::config::Family::ChatGlm.name().into()
}

fn model_of(row: &AnyRow) -> DbResult<ModelInfo> {
    let text: String = row.try_get("summary")?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| DbError::Corrupt {
        table: "models",
        column: "summary",
        message: e.to_string(),
    })?;
    Ok(ModelInfo {
        name: row.try_get("name")?,
        path: row.try_get("path")?,
        adapter: row.try_get("adapter")?,
        family: summary.family,
        hidden_size: summary.hidden_size,
        num_layers: summary.num_layers,
        num_attention_heads: summary.num_attention_heads,
        vocab_size: summary.vocab_size,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    /// Registers or re-points a model (idempotent for the same folder).
    pub async fn upsert_model(
        &self,
        name: &str,
        path: &str,
        adapter: Option<&str>,
        summary: Summary,
    ) -> DbResult<()> {
        let summary = serde_json::to_string(&summary).map_err(|e| DbError::Corrupt {
            table: "models",
            column: "summary",
            message: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO models (name, path, adapter, summary, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET path = excluded.path, adapter = excluded.adapter, summary = excluded.summary",
        )
        .bind(name)
        .bind(path)
        .bind(adapter.map(str::to_owned))
        .bind(summary)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn models(&self) -> DbResult<Vec<ModelInfo>> {
        let rows = sqlx::query("SELECT * FROM models ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(model_of).collect()
    }

    pub async fn model(&self, name: &str) -> DbResult<Option<ModelInfo>> {
        let row = sqlx::query("SELECT * FROM models WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(model_of).transpose()
    }
}
