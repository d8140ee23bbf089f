//! `plamatio-api`: the store API binary. All logic lives in the library.

/// mimalloc instead of glibc's allocator: allocation was about a quarter of the instructions of a
/// cached read (B1, callgrind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plamatio_api::cli::run().await
}
