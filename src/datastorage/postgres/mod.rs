//! PostgreSQL backend: bulk inserts through UNNEST, id uniqueness through a side table,
//! monthly partitions created by the owner (see [`super::migrate`]), a write pool and a
//! read pool so that readers never starve the deletion path's writes.

mod partitions;
mod pool;
mod store;

pub use partitions::*;
pub use pool::*;
pub use store::*;
