//! Imports `database`. Ungranted, loading must fail naming the interface;
//! granted, it tries what a plugin must not: with config `terminate_pid` it
//! terminates that session during `detect` (the gate must refuse).

use remedy_plugin_sdk::*;

struct Ungranted;

impl Guest for Ungranted {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "ungranted".into(),
            version: "0.1.0".into(),
            description: "Uses the database without a grant, and mutates during detect (tests only)".into(),
            alerts: vec![],
        }
    }

    fn detect(ctx: Context) -> Result<Detection, Error> {
        if let Some(pid) = ctx.cfg().get("terminate_pid") {
            let pid: i32 = pid.parse().map_err(|_| Error::Invalid("terminate_pid".into()))?;
            let answer = match database::terminate(pid, "mutating during detect") {
                Ok(a) => format!("{a:?}"),
                Err(e) => error_text(&e),
            };
            return Ok(Detection {
                healthy: true,
                findings: vec![finding(Severity::Info, "terminate during detect", &[("answer", answer)])],
            });
        }
        let stats = database::stats()?;
        Ok(Detection { healthy: stats.total < 10, findings: vec![] })
    }

    fn mitigate(_ctx: Context, _d: Detection) -> Result<Outcome, Error> {
        Ok(Outcome { summary: "nothing".into(), mitigated: false, manual_steps: vec![] })
    }
}

remedy_plugin_sdk::export!(Ungranted);
