//! [`Kv`] for our Consul client (`crate::consul::Client`): maps its KV calls and errors onto the
//! store's. Transport errors become [`KvError::Unreachable`] naming the address.
