//! The Alertmanager webhook (v4) parser: any body gives Ok or Err, never a panic.
//! `FUZZ_VERBOSE=1` prints each outcome (to check seeds).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("FUZZ_VERBOSE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let r = remedy::triggers::alerts::parse(data);
    if verbose() {
        eprintln!("alert_payload: {:?}", r.map(|h| h.alerts.len()));
    }
});
