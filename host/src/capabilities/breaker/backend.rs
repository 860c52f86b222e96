//! What `breaker` reads and forces: the trait the breaker admin API's client implements.

use async_trait::async_trait;

use crate::backends::{BackendResult, Permit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The wire name of the breaker admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "CLOSED",
            Self::Open => "OPEN",
            Self::HalfOpen => "HALF_OPEN",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CLOSED" => Some(Self::Closed),
            "OPEN" => Some(Self::Open),
            "HALF_OPEN" => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

// Serde: fixtures (`remedy test`) hold breakers as written here.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    pub name: String,
    pub state: BreakerState,
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
}

#[async_trait]
pub trait BreakerBackend: Send + Sync {
    async fn list(&self) -> BackendResult<Vec<Breaker>>;
    async fn get(&self, name: &str) -> BackendResult<Option<Breaker>>;
    async fn force_state(
        &self,
        _: &Permit,
        name: &str,
        state: BreakerState,
        reason: &str,
    ) -> BackendResult<Breaker>;
}
