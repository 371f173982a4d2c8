//! The CUDA / driver / GPU knowledge base and the rules that read it.

pub mod knowledge;

pub use knowledge::Knowledge;
pub mod validate;
