//! `plamatio-api`: the store API binary. All logic lives in the library.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plamatio_api::cli::run().await
}
