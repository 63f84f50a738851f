//! One contract for every `Store` backend: SQLite on disk, and the Scylla backend driving a real
//! CQL server (kassandra, in-process on loopback). Each Scylla test uses its own keyspace.

mod cases;
mod scylla;
mod sqlite;
