//! Conformance of the diesel-backed whatsapp-rust store, every Backend method, both backends.
