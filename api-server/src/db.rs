//! PostgreSQL connection pool, database creation and the embedded sqlx migrations (schema + seed).

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Creates the database named in the URL when it does not exist yet.
pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
    if !Postgres::database_exists(url).await? {
        tracing::info!("creating database");
        if let Err(error) = Postgres::create_database(url).await {
            // Another replica may have created it in the meantime.
            if !Postgres::database_exists(url).await? {
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Opens the pool (creating the database if needed).
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    ensure_database(&config.database_url).await?;
    PgPoolOptions::new()
        .max_connections(config.database_pool_size.max(1))
        .min_connections(1)
        .acquire_timeout(config.acquire_timeout())
        .connect(&config.database_url)
        .await
}

/// Applies pending migrations; safe to run from several replicas at once (sqlx takes an advisory
/// lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
