//! Credentials that sign instead of being sent (SPEC §11): the pure parts — AWS SigV4 canonical
//! requests and signatures, the aws-chunked re-signer, HMAC message templates. The request-path
//! stage that uses them is `proxy::sign`.

pub mod chunked;
pub mod hmac;
pub mod sigv4;
