//! The io-node put together: [`Node`] is the engine's [`Handler`]. It hands
//! each client message to the Socket.IO layer, resolves a namespace
//! CONNECT with what only the cluster side knows (is the namespace served,
//! is the credential registered, is there a session to recover) before the
//! Socket.IO layer opens the socket, times admissions out, and hands closed
//! sessions back to the Socket.IO layer. It holds no state of its own.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Namespaces;
use crate::cluster::auth::Credentials;
use crate::cluster::recovery::Recovery;
use crate::engine::{CloseReason, Engine, Handler, Message};
use crate::sockets::{Admission, Client, ConnectRequest, Session, Socket, Sockets};

pub(crate) struct Node {
    engine: Arc<Engine<Client>>,
    admit: Arc<Admit>,
}

/// What deciding on a CONNECT takes; shared with the tasks that recover
/// sessions.
struct Admit {
    sockets: Arc<Sockets>,
    namespaces: Arc<Namespaces>,
    credentials: Credentials,
    recovery: Recovery,
    /// How long an app-node has to decide on a connection.
    admission_timeout: Duration,
}

impl Node {
    pub(crate) fn new(
        engine: Arc<Engine<Client>>,
        sockets: Arc<Sockets>,
        namespaces: Arc<Namespaces>,
        credentials: Credentials,
        recovery: Recovery,
    ) -> Node {
        let admission_timeout = engine.config().admission_timeout;
        Node {
            engine,
            admit: Arc::new(Admit {
                sockets,
                namespaces,
                credentials,
                recovery,
                admission_timeout,
            }),
        }
    }
}

impl Admit {
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

    /// Decides on a CONNECT to a served namespace, without recovery.
    async fn connect(&self, session: &Arc<Session>, request: ConnectRequest) {
        let admission = self.credentials.check(&request.auth).await;
        let recovery = self.namespaces.recovery(&request.nsp);
        if let Some(pending) = self
            .sockets
            .connect(session, request, admission, recovery.as_ref())
        {
            self.spawn_admission_timeout(pending);
        }
    }

    /// A CONNECT that asks to recover a session: the session back if there
    /// is one, else a new socket as any CONNECT gets.
    async fn resume(
        &self,
        session: &Arc<Session>,
        request: ConnectRequest,
        resume: iocluster_protocol::recovery::Resume,
    ) {
        if let Some(recovery) = self.namespaces.recovery(&request.nsp)
            && let Some(claimed) = self.recovery.claim(&recovery, &resume, &request.nsp).await
        {
            let envelope = claimed.previous.encode();
            if self.sockets.recover(
                session,
                request.clone(),
                claimed.previous,
                &recovery,
                Some(claimed.after),
            ) {
                return;
            }
            // Taken but not usable here (the client left meanwhile): the
            // session ends as its time would have.
            self.sockets.announce_lost(envelope);
        }
        self.connect(session, request).await;
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
        let Some(mut request) = self.admit.sockets.on_message(session, message)? else {
            return Ok(());
        };
        if !self.admit.namespaces.serves(&request.nsp).await {
            self.admit
                .sockets
                .connect(session, request, Admission::UnknownNamespace, None);
            return Ok(());
        }
        if self.admit.namespaces.recovery(&request.nsp).is_none() {
            self.admit.connect(session, request).await;
            return Ok(());
        }
        // socket.io-client puts `pid` and `offset` in the auth; the
        // application never sees them.
        let (resume, auth) = iocluster_protocol::recovery::split_auth(&request.auth);
        tracing::debug!(nsp = %request.nsp, resume = resume.is_some(), "CONNECT to a namespace with recovery");
        request.auth = auth;
        match resume {
            // A claim may wait for another node to let the socket go: in a
            // task, so that this client's transport keeps being read (its
            // heartbeat) meanwhile. It sends nothing else to the namespace
            // before its CONNECT is answered.
            Some(resume) => {
                let admit = self.admit.clone();
                let session = session.clone();
                tokio::spawn(async move { admit.resume(&session, request, resume).await });
            }
            None => self.admit.connect(session, request).await,
        }
        Ok(())
    }

    fn on_closed(&self, session: &Arc<Session>) {
        self.admit.sockets.on_session_closed(session);
    }
}
