//! Why an app-node stopped.

/// Why an app-node stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot open the ops listener: {0}")]
    Ops(#[from] std::io::Error),
}
