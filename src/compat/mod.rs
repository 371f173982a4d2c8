//! The CUDA / driver / GPU knowledge base and the rules that read it.

pub mod ask;
pub mod gpu;
pub mod host;
pub mod knowledge;
pub mod line;
pub mod needs;
pub mod question;
pub mod reason;
pub mod recommend;
pub mod rules;

pub use knowledge::Knowledge;
pub mod validate;
pub mod wheels;
