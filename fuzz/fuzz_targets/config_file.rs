//! `remedy.toml` parsing and validation: any text gives Ok or Err, never a panic.
//! `FUZZ_VERBOSE=1` prints each outcome (to check seeds).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("FUZZ_VERBOSE").is_some())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let r = remedy::config::Config::parse(text, std::path::Path::new("remedy.toml"));
        if verbose() {
            eprintln!("config_file: {:?}", r.map(|c| c.plugins.len()).map_err(|e| e.to_string()));
        }
    }
});
