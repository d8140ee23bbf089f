//! The connection pool against a real PostgreSQL: every TCP connection it opens has `TCP_NODELAY`
//! (sqlx 0.9.0 leaves it off; see `db::pool_options`).

// Its own test binary (see Cargo.toml): it inspects every socket of the process, so connections
// that other tests open at the same time would count against it.
#[allow(dead_code, unused_imports)]
mod common;

use std::net::TcpStream;

use plamatio_api::db;
use sqlx::postgres::PgConnectOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_connections_and_other_sockets_to_the_server_get_tcp_nodelay() {
    let url = format!("{}/postgres", common::server_url());
    let options: PgConnectOptions = url.parse().unwrap();
    let address = (options.get_host().to_owned(), options.get_port());

    // A socket opened without the option, as sqlx opens them, gets it.
    let raw = TcpStream::connect(&address).unwrap_or_else(|error| {
        panic!("PostgreSQL is required for the tests and is not reachable at {url}: {error}")
    });
    assert!(
        !raw.nodelay().unwrap(),
        "sockets start with Nagle's algorithm on"
    );
    assert!(db::nodelay::set_on_connections_to(address.1) >= 1);
    assert!(raw.nodelay().unwrap());

    // The pool's connections have it from the start: nothing is left to change, while all of them
    // are open and in use.
    let pool = db::pool_options(&url)
        .max_connections(3)
        .connect(&url)
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.acquire().await.unwrap());
    }
    for connection in &mut held {
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut **connection)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
    assert_eq!(db::nodelay::set_on_connections_to(address.1), 0);
    drop(held);
    pool.close().await;
}
