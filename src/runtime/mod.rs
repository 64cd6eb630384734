//! Running containers: planning (`spec`) and the isolation backends that apply a plan.
pub mod spec;
