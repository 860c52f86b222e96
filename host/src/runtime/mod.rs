//! The sandbox: one wasmtime engine (pooling allocator when the machine
//! allows it, epoch interruption), one linker with WASI (no ambient
//! authority) and the `remedy:plugin` capabilities, plugins loaded into
//! cached `InstancePre`s, and a fresh `Store` for every guest call.

pub mod engine;
pub mod invoke;
pub mod limits;
pub mod logs;
pub mod plugin;
mod routing;
pub mod state;
pub mod tiers;

pub use engine::Runtime;
pub use invoke::CallError;
pub use plugin::{LoadError, Plugin, PluginInfo, PluginSettings};
pub use routing::Routing;
pub use tiers::{CodeCache, Tier};
