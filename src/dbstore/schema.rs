//! The schema and its migrations, versioned and applied in order under an advisory lock, so
//! replicas that start at once wait for one another instead of racing.

use tokio_postgres::Client;

/// The lock held while migrating (distinct from the write lock).
const MIGRATE_LOCK: i64 = 0x6b65_7973_7761_7002;

/// Each migration, by version (1-based); never edited once released, only appended to.
const MIGRATIONS: &[&str] = &[
    // 1: vaults and credentials as rows (secrets sealed apart), the change log, the key check.
    "CREATE TABLE keyswap_meta (
        id int PRIMARY KEY CHECK (id = 1),
        key_check bytea NOT NULL
     );
     CREATE TABLE keyswap_vaults (
        id text PRIMARY KEY,
        position int NOT NULL,
        body text NOT NULL,
        version bigint NOT NULL DEFAULT 1
     );
     CREATE TABLE keyswap_credentials (
        id text PRIMARY KEY,
        vault_id text NOT NULL REFERENCES keyswap_vaults (id) ON DELETE CASCADE,
        position int NOT NULL,
        body text NOT NULL,
        secrets bytea NOT NULL,
        version bigint NOT NULL DEFAULT 1
     );
     CREATE TABLE keyswap_changes (
        revision bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        origin text NOT NULL
     );",
];

/// Applies the migrations this database has not had yet.
pub async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    let result = apply(client).await;
    // Unlocked whatever happened; a broken connection releases it anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
        .await;
    result
}

async fn apply(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS keyswap_migrations (
                version int PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let done: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM keyswap_migrations",
            &[],
        )
        .await?
        .get(0);
    for (version, sql) in (1i32..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(done).unwrap_or(0))
    {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO keyswap_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}
