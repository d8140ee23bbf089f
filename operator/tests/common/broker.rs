//! A throwaway Kafka-protocol broker for tests: the workspace test kit's tansu process on a free port,
//! killed when dropped. Fails loudly when no tansu binary exists (tests must not skip silently).

// Each operator test file is its own binary and not every one starts a broker.
#[allow(unused_imports)]
pub use plamatio_testkit::{TansuBroker as Broker, free_port};
