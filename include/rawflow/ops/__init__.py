"""Operations units that keep the catalogue and the storage honest: reconciliation against the Tier-0
listing (nothing lost when the broker loses its log) and consistency audits at the destinations (dark and
lost files). Each is a run-once unit that DAG tasks, the CLI and the tests call."""
