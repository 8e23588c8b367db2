//! TLS session resumption for one BMC. Each BMC has its own client config
//! (its own pin), so its session store only ever sees that BMC: it keeps
//! the newest ticket, not rustls' in-memory cache (a table sized for many
//! servers and room for eight tickets each, about two kilobytes per BMC
//! before the first ticket, forty megabytes at 12,500 nodes).

use std::sync::Mutex;

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

/// What one BMC's connections remember for the next handshake.
#[derive(Debug, Default)]
pub struct OneServer(Mutex<Remembered>);

#[derive(Debug, Default)]
struct Remembered {
    /// The server the rest belongs to; another name forgets it.
    server: Option<ServerName<'static>>,
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    /// The newest TLS 1.3 ticket; each is used at most once.
    tls13: Option<Tls13ClientSessionValue>,
}

impl Remembered {
    /// The entry for `server`, emptied first when it held another one.
    fn for_server(&mut self, server: ServerName<'static>) -> &mut Remembered {
        if self.server.as_ref() != Some(&server) {
            *self = Remembered {
                server: Some(server),
                ..Remembered::default()
            };
        }
        self
    }

    /// The entry, when it belongs to `server`.
    fn of(&mut self, server: &ServerName<'_>) -> Option<&mut Remembered> {
        (self.server.as_ref() == Some(server)).then_some(self)
    }
}

impl OneServer {
    fn with<T>(&self, f: impl FnOnce(&mut Remembered) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ClientSessionStore for OneServer {
    fn set_kx_hint(&self, server: ServerName<'static>, group: NamedGroup) {
        self.with(|r| r.for_server(server).kx_hint = Some(group));
    }

    fn kx_hint(&self, server: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(|r| r.of(server).and_then(|r| r.kx_hint))
    }

    fn set_tls12_session(&self, server: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(|r| r.for_server(server).tls12 = Some(value));
    }

    fn tls12_session(&self, server: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(|r| r.of(server).and_then(|r| r.tls12.clone()))
    }

    fn remove_tls12_session(&self, server: &ServerName<'static>) {
        self.with(|r| {
            if let Some(r) = r.of(server) {
                r.tls12 = None;
            }
        });
    }

    fn insert_tls13_ticket(&self, server: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.with(|r| r.for_server(server).tls13 = Some(value));
    }

    fn take_tls13_ticket(&self, server: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.with(|r| r.of(server).and_then(|r| r.tls13.take()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn name(s: &str) -> ServerName<'static> {
        ServerName::try_from(s.to_owned()).expect("a valid name")
    }

    #[test]
    fn remembers_one_server_and_forgets_it_for_another() {
        let store = OneServer::default();
        store.set_kx_hint(name("10.0.0.1"), NamedGroup::X25519);
        assert_eq!(store.kx_hint(&name("10.0.0.1")), Some(NamedGroup::X25519));
        assert_eq!(store.kx_hint(&name("10.0.0.2")), None);
        store.set_kx_hint(name("10.0.0.2"), NamedGroup::secp256r1);
        assert_eq!(store.kx_hint(&name("10.0.0.1")), None);
        assert_eq!(
            store.kx_hint(&name("10.0.0.2")),
            Some(NamedGroup::secp256r1)
        );
        assert!(store.take_tls13_ticket(&name("10.0.0.2")).is_none());
    }

    /// Moves bytes both ways until neither side has more to send.
    fn exchange(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
        loop {
            let mut wire = Vec::new();
            let sent = client.write_tls(&mut wire).expect("client writes");
            if sent > 0 {
                server.read_tls(&mut wire.as_slice()).expect("server reads");
                server.process_new_packets().expect("server accepts");
            }
            let mut back = Vec::new();
            let answered = server.write_tls(&mut back).expect("server writes");
            if answered > 0 {
                client.read_tls(&mut back.as_slice()).expect("client reads");
                client.process_new_packets().expect("client accepts");
            }
            if sent == 0 && answered == 0 {
                return;
            }
        }
    }

    #[test]
    fn a_second_connection_to_the_bmc_resumes_its_session() {
        let ip = "127.0.0.1".parse().expect("an address");
        let bmc = crate::sim::tls::self_signed("r01-n01", ip).expect("a certificate");
        let pin = bmc.fingerprint.parse().expect("a fingerprint");
        let client = crate::bmc::tls::pinned(pin).expect("a client config");
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut c = rustls::ClientConnection::new(Arc::clone(&client), ServerName::from(ip))
                .expect("a client");
            let mut s = rustls::ServerConnection::new(Arc::clone(&bmc.config)).expect("a server");
            exchange(&mut c, &mut s);
            assert!(!c.is_handshaking());
            kinds.push(c.handshake_kind());
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ]
        );
    }
}
