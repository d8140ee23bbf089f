//! The contract between the store API and the operator, written once: the environment variables the
//! operator sets on the API's pods (and the API reads), the Kafka topic names both sides use, and
//! the wire strings of the settings that cross the boundary (user-auth modes, Kafka security
//! protocols and SASL mechanisms). No dependencies: both crates use it and nothing else.

/// Environment variables of the API that the operator sets.
pub mod env {
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const DATABASE_POOL_SIZE: &str = "DATABASE_POOL_SIZE";
    pub const PORT: &str = "PORT";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    /// Read by the log filter, not by the command line.
    pub const RUST_LOG: &str = "RUST_LOG";
    pub const API_KEYS: &str = "PLAMATIO_API_KEYS";
    pub const CACHE_TTL_SECONDS: &str = "PLAMATIO_CACHE_TTL_SECONDS";
    pub const CORS_ORIGINS: &str = "PLAMATIO_CORS_ORIGINS";
    pub const RATE_LIMIT_PER_MINUTE: &str = "PLAMATIO_RATE_LIMIT_PER_MINUTE";
    pub const TRUSTED_PROXIES: &str = "PLAMATIO_TRUSTED_PROXIES";
    pub const USER_AUTH: &str = "PLAMATIO_USER_AUTH";
    pub const USER_JWKS_URL: &str = "PLAMATIO_USER_JWKS_URL";
    pub const USER_JWT_ISSUER: &str = "PLAMATIO_USER_JWT_ISSUER";
    pub const USER_JWT_AUDIENCE: &str = "PLAMATIO_USER_JWT_AUDIENCE";
    pub const REDIS_URL: &str = "REDIS_URL";
    pub const KAFKA_BOOTSTRAP_SERVERS: &str = "KAFKA_BOOTSTRAP_SERVERS";
    pub const KAFKA_SECURITY_PROTOCOL: &str = "KAFKA_SECURITY_PROTOCOL";
    pub const KAFKA_SASL_MECHANISM: &str = "KAFKA_SASL_MECHANISM";
    /// `<prefix>_USERNAME` and `<prefix>_PASSWORD` carry the SASL credentials.
    pub const KAFKA_SASL_CREDENTIALS_PREFIX: &str = "KAFKA_SASL";
    pub const KAFKA_SASL_USERNAME: &str = "KAFKA_SASL_USERNAME";
    pub const KAFKA_SASL_PASSWORD: &str = "KAFKA_SASL_PASSWORD";
    pub const KAFKA_TOPIC_PREFIX: &str = "KAFKA_TOPIC_PREFIX";
    pub const KAFKA_CREATE_TOPICS: &str = "KAFKA_CREATE_TOPICS";
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    /// Which requests are traced (OpenTelemetry's standard sampler names).
    pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
}

/// The Kafka topics of a store (before its prefix), in the order the operator lists them.
pub mod topics {
    pub const CART_UPDATES: &str = "cart_updates";
    pub const ORDERS_UPDATES: &str = "orders_updates";
    pub const USERS_UPDATES: &str = "users_updates";
    pub const PRODUCTS_UPDATES: &str = "products_updates";
    pub const USER_EVENTS: &str = "user_events";
    pub const ALL: [&str; 5] = [
        CART_UPDATES,
        ORDERS_UPDATES,
        USERS_UPDATES,
        PRODUCTS_UPDATES,
        USER_EVENTS,
    ];
}

/// Values of `PLAMATIO_USER_AUTH` (`spec.api.userAuth.mode`).
pub mod user_auth {
    pub const OFF: &str = "off";
    pub const OPTIONAL: &str = "optional";
    pub const REQUIRED: &str = "required";
    pub const ALL: [&str; 3] = [OFF, OPTIONAL, REQUIRED];
}

/// Values of `KAFKA_SECURITY_PROTOCOL` (`spec.kafka.securityProtocol`).
pub mod security_protocol {
    pub const PLAINTEXT: &str = "plaintext";
    pub const SSL: &str = "ssl";
    pub const SASL_SSL: &str = "sasl_ssl";
    pub const SASL_PLAINTEXT: &str = "sasl_plaintext";
    pub const ALL: [&str; 4] = [PLAINTEXT, SSL, SASL_SSL, SASL_PLAINTEXT];
}

/// Values of `KAFKA_SASL_MECHANISM` (`spec.kafka.saslMechanism`).
pub mod sasl_mechanism {
    pub const PLAIN: &str = "PLAIN";
    pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
    pub const SCRAM_SHA_512: &str = "SCRAM-SHA-512";
    pub const ALL: [&str; 3] = [PLAIN, SCRAM_SHA_256, SCRAM_SHA_512];
}
