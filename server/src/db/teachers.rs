//! Teachers and teaching jobs. A teacher's sealed key is read only by the job runner; every
//! answer shows [`Teacher`], which has none.

use glmtune_shared::teach::{TeachJob, TeachJobState, TeachRequest, Teacher};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now, Db, DbError, DbResult};

fn corrupt(table: &'static str, column: &'static str, message: impl Into<String>) -> DbError {
    DbError::Corrupt {
        table,
        column,
        message: message.into(),
    }
}

fn teacher_of(row: &AnyRow) -> DbResult<Teacher> {
    let sealed: Option<String> = row.try_get("sealed_key")?;
    let count = |column: &'static str, value: i64| {
        u64::try_from(value).map_err(|_| corrupt("teachers", column, value.to_string()))
    };
    let rpm: Option<i64> = row.try_get("requests_per_minute")?;
    Ok(Teacher {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        base_url: row.try_get("base_url")?,
        model: row.try_get("model")?,
        has_key: sealed.is_some(),
        key_env: row.try_get("key_env")?,
        concurrency: count("concurrency", row.try_get("concurrency")?)?,
        requests_per_minute: rpm.map(|v| count("requests_per_minute", v)).transpose()?,
        owner_id: row.try_get("owner_id")?,
        created_at: row.try_get("created_at")?,
    })
}

fn job_of(row: &AnyRow) -> DbResult<TeachJob> {
    let state: String = row.try_get("state")?;
    let request: String = row.try_get("request")?;
    Ok(TeachJob {
        id: row.try_get("id")?,
        dataset_id: row.try_get("dataset_id")?,
        request: serde_json::from_str::<TeachRequest>(&request)
            .map_err(|e| corrupt("teach_jobs", "request", e.to_string()))?,
        state: TeachJobState::parse(&state).ok_or_else(|| corrupt("teach_jobs", "state", state))?,
        error: row.try_get("error")?,
        made_dataset: row.try_get("made_dataset")?,
        written: 0,
        report: None,
        preview: None,
        owner_id: row.try_get("owner_id")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

impl Db {
    pub async fn insert_teacher(
        &self,
        teacher: &Teacher,
        sealed_key: Option<&str>,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO teachers (id, name, base_url, model, sealed_key, key_env, concurrency, requests_per_minute, owner_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&teacher.id)
        .bind(&teacher.name)
        .bind(&teacher.base_url)
        .bind(&teacher.model)
        .bind(sealed_key.map(str::to_owned))
        .bind(teacher.key_env.clone())
        .bind(teacher.concurrency as i64)
        .bind(teacher.requests_per_minute.map(|v| v as i64))
        .bind(teacher.owner_id.clone())
        .bind(teacher.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn teachers(&self) -> DbResult<Vec<Teacher>> {
        let rows = sqlx::query("SELECT * FROM teachers ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(teacher_of).collect()
    }

    /// A teacher and its sealed key.
    pub async fn teacher(&self, id: &str) -> DbResult<Option<(Teacher, Option<String>)>> {
        let row = sqlx::query("SELECT * FROM teachers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((teacher_of(&row)?, row.try_get("sealed_key")?)))
            .transpose()
    }

    pub async fn delete_teacher(&self, id: &str) -> DbResult<bool> {
        let gone = sqlx::query("DELETE FROM teachers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(gone == 1)
    }

    pub async fn insert_teach_job(&self, job: &TeachJob) -> DbResult<()> {
        let request = serde_json::to_string(&job.request)
            .map_err(|e| corrupt("teach_jobs", "request", e.to_string()))?;
        sqlx::query(
            "INSERT INTO teach_jobs (id, dataset_id, request, state, error, made_dataset, owner_id, created_at, finished_at) \
             VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6, NULL)",
        )
        .bind(&job.id)
        .bind(&job.dataset_id)
        .bind(request)
        .bind(job.state.as_str())
        .bind(job.owner_id.clone())
        .bind(job.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn teach_job(&self, id: &str) -> DbResult<Option<TeachJob>> {
        let row = sqlx::query("SELECT * FROM teach_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_of).transpose()
    }

    pub async fn teach_jobs_in_state(&self, state: TeachJobState) -> DbResult<Vec<TeachJob>> {
        let rows = sqlx::query("SELECT * FROM teach_jobs WHERE state = $1 ORDER BY created_at, id")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_of).collect()
    }

    /// Moves a job from `from` to `to` (with its error or the dataset it made); false when it was
    /// not in `from`.
    pub async fn teach_job_transition(
        &self,
        id: &str,
        from: TeachJobState,
        to: TeachJobState,
        error: Option<&str>,
        made_dataset: Option<&str>,
    ) -> DbResult<bool> {
        let finished = matches!(to, TeachJobState::Succeeded | TeachJobState::Failed).then(now);
        let moved = sqlx::query(
            "UPDATE teach_jobs SET state = $1, error = $2, made_dataset = $3, finished_at = $4 WHERE id = $5 AND state = $6",
        )
        .bind(to.as_str())
        .bind(error.map(str::to_owned))
        .bind(made_dataset.map(str::to_owned))
        .bind(finished)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(moved == 1)
    }
}
