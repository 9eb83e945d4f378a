//! Waiting on fds with a timeout.
