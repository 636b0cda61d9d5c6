//! whatsapp-rust's storage `Backend` on wagate's own database (SQLite and PostgreSQL).
