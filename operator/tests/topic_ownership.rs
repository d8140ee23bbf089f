//! Which topics a store's deletion deletes: only those it created, and never one another live store
//! on the same brokers asks for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use plamatio_operator::crd::{
    DatabaseSpec, DeletionPolicy, KafkaSpec, PlamatioStore, PlamatioStoreSpec, PlamatioStoreStatus,
    TopicsSpec,
};
use plamatio_operator::kafka::topics_to_delete;

fn store(name: &str, bootstrap: &str, prefix: &str, owned: Option<&[&str]>) -> PlamatioStore {
    let mut store = PlamatioStore::new(
        name,
        PlamatioStoreSpec {
            database: DatabaseSpec::default(),
            kafka: Some(KafkaSpec {
                bootstrap_servers: bootstrap.to_owned(),
                topic_prefix: Some(prefix.to_owned()),
                topics: Some(TopicsSpec {
                    deletion_policy: Some(DeletionPolicy::Delete),
                    ..TopicsSpec::default()
                }),
                ..KafkaSpec::default()
            }),
            ..PlamatioStoreSpec::default()
        },
    );
    store.metadata.uid = Some(format!("uid-{name}"));
    store.status = owned.map(|owned| PlamatioStoreStatus {
        owned_topics: Some(owned.iter().map(|t| (*t).to_owned()).collect()),
        ..PlamatioStoreStatus::default()
    });
    store
}

const SHOP_TOPICS: [&str; 5] = [
    "shop.cart_updates",
    "shop.orders_updates",
    "shop.users_updates",
    "shop.products_updates",
    "shop.user_events",
];

#[test]
fn a_store_deletes_the_topics_it_created() {
    let shop = store("shop", "kafka:9092", "shop.", Some(&SHOP_TOPICS));
    let mut deleted = topics_to_delete(&shop, std::slice::from_ref(&shop));
    deleted.sort();
    let mut want: Vec<String> = SHOP_TOPICS.iter().map(|t| (*t).to_owned()).collect();
    want.sort();
    assert_eq!(deleted, want);
}

#[test]
fn a_store_that_created_no_topic_deletes_none() {
    let outlet = store("outlet", "kafka:9092", "shop.", Some(&[]));
    let shop = store("shop", "kafka:9092", "shop.", Some(&SHOP_TOPICS));
    assert!(topics_to_delete(&outlet, &[outlet.clone(), shop]).is_empty());
}

#[test]
fn a_topic_another_live_store_asks_for_is_kept() {
    let shop = store("shop", "kafka:9092", "shop.", Some(&SHOP_TOPICS));
    let outlet = store("outlet", "kafka:9092", "shop.", Some(&[]));
    assert!(topics_to_delete(&shop, &[shop.clone(), outlet]).is_empty());
}

#[test]
fn a_store_on_other_brokers_or_being_deleted_does_not_keep_a_topic() {
    let shop = store("shop", "kafka:9092", "shop.", Some(&SHOP_TOPICS));
    let elsewhere = store("outlet", "other-kafka:9092", "shop.", Some(&[]));
    let mut leaving = store("archive", "kafka:9092", "shop.", Some(&[]));
    leaving.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    assert_eq!(
        topics_to_delete(&shop, &[shop.clone(), elsewhere, leaving]).len(),
        5
    );
}

#[test]
fn a_store_whose_status_predates_ownership_deletes_what_it_asks_for() {
    let shop = store("shop", "kafka:9092", "shop.", None);
    assert_eq!(
        topics_to_delete(&shop, std::slice::from_ref(&shop)).len(),
        5
    );
}
