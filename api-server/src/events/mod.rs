//! Domain events: the transactional outbox every mutation writes to (and, later, its relay to Kafka
//! and the live streams fed from it).

pub mod outbox;

pub use outbox::{OutboxEvent, Topic};
