//! A throwaway Kafka-protocol broker for tests: the workspace test kit's tansu process on a free port,
//! killed when dropped. Fails loudly when no tansu binary exists (tests must not skip silently).

pub use plamatio_testkit::{TansuBroker as Broker, free_port};
