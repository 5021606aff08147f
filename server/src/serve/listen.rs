//! Events told by other servers on the same PostgreSQL database: each new run event is announced
//! with `pg_notify` (`db::runs::EVENTS_CHANNEL`), and this task wakes this server's event streams
//! when one comes, so a dashboard connected here follows a run that another server, or a worker
//! reporting to it, is writing. (SQLite is one server's; its streams are woken by its own writes.)

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::db::runs::EVENTS_CHANNEL;
use crate::serve::supervisor::Handle;

/// Listens on `url` for as long as the server runs, connecting again after a failure.
pub fn start(url: String, supervisor: Arc<Handle>) {
    tokio::spawn(async move {
        loop {
            match listen(&url, &supervisor).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!("listening for other servers' events: {error}; again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

async fn listen(url: &str, supervisor: &Handle) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(EVENTS_CHANNEL).await?;
    loop {
        if supervisor
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        // Woken at least every few seconds to see whether the server is stopping.
        if let Ok(notification) =
            tokio::time::timeout(Duration::from_secs(2), listener.recv()).await
        {
            notification?;
            supervisor.events.notify_waiters();
        }
    }
}
