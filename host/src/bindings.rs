//! The one bindgen site for the `remedy:plugin` world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "runbook",
    imports: { default: async },
    exports: { default: async },
});

pub use self::remedy::plugin::types;

// Beside the generated code, so that it can build a `Runbook` itself.
impl<T: Send + 'static> RunbookPre<T> {
    /// `instantiate_async` without type-checking the exports on every
    /// instance: `RunbookPre::new` checked them once, against the same
    /// component, and an instance of it cannot export other types.
    pub async fn instantiate_checked(
        &self,
        mut store: impl wasmtime::AsContextMut<Data = T>,
    ) -> wasmtime::Result<Runbook> {
        let mut store = store.as_context_mut();
        let instance = self.instance_pre.instantiate_async(&mut store).await?;
        let mut export = |index, name: &str| {
            instance
                .get_func(&mut store, index)
                .ok_or_else(|| wasmtime::format_err!("no export `{name}` found"))
        };
        Ok(Runbook {
            describe: export(&self.indices.describe, "describe")?,
            detect: export(&self.indices.detect, "detect")?,
            mitigate: export(&self.indices.mitigate, "mitigate")?,
        })
    }
}
