//! The one error type of the catalogue.

/// Everything that can be wrong with the input of the catalogue: a name, a tenant file, a secret, a Caddyfile.
///
/// Every variant names the bad value and the rule it broke, so callers can print it as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tenant name broke one of the naming rules.
    #[error("invalid tenant name {value:?}: {rule}")]
    InvalidTenantName {
        /// The rejected name.
        value: String,
        /// The rule it broke, as a sentence fragment.
        rule: &'static str,
    },
    /// A role name is not one of the catalogue's roles.
    #[error("unknown role {value:?}: expected one of {allowed}")]
    UnknownRole {
        /// The rejected name.
        value: String,
        /// The accepted names, comma separated.
        allowed: String,
    },
    /// An instance name is not `{tenant}-{role}` with a valid tenant and a known role.
    #[error("invalid instance name {value:?}: {rule}")]
    InvalidInstanceName {
        /// The rejected name.
        value: String,
        /// Why it was rejected.
        rule: String,
    },
    /// A domain name for the proxy or a DNS zone is not a valid DNS name.
    #[error("invalid domain name {value:?}: {rule}")]
    InvalidDomain {
        /// The rejected name.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The tenant file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid tenant file: {message}")]
    TenantFileSyntax {
        /// The parser's message (it names the key and the line).
        message: String,
    },
    /// A value in the tenant file is well-formed TOML but breaks a rule.
    #[error("invalid tenant file: {key} = {value:?}: {rule}")]
    TenantFileValue {
        /// The dotted key, for example `limits.tables.memory`.
        key: String,
        /// The rejected value.
        value: String,
        /// The rule it broke.
        rule: String,
    },
    /// A secret that rendering needs was not provided.
    #[error("missing secret {name:?} needed by role {role}")]
    MissingSecret {
        /// The secret's name, for example `tables-password`.
        name: String,
        /// The role that needs it.
        role: &'static str,
    },
    /// A secret value does not fit its specification (length or characters).
    #[error("secret {name:?} does not match its specification: {rule}")]
    InvalidSecret {
        /// The secret's name (never its value).
        name: String,
        /// The rule it broke.
        rule: String,
    },
    /// A Caddyfile could not be split into blocks.
    #[error("invalid Caddyfile at line {line}: {rule}")]
    Caddyfile {
        /// 1-based line number where the problem was found.
        line: usize,
        /// What is wrong.
        rule: String,
    },
}

/// The catalogue's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
