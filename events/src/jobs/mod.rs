//! Job state in PostgreSQL: executions (one per trigger) and their tasks (one per unit
//! of work), paused queues and live worker processes.

pub mod executions;
pub mod model;
pub mod pool;
pub mod queues;
pub mod tasks;

pub use model::*;
