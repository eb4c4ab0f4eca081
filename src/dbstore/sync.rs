//! Following the change log (SPEC §10): one `LISTEN` connection per replica; on every
//! notification, every reconnect and every `poll_interval` (a notification can be lost), the
//! replica compares the last revision with the one it applied and, when behind, loads the stored
//! vaults and swaps in a new store. While the database is unreachable the replica keeps the store
//! it has (fail static) and tries again.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::AsyncMessage;
use tracing::{debug, info, warn};

use super::{CHANNEL, Database};
use crate::live::Live;

/// The wait before connecting again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Runs until shutdown.
pub async fn follow(
    live: Arc<Live>,
    database: Arc<Database>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let session = listen(&live, &database, poll);
        tokio::select! {
            () = session => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One `LISTEN` connection's life: returns when it breaks.
async fn listen(live: &Live, database: &Database, poll: Duration) {
    let (client, mut connection) = match database.connect().await {
        Ok(pair) => pair,
        Err(e) => {
            live.database_failed("listen", &e);
            return;
        }
    };
    let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    debug!(revision = n.payload(), "change notified");
                    let _ = notified.send(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return warn!(error = %e, "database LISTEN connection ended"),
                None => return,
            }
        }
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        live.database_failed("listen", &e.into());
        driver.abort();
        return;
    }
    info!("following the database's change log");
    // Everything missed while not listening.
    catch_up(live, database).await;
    loop {
        tokio::select! {
            message = notifications.recv() => {
                if message.is_none() {
                    break;
                }
            }
            () = tokio::time::sleep(poll) => {}
        }
        if client.is_closed() {
            break;
        }
        catch_up(live, database).await;
    }
    driver.abort();
}

async fn catch_up(live: &Live, database: &Database) {
    live.catch_up(database).await;
}
