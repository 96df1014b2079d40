//! roomhost: one small JavaScript runtime per chat room, behind a Phoenix
//! Channels WebSocket hub. See README.md for the tour.
