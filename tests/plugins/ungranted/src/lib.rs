//! Imports `database` although the tests grant it nothing: loading must fail
//! naming the interface.

use remedy_plugin_sdk::*;

struct Ungranted;

impl Guest for Ungranted {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "ungranted".into(),
            version: "0.1.0".into(),
            description: "Uses the database without a grant (tests only)".into(),
            alerts: vec![],
        }
    }

    fn detect(_ctx: Context) -> Result<Detection, Error> {
        let stats = database::stats()?;
        Ok(Detection { healthy: stats.total < 10, findings: vec![] })
    }

    fn mitigate(_ctx: Context, _d: Detection) -> Result<Outcome, Error> {
        let _ = database::terminate(1, "because");
        Ok(Outcome { summary: "tried".into(), mitigated: false, manual_steps: vec![] })
    }
}

remedy_plugin_sdk::export!(Ungranted);
