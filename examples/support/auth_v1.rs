//! The messages of a small gRPC `auth.v1.AuthService`, written out with prost's derive so the
//! examples build without `protoc`. The matching `.proto`:
//!
//! ```proto
//! syntax = "proto3";
//! package auth.v1;
//! service AuthService {
//!   rpc Login(LoginRequest) returns (LoginReply);
//!   rpc Register(LoginRequest) returns (Empty);
//!   rpc ValidateToken(ValidateTokenRequest) returns (ValidateTokenReply);
//! }
//! message LoginRequest { string email = 1; string password = 2; }
//! message LoginReply { string token = 1; }
//! message ValidateTokenRequest { string token = 1; }
//! message ValidateTokenReply { string email = 1; }
//! message Empty {}
//! ```
#![allow(dead_code, unreachable_pub, missing_docs)]

/// `auth.v1.LoginRequest` (also the body of `Register`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LoginRequest {
    #[prost(string, tag = "1")]
    pub email: String,
    #[prost(string, tag = "2")]
    pub password: String,
}

/// `auth.v1.LoginReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LoginReply {
    #[prost(string, tag = "1")]
    pub token: String,
}

/// `auth.v1.ValidateTokenRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateTokenRequest {
    #[prost(string, tag = "1")]
    pub token: String,
}

/// `auth.v1.ValidateTokenReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateTokenReply {
    #[prost(string, tag = "1")]
    pub email: String,
}

/// `auth.v1.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// The service's full name.
pub const SERVICE: &str = "auth.v1.AuthService";
/// Method paths.
pub const LOGIN: &str = "/auth.v1.AuthService/Login";
pub const REGISTER: &str = "/auth.v1.AuthService/Register";
pub const VALIDATE_TOKEN: &str = "/auth.v1.AuthService/ValidateToken";
