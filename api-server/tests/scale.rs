//! Real store sizes: the catalog of `e2e/bench/data/generate.sql` (100,000 products over every
//! sub-category) loaded into a test database, then the plans PostgreSQL picks for the hot queries —
//! read with `EXPLAIN` of exactly the text the API runs — must use their indexes, and the routes must
//! still answer correctly. Timings belong to the benchmarks (`e2e/bench`), not here.

use plamatio_api::http::pagination::Page;
use plamatio_api::products::{db as products_db, model as products_model};
use serde_json::Value;
use sqlx::{Acquire, AssertSqlSafe};

use crate::common::TestApp;

/// Loads `products` generated products (and no users, orders or carts) into the app's database.
async fn load_generated_catalog(app: &TestApp, products: u32) {
    let script = include_str!("../../e2e/bench/data/generate.sql");
    let mut connection = app.pool.acquire().await.expect("a connection").detach();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET plamatio.products = {products}; SET plamatio.users = 0; SET plamatio.orders = 0; \
         SET plamatio.cart_rows = 0;\n{script}"
    )))
    .execute(connection.acquire().await.expect("the connection"))
    .await
    .expect("the data generator runs on a migrated database");
}

/// Every index a plan reads and every table it scans sequentially, from `EXPLAIN (FORMAT JSON)`.
fn plan_nodes(plan: &Value, indexes: &mut Vec<String>, sequential: &mut Vec<String>) {
    match plan {
        Value::Object(node) => {
            if let Some(Value::String(index)) = node.get("Index Name") {
                indexes.push(index.clone());
            }
            if node.get("Node Type") == Some(&Value::String("Seq Scan".into())) {
                let table = node
                    .get("Relation Name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                sequential.push(table.to_owned());
            }
            node.values()
                .for_each(|child| plan_nodes(child, indexes, sequential));
        }
        Value::Array(children) => children
            .iter()
            .for_each(|child| plan_nodes(child, indexes, sequential)),
        _ => {}
    }
}

/// The token the generator put into the description of generated product number `n`.
async fn description_token(app: &TestApp, n: u32) -> String {
    sqlx::query_scalar("SELECT 'tok' || left(md5($1::text), 12)")
        .bind(n.to_string())
        .fetch_one(&app.pool)
        .await
        .expect("md5 of the product number")
}

#[tokio::test]
async fn search_for_a_rare_word_uses_the_trigram_indexes_at_100k_products() {
    let app = TestApp::new().await;
    load_generated_catalog(&app, 100_000).await;
    let token = description_token(&app, 77_777).await;
    let pattern = products_model::like_pattern(&token);

    let plan: Value = sqlx::query_scalar(AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) {}",
        products_db::SEARCH_SQL
    )))
    .persistent(false)
    .bind(&pattern)
    .bind(None::<i64>)
    .bind(101_i64)
    .fetch_one(&app.pool)
    .await
    .expect("EXPLAIN of the search query");
    let (mut indexes, mut sequential) = (Vec::new(), Vec::new());
    plan_nodes(&plan, &mut indexes, &mut sequential);
    assert!(
        indexes
            .iter()
            .any(|index| index == "products_description_trgm_idx")
            && indexes
                .iter()
                .any(|index| index == "products_name_trgm_idx"),
        "the search reads both trigram indexes: {plan:#}"
    );
    assert!(sequential.is_empty(), "no sequential scan: {plan:#}");

    // The route itself finds exactly the one product, however often it runs (a prepared statement
    // would switch to a generic plan after five runs).
    for _ in 0..8 {
        let response = app.get(&format!("/products/search/{token}")).await;
        assert_eq!(response.status, 200, "body: {}", response.body);
        let found = response.body["data"].as_array().expect("a data array");
        assert_eq!(found.len(), 1, "one match: {}", response.body);
        assert!(
            found[0]["name"]
                .as_str()
                .is_some_and(|name| name.ends_with(" 77777")),
            "the generated product 77777: {}",
            response.body
        );
    }
    let page = Page {
        after: None,
        limit: Some(101),
    };
    let common_word = products_db::search(&app.pool, &products_model::like_pattern("llama"), &page)
        .await
        .expect("search for a common word");
    assert_eq!(
        common_word.len(),
        101,
        "a full page of a word every product has"
    );
}
