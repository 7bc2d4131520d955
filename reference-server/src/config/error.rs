//! [`ConfigError`], and the checks of a setting's presence every group shares.

/// A setting that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A backend's settings are unusable.
    #[error("{variable}: {reason}")]
    Backend {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A role needs a setting that is missing.
    #[error("{variable} is required by role {role}")]
    Missing {
        /// The environment variable.
        variable: &'static str,
        /// The role.
        role: &'static str,
    },
    /// A value is out of range.
    #[error("{variable} {reason}")]
    Invalid {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The authentication settings are missing, contradictory or unsafe; the reason names the
    /// variable.
    #[error("{reason}")]
    Auth {
        /// The environment variable at fault.
        variable: &'static str,
        /// What is wrong, naming the variable.
        reason: String,
    },
}

/// A setting that is set and not empty.
pub(crate) fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

/// A setting a role cannot run without.
pub(crate) fn required<'a>(
    value: &'a Option<String>,
    variable: &'static str,
    role: &'static str,
) -> Result<&'a str, ConfigError> {
    present(value).ok_or(ConfigError::Missing { variable, role })
}
