//! The io-node put together: [`Node`] is the engine's [`Handler`]. It hands
//! each client message to the Socket.IO layer, resolves a namespace
//! CONNECT with what only the cluster side knows (is the namespace served,
//! is the credential registered) before the Socket.IO layer opens the
//! socket, times admissions out, and hands closed sessions back to the
//! Socket.IO layer. It holds no state of its own.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Namespaces;
use crate::cluster::auth::Credentials;
use crate::engine::{CloseReason, Engine, Handler, Message};
use crate::sockets::{Admission, Client, Session, Socket, Sockets};

pub(crate) struct Node {
    engine: Arc<Engine<Client>>,
    sockets: Arc<Sockets>,
    namespaces: Arc<Namespaces>,
    credentials: Credentials,
    /// How long an app-node has to decide on a connection.
    admission_timeout: Duration,
}

impl Node {
    pub(crate) fn new(
        engine: Arc<Engine<Client>>,
        sockets: Arc<Sockets>,
        namespaces: Arc<Namespaces>,
        credentials: Credentials,
    ) -> Node {
        let admission_timeout = engine.config().admission_timeout;
        Node {
            engine,
            sockets,
            namespaces,
            credentials,
            admission_timeout,
        }
    }

    /// The client gets CONNECT_ERROR if no app-node decides on the socket
    /// in time (unless the client leaves first).
    fn spawn_admission_timeout(&self, socket: Arc<Socket>) {
        let timeout = self.admission_timeout;
        let sockets = self.sockets.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => sockets.admission_timed_out(&socket),
                _ = socket.decided.notified() => {}
                _ = socket.session.closed() => {}
            }
        });
    }
}

impl Handler for Node {
    type Client = Client;

    fn engine(&self) -> &Engine<Client> {
        &self.engine
    }

    async fn on_message(
        &self,
        session: &Arc<Session>,
        message: Message<'_>,
    ) -> Result<(), CloseReason> {
        let Some(request) = self.sockets.on_message(session, message)? else {
            return Ok(());
        };
        let admission = if self.namespaces.serves(&request.nsp).await {
            self.credentials.check(&request.auth).await
        } else {
            Admission::UnknownNamespace
        };
        if let Some(pending) = self.sockets.connect(session, request, admission) {
            self.spawn_admission_timeout(pending);
        }
        Ok(())
    }

    fn on_closed(&self, session: &Arc<Session>) {
        self.sockets.on_session_closed(session);
    }
}
