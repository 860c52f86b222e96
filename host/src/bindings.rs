//! The one bindgen site for the `remedy:plugin` world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "runbook",
    imports: { default: async },
    exports: { default: async },
});

pub use self::remedy::plugin::types;
