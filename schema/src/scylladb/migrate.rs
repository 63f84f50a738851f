//! Numbered CQL migrations, applied in order and recorded in `schema_migrations`.

use scylla::client::session::Session;

use super::config::ScyllaOptions;
use crate::store::{StoreError, boxed};

/// (version, name, CQL text with `{ttl_seconds}` and `{window_days}` placeholders).
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "create_tallies", include_str!("../../cql/0001_create_tallies.cql")),
    (2, "create_verdicts_and_alerts", include_str!("../../cql/0002_create_verdicts_and_alerts.cql")),
    (3, "create_progress_and_heartbeats", include_str!("../../cql/0003_create_progress_and_heartbeats.cql")),
    (4, "create_changes", include_str!("../../cql/0004_create_changes.cql")),
    (5, "create_cusum_states", include_str!("../../cql/0005_create_cusum_states.cql")),
    (6, "create_verdict_owners", include_str!("../../cql/0006_create_verdict_owners.cql")),
    (7, "create_tally_sketches", include_str!("../../cql/0007_create_tally_sketches.cql")),
];

/// The statements of one migration file, placeholders filled, comments dropped.
pub fn statements(cql: &str, options: &ScyllaOptions) -> Vec<String> {
    let window_days = (options.retention_days / 14).max(1);
    let text: String = cql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{ttl_seconds}", &options.ttl_seconds().to_string())
        .replace("{window_days}", &window_days.to_string());
    text.split(';').map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|s| !s.is_empty()).collect()
}

fn fail(version: u32) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> StoreError {
    move |source| StoreError::Migrate { version, source }
}

/// Create the keyspace if needed, then apply every migration not yet recorded. Idempotent.
/// Returns the versions applied by this call.
pub async fn migrate(session: &Session, options: &ScyllaOptions) -> Result<Vec<u32>, StoreError> {
    let keyspace = &options.keyspace;
    let create =
        format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}", options.replication.to_cql());
    session.query_unpaged(create, ()).await.map_err(|e| fail(0)(boxed(e)))?;
    session.use_keyspace(keyspace, false).await.map_err(|e| fail(0)(boxed(e)))?;
    session
        .query_unpaged("CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text)", ())
        .await
        .map_err(|e| fail(0)(boxed(e)))?;
    let applied = applied_versions(session).await?;
    let mut done = Vec::new();
    for (version, name, cql) in MIGRATIONS.iter().filter(|(v, ..)| !applied.contains(v)) {
        for statement in statements(cql, options) {
            session.query_unpaged(statement, ()).await.map_err(|e| fail(*version)(boxed(e)))?;
        }
        session
            .query_unpaged("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (*version as i32, *name))
            .await
            .map_err(|e| fail(*version)(boxed(e)))?;
        tracing::info!(version, name, keyspace, "applied cql migration");
        done.push(*version);
    }
    Ok(done)
}

/// Versions recorded in `schema_migrations` of the session's keyspace.
pub async fn applied_versions(session: &Session) -> Result<Vec<u32>, StoreError> {
    let read = |source| StoreError::ReadSchemaVersion { source };
    let result =
        session.query_unpaged("SELECT version FROM schema_migrations", ()).await.map_err(|e| read(boxed(e)))?;
    let rows = result.into_rows_result().map_err(|e| read(boxed(e)))?;
    let mut versions = Vec::new();
    for row in rows.rows::<(i32,)>().map_err(|e| read(boxed(e)))? {
        versions.push(row.map_err(|e| read(boxed(e)))?.0 as u32);
    }
    versions.sort_unstable();
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_filled_and_stripped() {
        let options = ScyllaOptions { retention_days: 28, ..ScyllaOptions::default() };
        let all: Vec<String> = MIGRATIONS.iter().flat_map(|(_, _, cql)| statements(cql, &options)).collect();
        assert_eq!(all.len(), 13, "{all:#?}");
        assert!(all.iter().all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS")));
        assert!(all[0].contains("default_time_to_live = 2419200"), "{}", all[0]);
        assert!(all[0].contains("'compaction_window_size': 2"), "{}", all[0]);
        assert!(all[0].contains("PRIMARY KEY ((topic, bucket_start_ms), tier, agent_id)"));
        assert!(all.iter().all(|s| !s.contains("--") && !s.contains('{') || s.contains("compaction")));
        assert!(!all.iter().any(|s| s.to_lowercase().contains("counter")), "no counter columns");
    }
}
