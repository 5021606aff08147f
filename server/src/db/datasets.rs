//! Dataset rows. The bytes live in the content-addressed blob store under their SHA-256.

use glmtune_shared::api::{Dataset, ReadOptions};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Db, DbError, DbResult};

fn json_column<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &'static str) -> DbResult<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| DbError::Corrupt {
        table: "datasets",
        column,
        message: e.to_string(),
    })
}

fn dataset_of(row: &AnyRow) -> DbResult<Dataset> {
    let stats: Option<String> = row.try_get("stats")?;
    let derivation: Option<String> = row.try_get("derivation")?;
    Ok(Dataset {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        sha256: row.try_get("sha256")?,
        bytes: row.try_get("bytes")?,
        format: row.try_get("format")?,
        read_options: json_column::<ReadOptions>(row, "read_options")?,
        records: row.try_get("records")?,
        skipped_empty: row.try_get("skipped_empty")?,
        purpose: row.try_get("purpose")?,
        owner_id: row.try_get("owner_id")?,
        created_at: row.try_get("created_at")?,
        stats: stats.and_then(|s| serde_json::from_str(&s).ok()),
        preview: json_column(row, "preview")?,
        parent_id: row.try_get("parent_id")?,
        derivation: derivation
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| DbError::Corrupt {
                table: "datasets",
                column: "derivation",
                message: e.to_string(),
            })?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

impl Db {
    pub async fn insert_dataset(&self, dataset: &Dataset) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO datasets (id, name, sha256, bytes, format, read_options, records, skipped_empty, purpose, owner_id, stats, preview, created_at, parent_id, derivation) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&dataset.id)
        .bind(&dataset.name)
        .bind(&dataset.sha256)
        .bind(dataset.bytes)
        .bind(&dataset.format)
        .bind(to_json(&dataset.read_options))
        .bind(dataset.records)
        .bind(dataset.skipped_empty)
        .bind(&dataset.purpose)
        .bind(dataset.owner_id.clone())
        .bind(dataset.stats.as_ref().map(to_json))
        .bind(to_json(&dataset.preview))
        .bind(dataset.created_at)
        .bind(dataset.parent_id.clone())
        .bind(dataset.derivation.as_ref().map(to_json))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn datasets(&self) -> DbResult<Vec<Dataset>> {
        let rows = sqlx::query("SELECT * FROM datasets ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(dataset_of).collect()
    }

    pub async fn dataset(&self, id: &str) -> DbResult<Option<Dataset>> {
        let row = sqlx::query("SELECT * FROM datasets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(dataset_of).transpose()
    }

    /// Removes the row; the blob stays while another row names it.
    pub async fn delete_dataset(&self, id: &str) -> DbResult<bool> {
        let done = sqlx::query("DELETE FROM datasets WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(done == 1)
    }

    pub async fn datasets_using_blob(&self, sha256: &str) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM datasets WHERE sha256 = $1")
            .bind(sha256)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}
