//! The one bindgen site for the `remedy:plugin` world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "runbook",
    imports: { default: async },
    exports: { default: async },
});

pub use self::remedy::plugin::types;

impl<T: Send + 'static> RunbookPre<T> {
    /// [`RunbookPre::instantiate_async`] without checking the exports'
    /// types again. Those types belong to the component, not to an
    /// instance; the generated path checks them on every instantiation,
    /// about 5 % of a run. The caller must have instantiated this same
    /// `RunbookPre` once through `instantiate_async`, which checked them
    /// (`runtime::tiers::Compiled` does, on its first run).
    pub(crate) async fn instantiate_prechecked(
        &self,
        mut store: impl wasmtime::AsContextMut<Data = T>,
    ) -> wasmtime::Result<Runbook> {
        let mut store = store.as_context_mut();
        let instance = self.instance_pre.instantiate_async(&mut store).await?;
        let mut export = |index| {
            instance
                .get_func(&mut store, index)
                .ok_or_else(|| wasmtime::format_err!("the component lost an export it had at load"))
        };
        Ok(Runbook {
            describe: export(&self.indices.describe)?,
            detect: export(&self.indices.detect)?,
            mitigate: export(&self.indices.mitigate)?,
        })
    }
}
