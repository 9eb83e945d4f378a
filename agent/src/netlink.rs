//! Linux rtnetlink sockets.
