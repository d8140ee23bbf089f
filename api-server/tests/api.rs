//! The API's integration tests in one test binary (one compile of the harness and one link instead of
//! one per file): every file of `tests/` is a module here, sharing the harness in `tests/common` (a
//! database of its own per test, the router built as `serve` builds it, a real tansu broker, the real
//! binary). The exceptions are `observability.rs` and `database.rs`, test targets of their own because
//! they observe process-wide state (tracing's callsite cache, every open socket; see there).

mod common;

mod abuse;
mod attacks;
mod binary;
mod cache;
mod cache_tiers;
mod cart;
mod categories;
mod contract;
mod edge;
mod events;
mod http_caching;
mod openapi;
mod orders;
mod production_edge;
mod products;
mod reliability;
mod scale;
mod user_auth;
mod users;

/// A file in `tests/` that is neither declared above nor a `[[test]]` of its own in Cargo.toml would
/// never compile nor run: fail instead.
#[test]
fn every_test_file_is_a_module_of_this_binary_or_a_test_target() {
    let declared = include_str!("api.rs");
    let manifest = include_str!("../Cargo.toml");
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    for entry in std::fs::read_dir(directory).expect("tests directory") {
        let path = entry.expect("directory entry").path();
        let Some(stem) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|extension| extension == "rs") && stem != "api" {
            assert!(
                declared.contains(&format!("\nmod {stem};\n"))
                    || manifest.contains(&format!("path = \"tests/{stem}.rs\"")),
                "tests/{stem}.rs is neither a module of tests/api.rs nor a [[test]] in Cargo.toml, \
                 so it never runs"
            );
        }
    }
}
