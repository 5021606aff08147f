//! The runs a server trains itself hold leases too, in its name (`HOST:PID:NONCE`), renewed while
//! they train: servers sharing a database leave each other's runs alone, and a run whose server
//! died goes back to the queue (at once when that server starts again on the same host, else when
//! its lease runs out) to resume from its last checkpoint.

use glmtune_shared::api::RunState;
use sqlx::Row;

use super::runs::transition_in;
use super::{new_id, now_ms, Db, DbResult};

impl Db {
    /// Claims the queued run `run_id` for the server `server` until `ttl_ms` from now; false when
    /// another server or a worker took it first.
    pub async fn claim_run(&self, run_id: &str, server: &str, ttl_ms: i64) -> DbResult<bool> {
        let mut tx = self.pool.begin().await?;
        let claimed = transition_in(
            &mut tx,
            run_id,
            RunState::Queued,
            RunState::Running,
            None,
            "running",
            None,
        )
        .await?;
        if claimed {
            sqlx::query(
                "UPDATE runs SET lease_id = $1, lease_expires_ms = $2, lease_server = $3 WHERE id = $4",
            )
            .bind(new_id("lease-"))
            .bind(now_ms() + ttl_ms)
            .bind(server)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Renews the leases of the runs `server` trains; returns the runs it still holds (a run
    /// missing from them was taken back: its lease ran out while the server could not renew it).
    pub async fn renew_server_leases(&self, server: &str, ttl_ms: i64) -> DbResult<Vec<String>> {
        let now = now_ms();
        sqlx::query(
            "UPDATE runs SET lease_expires_ms = $1 WHERE lease_server = $2 AND state = 'running' AND lease_expires_ms >= $3",
        )
        .bind(now + ttl_ms)
        .bind(server)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query("SELECT id FROM runs WHERE lease_server = $1 AND state = 'running'")
            .bind(server)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    /// At a server's start: puts back in the queue the runs left `running` by a server from before
    /// leases, or by one that `abandoned` says is gone (an earlier start of this server); returns
    /// their ids.
    pub async fn requeue_abandoned(
        &self,
        abandoned: impl Fn(&str) -> bool,
        message: &str,
    ) -> DbResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id, lease_id, lease_server FROM runs WHERE state = 'running' AND worker_id IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut requeued = Vec::new();
        for row in rows {
            let id: String = row.try_get("id")?;
            let lease: Option<String> = row.try_get("lease_id")?;
            let server: Option<String> = row.try_get("lease_server")?;
            let gone = match (&lease, &server) {
                (None, _) => true,
                (Some(_), Some(server)) => abandoned(server),
                (Some(_), None) => false,
            };
            if !gone {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            // Conditional on the same lease (or none): a server that just claimed it keeps it.
            let same = sqlx::query(
                "SELECT id FROM runs WHERE id = $1 AND state = 'running' AND lease_id IS NOT DISTINCT FROM $2",
            )
            .bind(&id)
            .bind(&lease)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if same
                && transition_in(
                    &mut tx,
                    &id,
                    RunState::Running,
                    RunState::Queued,
                    None,
                    message,
                    None,
                )
                .await?
            {
                requeued.push(id);
            }
            tx.commit().await?;
        }
        Ok(requeued)
    }
}
