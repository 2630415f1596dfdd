//! Why a client operation failed, and what a refused namespace connection
//! said.

use serde_json::Value;

/// The server refused a namespace connection (CONNECT_ERROR).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}")]
    InvalidUrl(String),
    #[error("WebSocket error: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("bad handshake: {0}")]
    Handshake(String),
    #[error("connection refused: {}", .0.message)]
    ConnectRefused(ConnectError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out")]
    Timeout,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed")]
    Closed,
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}
