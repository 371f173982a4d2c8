//! provision: turns a host into a working NVIDIA GPU node from a TOML plan,
//! and upgrades it later without surprises.

pub mod bundle;
pub mod cli;
pub mod compat;
pub mod distro;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod facts;
pub mod fetch;
#[doc(hidden)]
pub mod fuzz;
pub mod host;
pub mod journal;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod progress;
pub mod step;
pub mod upgrade;
pub mod version;

/// The name serde gives a unit variant (`rolled-back`, `warning`), as the
/// JSON documents spell it; empty for anything else.
pub fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}
