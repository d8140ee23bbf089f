//! The API side of the API↔operator contract (`plamatio-contract`): every environment variable the
//! operator sets is one `serve` reads, and the wire strings `serve` accepts for user auth, Kafka
//! security protocols and SASL mechanisms, and the topic names it produces to, are exactly the
//! contract's. (The operator's tests tie the CRD's enums to the same lists.)

use clap::{CommandFactory, ValueEnum};
use plamatio_api::config::Cli;
use plamatio_api::events::kafka::{SaslMechanism, SecurityProtocol};
use plamatio_api::events::outbox::Topic;
use plamatio_api::http::identity::UserAuthMode;
use plamatio_contract::{env, sasl_mechanism, security_protocol, topics, user_auth};

fn names<T: ValueEnum>() -> Vec<String> {
    T::value_variants()
        .iter()
        .filter_map(|variant| variant.to_possible_value())
        .map(|value| value.get_name().to_owned())
        .collect()
}

#[test]
fn every_variable_the_operator_sets_is_read_by_serve() {
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("the serve subcommand");
    let read: Vec<String> = serve
        .get_arguments()
        .filter_map(|argument| argument.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for name in [
        env::DATABASE_URL,
        env::DATABASE_POOL_SIZE,
        env::PORT,
        env::LOG_FORMAT,
        env::API_KEYS,
        env::CACHE_TTL_SECONDS,
        env::CORS_ORIGINS,
        env::RATE_LIMIT_PER_MINUTE,
        env::TRUSTED_PROXIES,
        env::USER_AUTH,
        env::USER_JWKS_URL,
        env::USER_JWT_ISSUER,
        env::USER_JWT_AUDIENCE,
        env::REDIS_URL,
        env::KAFKA_BOOTSTRAP_SERVERS,
        env::KAFKA_SECURITY_PROTOCOL,
        env::KAFKA_SASL_MECHANISM,
        env::KAFKA_SASL_USERNAME,
        env::KAFKA_SASL_PASSWORD,
        env::KAFKA_TOPIC_PREFIX,
        env::KAFKA_CREATE_TOPICS,
    ] {
        assert!(
            read.iter().any(|read| read == name),
            "serve does not read {name}"
        );
    }
    assert_eq!(
        format!("{}_USERNAME", env::KAFKA_SASL_CREDENTIALS_PREFIX),
        env::KAFKA_SASL_USERNAME
    );
}

#[test]
fn serve_accepts_exactly_the_contracts_wire_strings() {
    assert_eq!(names::<UserAuthMode>(), user_auth::ALL);
    assert_eq!(names::<SecurityProtocol>(), security_protocol::ALL);
    assert_eq!(names::<SaslMechanism>(), sasl_mechanism::ALL);
    let produced: Vec<&str> = Topic::ALL.iter().map(|topic| topic.as_str()).collect();
    assert_eq!(produced, topics::ALL);
}
