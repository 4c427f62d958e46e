//! statejournal against RocksDB, fjall and a floor: see `docs/BENCHMARKS.md`.

fn main() {
    statejournal_peers::main();
}
