//! Reloading and verifying the web server.
