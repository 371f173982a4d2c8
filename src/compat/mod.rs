//! The CUDA / driver / GPU knowledge base and the rules that read it.

pub mod host;
pub mod knowledge;
pub mod rules;

pub use knowledge::Knowledge;
pub mod validate;
