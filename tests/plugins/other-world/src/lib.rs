//! A valid component of another world, whose exports have the runbook
//! world's names but not its types: `remedy inspect` must reject it.

wit_bindgen::generate!({ world: "other", path: "wit" });

struct Other;

impl Guest for Other {
    fn hello() -> String {
        "hello".into()
    }
    fn describe() -> String {
        "other".into()
    }
    fn detect(n: u32) -> u32 {
        n
    }
    fn mitigate() -> bool {
        true
    }
}

export!(Other);
