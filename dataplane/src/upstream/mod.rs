//! The upstream call: [`failover`] tries a model's backends in the routing plan's order until one
//! answers (waiting for its first byte), [`outbound`] picks each attempt's wire format (and
//! translation) by the backend's provider type, and [`client`] sends one request to one backend
//! ([`plain`] keeps the connections of plain-`http` upstreams).

pub mod client;
pub mod failover;
pub mod outbound;
pub mod plain;
