//! Run records: decoding never panics, and a decoded record survives a
//! JSON round trip unchanged. `FUZZ_VERBOSE=1` prints each outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remedy::record::RunRecord;

fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("FUZZ_VERBOSE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let first = match serde_json::from_slice::<RunRecord>(data) {
        Ok(r) => r,
        Err(e) => {
            if verbose() {
                eprintln!("run_record: Err({e})");
            }
            return;
        }
    };
    let json = serde_json::to_vec(&first).expect("a decoded record encodes");
    let second = match serde_json::from_slice::<RunRecord>(&json) {
        Ok(r) => r,
        Err(e) => panic!(
            "the re-encoded record does not decode: {e}\n{}",
            String::from_utf8_lossy(&json)
        ),
    };
    assert_eq!(first, second, "the record changed in a JSON round trip");
    if verbose() {
        eprintln!("run_record: Ok({})", first.id);
    }
});
