//! `plamatio-api`: the store API binary. All logic lives in the library.

/// mimalloc instead of glibc's allocator: allocation was about a quarter of the instructions of a
/// cached read (B1, callgrind). Built without transparent huge pages (`no_thp`): on hosts where THP
/// is `madvise` (common), mimalloc asked for them on its arenas, so each touched region became
/// resident 2 MiB at a time: 10,000 idle event streams took 22.3 KiB of RSS each, 16.0 without,
/// and the idle process 32 MiB instead of 21 MiB (`e2e/bench/RESULTS.md`, S2).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plamatio_api::cli::run().await
}
