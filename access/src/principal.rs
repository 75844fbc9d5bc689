//! Who is making a request, once their credentials have been checked.

use crate::robots::RobotPermission;

/// The authenticated caller. Building one is the only way to prove credentials were
/// checked: handlers take a `Principal`, never a username string.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// No credentials: may pull from public projects and nothing else.
    Anonymous,
    /// Authentication is switched off (`auth.mode = "none"`): every request may do
    /// everything. For benchmarks and closed test networks only.
    Unrestricted,
    User(UserIdentity),
    Robot(RobotIdentity),
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserIdentity {
    pub id: i64,
    pub username: String,
    /// System administrator: every right on every project.
    pub sysadmin: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RobotIdentity {
    pub id: i64,
    /// With the `robot$` prefix, as the robot logs in.
    pub name: String,
    /// Set for project-level robots.
    pub project_id: Option<i64>,
    pub permissions: Vec<RobotPermission>,
}

impl Principal {
    /// The name the audit log and token `sub` record.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Unrestricted => "unrestricted",
            Principal::User(user) => &user.username,
            Principal::Robot(robot) => &robot.name,
        }
    }

    /// Every right everywhere: system administrators, and everyone when auth is off.
    pub fn is_sysadmin(&self) -> bool {
        match self {
            Principal::Unrestricted => true,
            Principal::User(user) => user.sysadmin,
            Principal::Anonymous | Principal::Robot(_) => false,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Principal::Anonymous)
    }
}
