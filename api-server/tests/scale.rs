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
    // No GIN pending list: every search would read it in full until a VACUUM merged it.
    let pending_lists: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relname IN \
         ('products_name_trgm_idx', 'products_description_trgm_idx') \
         AND 'fastupdate=off' = ANY(reloptions)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the indexes' options");
    assert_eq!(pending_lists, 2, "both trigram indexes have fastupdate off");
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

/// Loads the generator's whole store at a size small enough for every test run: 20,000 products,
/// 4,000 users with an address each, 40,000 orders with 3 items each and 10,000 cart rows.
async fn load_generated_store(app: &TestApp) {
    let script = include_str!("../../e2e/bench/data/generate.sql");
    let mut connection = app.pool.acquire().await.expect("a connection").detach();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET plamatio.products = 20000; SET plamatio.users = 4000; SET plamatio.orders = 40000; \
         SET plamatio.cart_rows = 10000;\n{script}"
    )))
    .execute(connection.acquire().await.expect("the connection"))
    .await
    .expect("the data generator runs on a migrated database");
}

/// One hot query, its parameters as SQL literals, and the index its plan must read.
struct HotQuery {
    name: &'static str,
    sql: &'static str,
    parameters: String,
    index: &'static str,
    /// One owner has few rows (`limits.rs` caps addresses at 50, cart rows at 200, order items at
    /// 100; a shopper has a handful of orders), so the planner may fetch that owner's index range by
    /// bitmap and sort it: the cost follows the owner's rows, not the store's size. Catalog pages
    /// (thousands of products per category) must read their index in order.
    owner_capped: bool,
}

/// The nodes of a plan that matter here: indexes read, tables scanned sequentially, sorts.
fn plan_summary(plan: &Value) -> (Vec<String>, Vec<String>, usize) {
    fn sorts(plan: &Value) -> usize {
        match plan {
            Value::Object(node) => {
                usize::from(
                    node.get("Node Type")
                        .and_then(Value::as_str)
                        .is_some_and(|kind| kind.contains("Sort")),
                ) + node.values().map(sorts).sum::<usize>()
            }
            Value::Array(children) => children.iter().map(sorts).sum(),
            _ => 0,
        }
    }
    let (mut indexes, mut sequential) = (Vec::new(), Vec::new());
    plan_nodes(plan, &mut indexes, &mut sequential);
    (indexes, sequential, sorts(plan))
}

/// `EXPLAIN` of the query as a prepared statement, the way sqlx runs it, under PostgreSQL's generic
/// plan (what a statement gets after five runs) and under a custom plan (its first runs).
async fn plans_of(app: &TestApp, query: &HotQuery) -> Vec<(&'static str, Value)> {
    let mut connection = app.pool.acquire().await.expect("a connection");
    let mut plans = Vec::new();
    for mode in ["force_generic_plan", "force_custom_plan"] {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SET plan_cache_mode = {mode}; PREPARE hot AS {}",
            query.sql
        )))
        .execute(&mut *connection)
        .await
        .unwrap_or_else(|error| panic!("PREPARE {}: {error}", query.name));
        let plan: Value = sqlx::query_scalar(AssertSqlSafe(format!(
            "EXPLAIN (FORMAT JSON) EXECUTE hot({})",
            query.parameters
        )))
        .persistent(false)
        .fetch_one(&mut *connection)
        .await
        .unwrap_or_else(|error| panic!("EXPLAIN {}: {error}", query.name));
        sqlx::raw_sql("DEALLOCATE hot; RESET plan_cache_mode")
            .execute(&mut *connection)
            .await
            .expect("DEALLOCATE");
        plans.push((mode, plan));
    }
    plans
}

#[tokio::test]
async fn every_hot_query_reads_its_index_in_order_on_a_generated_store() {
    use plamatio_api::{cart, orders, users};

    let app = TestApp::new().await;
    load_generated_store(&app).await;
    // The worst case for a plan that walks the primary key and filters: the category (and the
    // sub-category) whose products have the highest ids, the generator's order being per sub-category.
    let (category, sub_category, last_product): (i64, i64, i64) = sqlx::query_as(
        "SELECT category_id, sub_category_id, max(id) FROM products \
         GROUP BY category_id, sub_category_id ORDER BY min(id) DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the generated catalog");
    let (order, user): (i64, String) =
        sqlx::query_as("SELECT id, user_id FROM orders WHERE user_id = 'bench_user_77'")
            .fetch_one(&app.pool)
            .await
            .expect("generated orders of bench_user_77");
    let deep = last_product - 40;
    let queries = [
        HotQuery {
            name: "product by id",
            sql: products_db::PRODUCT_SQL,
            parameters: deep.to_string(),
            index: "products_pkey",
            owner_capped: false,
        },
        HotQuery {
            name: "catalog page, deep cursor",
            sql: products_db::ALL_SQL,
            parameters: format!("{deep}, 21"),
            index: "products_pkey",
            owner_capped: false,
        },
        HotQuery {
            name: "category, first page",
            sql: products_db::BY_CATEGORY_SQL,
            parameters: format!("{category}, NULL, 21"),
            index: "products_category_id_id_idx",
            owner_capped: false,
        },
        HotQuery {
            name: "category, deep cursor",
            sql: products_db::BY_CATEGORY_SQL,
            parameters: format!("{category}, {deep}, 21"),
            index: "products_category_id_id_idx",
            owner_capped: false,
        },
        HotQuery {
            name: "category, unpaged (the cap's extra row)",
            sql: products_db::BY_CATEGORY_SQL,
            parameters: format!("{category}, NULL, 1001"),
            index: "products_category_id_id_idx",
            owner_capped: false,
        },
        HotQuery {
            name: "sub-category, first page",
            sql: products_db::BY_SUB_CATEGORY_SQL,
            parameters: format!("{sub_category}, NULL, 21"),
            index: "products_sub_category_id_id_idx",
            owner_capped: false,
        },
        HotQuery {
            name: "sub-category, deep cursor",
            sql: products_db::BY_SUB_CATEGORY_SQL,
            parameters: format!("{sub_category}, {deep}, 21"),
            index: "products_sub_category_id_id_idx",
            owner_capped: false,
        },
        HotQuery {
            name: "user by id",
            sql: users::db::USER_SQL,
            parameters: "'bench_user_3999'".into(),
            index: "users_pkey",
            owner_capped: false,
        },
        HotQuery {
            name: "users page, deep cursor",
            sql: users::db::ALL_USERS_SQL,
            parameters: "'bench_user_3999', 21".into(),
            index: "users_pkey",
            owner_capped: false,
        },
        HotQuery {
            name: "addresses of a user",
            sql: users::db::ADDRESSES_OF_SQL,
            parameters: format!("'{user}', NULL, 1001"),
            index: "addresses_user_id_id_idx",
            owner_capped: true,
        },
        HotQuery {
            name: "order by id",
            sql: orders::db::ORDER_SQL,
            parameters: order.to_string(),
            index: "orders_pkey",
            owner_capped: false,
        },
        HotQuery {
            name: "orders of a user",
            sql: orders::db::ORDERS_OF_SQL,
            parameters: format!("'{user}', NULL, 1001"),
            index: "orders_user_id_id_idx",
            owner_capped: true,
        },
        HotQuery {
            name: "orders of a user, after a cursor",
            sql: orders::db::ORDERS_OF_SQL,
            parameters: format!("'{user}', {order}, 21"),
            index: "orders_user_id_id_idx",
            owner_capped: true,
        },
        HotQuery {
            name: "items of an order",
            sql: orders::db::ITEMS_OF_SQL,
            parameters: format!("{order}, NULL, 1001"),
            index: "order_items_order_id_id_idx",
            owner_capped: true,
        },
        HotQuery {
            name: "cart of a user",
            sql: cart::db::ITEMS_OF_SQL,
            parameters: format!("'{user}', NULL, 1001"),
            index: "cart_items_user_id_id_idx",
            owner_capped: true,
        },
    ];
    for query in &queries {
        for (mode, plan) in plans_of(&app, query).await {
            let (indexes, sequential, sorts) = plan_summary(&plan);
            assert!(
                indexes.iter().any(|index| index == query.index),
                "{} ({mode}) reads {}: {plan:#}",
                query.name,
                query.index
            );
            assert!(
                sequential.is_empty(),
                "{} ({mode}): no sequential scan: {plan:#}",
                query.name
            );
            assert!(
                sorts == 0 || query.owner_capped,
                "{} ({mode}): no sort: {plan:#}",
                query.name
            );
        }
    }

    // An unpaged list past the maximum is refused with a hint to page; pages walk it to the end.
    let response = app.get("/products/all").await;
    assert_eq!(response.status, 400, "body: {}", response.body);
    let message = response.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("more than 1000 rows") && message.contains("?limit="),
        "the error says to page: {}",
        response.body
    );
    let response = app.get(&format!("/products/category/{category}")).await;
    assert_eq!(
        response.status, 400,
        "a category of thousands: {}",
        response.body
    );
    let mut path = format!("/products/subcategory/{sub_category}?limit=500");
    let mut seen = 0;
    let mut last_id = 0;
    loop {
        let response = app.get(&path).await;
        assert_eq!(response.status, 200, "body: {}", response.body);
        for product in response.body["data"].as_array().expect("a data array") {
            let id = product["id"].as_i64().expect("an id");
            assert!(id > last_id, "pages in id order without repeats");
            assert_eq!(product["subCategory"].as_i64(), Some(sub_category));
            last_id = id;
            seen += 1;
        }
        match response.body["next"].as_str() {
            Some(next) => {
                path = format!("/products/subcategory/{sub_category}?limit=500&after={next}")
            }
            None => break,
        }
    }
    let expected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM products WHERE sub_category_id = $1")
            .bind(sub_category)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(
        seen, expected,
        "the pages together are the whole sub-category"
    );
    assert!(
        seen > 1000,
        "a sub-category past the unpaged maximum: {seen}"
    );
}
