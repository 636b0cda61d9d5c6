//! wasim: a loopback WhatsApp Web server.
