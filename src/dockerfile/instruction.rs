//! Typed instructions from the `Ast`.
pub enum Instruction {}
pub struct Spanned<T>(pub T);
pub fn instructions() {}
