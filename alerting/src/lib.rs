//! Alert model, outbox and sinks (built in a later issue).
