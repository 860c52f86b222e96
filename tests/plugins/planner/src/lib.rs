//! Always unhealthy; its mitigation half-opens the breaker named by config
//! key `breaker` (default `stripe`). In `approve` mode that is its plan.

use remedy_plugin_sdk::*;

struct Planner;

impl Guest for Planner {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "planner".into(),
            version: "0.1.0".into(),
            description: "Plans one breaker action (tests only)".into(),
            alerts: vec![],
        }
    }

    fn detect(_ctx: Context) -> Result<Detection, Error> {
        Ok(Detection {
            healthy: false,
            findings: vec![finding(Severity::Warning, "always something to do", &[])],
        })
    }

    fn mitigate(ctx: Context, _d: Detection) -> Result<Outcome, Error> {
        let name = ctx.cfg().get("breaker").unwrap_or("stripe").to_string();
        let applied = breaker::force_state(&name, breaker::State::HalfOpen, "planned")?;
        Ok(Outcome {
            summary: format!("{name}: {applied:?}"),
            mitigated: true,
            manual_steps: vec![],
        })
    }
}

remedy_plugin_sdk::export!(Planner);
