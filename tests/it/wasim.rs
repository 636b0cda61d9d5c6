// wasim tests: real whatsapp-rust clients against the loopback WhatsApp server.
