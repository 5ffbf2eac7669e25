//! SMART on FHIR scopes (v2, and the v1 forms still in circulation).
//!
//! Parsing is strict and never widens access: a scope that does not parse
//! exactly grants nothing and is kept in [`Scopes::rejected`] with the reason.
//! Scopes carrying query restrictions (`patient/Observation.rs?category=laboratory`)
//! are parsed and exposed through [`Scopes::grant`], but [`Scopes::allows`]
//! ignores them: a caller that does not enforce the restriction must not treat
//! the scope as a grant.

use std::fmt;

use percent_encoding::percent_decode_str;

/// Longest single scope considered; longer ones are rejected.
pub const MAX_SCOPE_LEN: usize = 512;
/// Most scopes considered from one token; the rest are rejected.
pub const MAX_SCOPES: usize = 256;

/// The `patient/`, `user/` or `system/` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    Patient,
    User,
    System,
}

impl Context {
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }

    fn parse(prefix: &str) -> Option<Context> {
        match prefix {
            "patient" => Some(Context::Patient),
            "user" => Some(Context::User),
            "system" => Some(Context::System),
            _ => None,
        }
    }
}

/// One SMART v2 permission letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Permission {
    pub fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }

    fn bit(self) -> u8 {
        match self {
            Permission::Create => 1,
            Permission::Read => 2,
            Permission::Update => 4,
            Permission::Delete => 8,
            Permission::Search => 16,
        }
    }
}

/// A set of permissions, written in SMART v2 order (`cruds`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const ALL: Permissions = Permissions(31);

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    fn from_letters(letters: &[Permission]) -> Permissions {
        Permissions(letters.iter().fold(0, |acc, p| acc | p.bit()))
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ORDER: [Permission; 5] = [
            Permission::Create,
            Permission::Read,
            Permission::Update,
            Permission::Delete,
            Permission::Search,
        ];
        for permission in ORDER {
            if self.contains(permission) {
                write!(f, "{}", permission.letter())?;
            }
        }
        Ok(())
    }
}

/// A parsed `context/ResourceType.permissions[?query]` scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: Context,
    /// `None` for the `*` wildcard.
    pub resource_type: Option<String>,
    pub permissions: Permissions,
    /// Decoded `name=value` pairs from the query part; all must hold.
    pub restrictions: Vec<(String, String)>,
}

impl ResourceScope {
    fn covers(&self, context: Context, resource_type: &str, permission: Permission) -> bool {
        self.context == context
            && self
                .resource_type
                .as_deref()
                .is_none_or(|t| t == resource_type)
            && self.permissions.contains(permission)
    }
}

/// Why a scope string grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    #[error("scope is longer than {MAX_SCOPE_LEN} characters")]
    TooLong,
    #[error("more than {MAX_SCOPES} scopes")]
    TooMany,
    #[error("scope contains characters outside RFC 6749 scope-token")]
    InvalidCharacters,
    #[error("resource scope has no `.permissions` part")]
    MissingPermissions,
    #[error("resource type is not `*` or a FHIR resource type name")]
    InvalidResourceType,
    #[error("permissions are not `read`, `write`, `*` or SMART v2 letters in `cruds` order")]
    InvalidPermissions,
    #[error("SMART v1 permissions cannot carry a query")]
    QueryOnV1Scope,
    #[error("query restriction is not a list of name=value pairs")]
    InvalidQuery,
}

/// A scope that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRejection {
    /// The scope as received, cut to [`MAX_SCOPE_LEN`] bytes.
    pub scope: String,
    pub reason: ScopeError,
}

/// What the scopes grant for one (context, resource type, permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant<'a> {
    /// At least one scope grants it without restriction.
    Unrestricted,
    /// Only restricted scopes grant it: a resource is permitted when it
    /// satisfies every pair of at least one of these lists.
    Restricted(Vec<&'a [(String, String)]>),
    Denied,
}

/// The scopes of one token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    resource: Vec<ResourceScope>,
    other: Vec<String>,
    rejected: Vec<ScopeRejection>,
    /// The accepted scope strings as the token gave them, so a grant can be recorded and
    /// parsed again later (a subscription's owner).
    granted: Vec<String>,
}

impl Scopes {
    /// Parse a space-separated `scope` claim.
    pub fn parse(scope_claim: &str) -> Scopes {
        Scopes::from_scope_strings(scope_claim.split_ascii_whitespace())
    }

    /// Parse scopes given one by one (an `scp` array claim).
    pub fn from_scope_strings<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Scopes {
        let mut parsed = Scopes::default();
        for (index, scope) in scopes.into_iter().enumerate() {
            if index >= MAX_SCOPES {
                parsed.reject(scope, ScopeError::TooMany);
                continue;
            }
            match parse_scope(scope) {
                Ok(Parsed::Resource(resource)) => {
                    parsed.resource.push(resource);
                    parsed.granted.push(scope.to_owned());
                }
                Ok(Parsed::Other) => {
                    parsed.other.push(scope.to_owned());
                    parsed.granted.push(scope.to_owned());
                }
                Err(reason) => parsed.reject(scope, reason),
            }
        }
        parsed
    }

    fn reject(&mut self, scope: &str, reason: ScopeError) {
        let mut cut = scope.len().min(MAX_SCOPE_LEN);
        while !scope.is_char_boundary(cut) {
            cut -= 1;
        }
        self.rejected.push(ScopeRejection {
            scope: scope[..cut].to_owned(),
            reason,
        });
    }

    /// True when an unrestricted scope grants `permission` on `resource_type`
    /// in exactly `context` (a `user/` scope does not answer for `patient/`).
    pub fn allows(&self, context: Context, resource_type: &str, permission: Permission) -> bool {
        self.grant(context, resource_type, permission) == Grant::Unrestricted
    }

    /// The grant for `permission` on `resource_type` in `context`, including
    /// restricted scopes.
    pub fn grant(
        &self,
        context: Context,
        resource_type: &str,
        permission: Permission,
    ) -> Grant<'_> {
        let mut restricted = Vec::new();
        for scope in &self.resource {
            if !scope.covers(context, resource_type, permission) {
                continue;
            }
            if scope.restrictions.is_empty() {
                return Grant::Unrestricted;
            }
            restricted.push(scope.restrictions.as_slice());
        }
        if restricted.is_empty() {
            Grant::Denied
        } else {
            Grant::Restricted(restricted)
        }
    }

    pub fn resource_scopes(&self) -> &[ResourceScope] {
        &self.resource
    }

    /// Well-formed scopes that are not resource scopes (`openid`,
    /// `launch/patient`, `offline_access`, vendor scopes, …). They grant no
    /// resource access.
    pub fn other(&self) -> &[String] {
        &self.other
    }

    pub fn rejected(&self) -> &[ScopeRejection] {
        &self.rejected
    }

    /// The accepted scopes as written; `Scopes::from_scope_strings` of these gives the
    /// same grant.
    pub fn granted(&self) -> &[String] {
        &self.granted
    }

    pub fn is_empty(&self) -> bool {
        self.resource.is_empty() && self.other.is_empty()
    }
}

enum Parsed {
    Resource(ResourceScope),
    Other,
}

fn parse_scope(scope: &str) -> Result<Parsed, ScopeError> {
    if scope.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::TooLong);
    }
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    if !scope
        .bytes()
        .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    {
        return Err(ScopeError::InvalidCharacters);
    }
    let Some((prefix, rest)) = scope.split_once('/') else {
        return Ok(Parsed::Other);
    };
    let Some(context) = Context::parse(prefix) else {
        return Ok(Parsed::Other); // launch/patient, vendor/…
    };
    let (body, query) = match rest.split_once('?') {
        Some((body, query)) => (body, Some(query)),
        None => (rest, None),
    };
    let (resource, permissions) = body
        .rsplit_once('.')
        .ok_or(ScopeError::MissingPermissions)?;
    let resource_type = parse_resource_type(resource)?;
    let (permissions, is_v1) = parse_permissions(permissions)?;
    let restrictions = match query {
        None => Vec::new(),
        Some(_) if is_v1 => return Err(ScopeError::QueryOnV1Scope),
        Some(query) => parse_query(query)?,
    };
    Ok(Parsed::Resource(ResourceScope {
        context,
        resource_type,
        permissions,
        restrictions,
    }))
}

fn parse_resource_type(resource: &str) -> Result<Option<String>, ScopeError> {
    if resource == "*" {
        return Ok(None);
    }
    let mut chars = resource.chars();
    let starts_upper = chars.next().is_some_and(|c| c.is_ascii_uppercase());
    if !starts_upper || resource.len() > 64 || !chars.all(|c| c.is_ascii_alphanumeric()) {
        return Err(ScopeError::InvalidResourceType);
    }
    Ok(Some(resource.to_owned()))
}

/// Returns the permissions and whether the scope used SMART v1 syntax.
fn parse_permissions(text: &str) -> Result<(Permissions, bool), ScopeError> {
    match text {
        "read" => {
            return Ok((
                Permissions::from_letters(&[Permission::Read, Permission::Search]),
                true,
            ))
        }
        "write" => {
            return Ok((
                Permissions::from_letters(&[
                    Permission::Create,
                    Permission::Update,
                    Permission::Delete,
                ]),
                true,
            ))
        }
        "*" => return Ok((Permissions::ALL, true)),
        _ => {}
    }
    if text.is_empty() {
        return Err(ScopeError::InvalidPermissions);
    }
    // Letters must appear in `cruds` order, each at most once.
    let order = ['c', 'r', 'u', 'd', 's'];
    let mut next = 0;
    let mut letters = Vec::new();
    for letter in text.chars() {
        let Some(position) = order[next..].iter().position(|o| *o == letter) else {
            return Err(ScopeError::InvalidPermissions);
        };
        let index = next + position;
        letters.push(match index {
            0 => Permission::Create,
            1 => Permission::Read,
            2 => Permission::Update,
            3 => Permission::Delete,
            _ => Permission::Search,
        });
        next = index + 1;
    }
    Ok((Permissions::from_letters(&letters), false))
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, ScopeError> {
    if query.is_empty() {
        return Err(ScopeError::InvalidQuery);
    }
    let mut pairs = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').ok_or(ScopeError::InvalidQuery)?;
        let name = decode(name)?;
        let value = decode(value)?;
        if name.is_empty() || value.is_empty() {
            return Err(ScopeError::InvalidQuery);
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn decode(text: &str) -> Result<String, ScopeError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ScopeError::InvalidQuery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Context::*;
    use Permission::*;

    #[test]
    fn v2_scopes() {
        let scopes = Scopes::parse("system/Subscription.cruds user/Observation.rs patient/*.r");
        assert!(scopes.allows(System, "Subscription", Create));
        assert!(scopes.allows(System, "Subscription", Delete));
        assert!(!scopes.allows(System, "Observation", Read));
        assert!(scopes.allows(User, "Observation", Read));
        assert!(scopes.allows(User, "Observation", Search));
        assert!(!scopes.allows(User, "Observation", Update));
        assert!(!scopes.allows(Patient, "Observation", Search));
        assert!(scopes.allows(Patient, "Encounter", Read));
        assert!(!scopes.allows(Patient, "Subscription", Create));
        assert!(scopes.rejected().is_empty());
    }

    #[test]
    fn v1_scopes() {
        let scopes = Scopes::parse("patient/Observation.read user/Subscription.write system/*.*");
        assert!(scopes.allows(Patient, "Observation", Read));
        assert!(scopes.allows(Patient, "Observation", Search));
        assert!(!scopes.allows(Patient, "Observation", Create));
        assert!(scopes.allows(User, "Subscription", Create));
        assert!(scopes.allows(User, "Subscription", Update));
        assert!(scopes.allows(User, "Subscription", Delete));
        assert!(!scopes.allows(User, "Subscription", Read));
        for permission in [Create, Read, Update, Delete, Search] {
            assert!(scopes.allows(System, "Anything", permission));
        }
    }

    #[test]
    fn query_restrictions_are_exposed_but_not_granted_by_allows() {
        let scopes = Scopes::parse(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        );
        assert!(!scopes.allows(Patient, "Observation", Read));
        match scopes.grant(Patient, "Observation", Read) {
            Grant::Restricted(lists) => {
                assert_eq!(lists.len(), 1);
                assert_eq!(lists[0][0].0, "category");
                assert!(lists[0][0].1.ends_with("|laboratory"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(scopes.grant(Patient, "Observation", Create), Grant::Denied);

        let mixed =
            Scopes::parse("patient/Observation.rs?category=laboratory patient/Observation.r");
        assert_eq!(
            mixed.grant(Patient, "Observation", Read),
            Grant::Unrestricted
        );

        let decoded = Scopes::parse("user/Observation.s?code=a%7Cb&status=final");
        let restrictions = &decoded.resource_scopes()[0].restrictions;
        assert_eq!(restrictions[0], ("code".to_owned(), "a|b".to_owned()));
        assert_eq!(restrictions[1], ("status".to_owned(), "final".to_owned()));
    }

    #[test]
    fn malformed_scopes_grant_nothing_and_say_why() {
        let cases = [
            ("patient/Observation", ScopeError::MissingPermissions),
            ("patient/Observation.", ScopeError::InvalidPermissions),
            ("patient/Observation.rx", ScopeError::InvalidPermissions),
            ("patient/Observation.sr", ScopeError::InvalidPermissions),
            ("patient/Observation.rr", ScopeError::InvalidPermissions),
            ("patient/Observation.READ", ScopeError::InvalidPermissions),
            ("patient/observation.r", ScopeError::InvalidResourceType),
            ("patient/.r", ScopeError::InvalidResourceType),
            ("patient/Obs-ervation.r", ScopeError::InvalidResourceType),
            ("patient/**.r", ScopeError::InvalidResourceType),
            (
                "patient/Observation.read?category=lab",
                ScopeError::QueryOnV1Scope,
            ),
            ("patient/Observation.rs?", ScopeError::InvalidQuery),
            ("patient/Observation.rs?category", ScopeError::InvalidQuery),
            ("patient/Observation.rs?=lab", ScopeError::InvalidQuery),
            ("patient/Observation.rs?a=%ff", ScopeError::InvalidQuery),
            ("patient/Observation.r\"", ScopeError::InvalidCharacters),
            ("patient/Obsérvation.r", ScopeError::InvalidCharacters),
        ];
        for (scope, reason) in cases {
            let scopes = Scopes::parse(scope);
            assert!(scopes.resource_scopes().is_empty(), "{scope}");
            assert_eq!(scopes.rejected().len(), 1, "{scope}");
            assert_eq!(scopes.rejected()[0].reason, reason, "{scope}");
            assert!(!scopes.allows(Patient, "Observation", Read), "{scope}");
        }
    }

    #[test]
    fn other_scopes_are_kept_and_grant_nothing() {
        let scopes =
            Scopes::parse("openid fhirUser launch/patient offline_access PATIENT/Observation.r");
        assert_eq!(scopes.other().len(), 5);
        assert!(scopes.resource_scopes().is_empty());
        assert!(!scopes.allows(Patient, "Observation", Read));
    }

    #[test]
    fn limits() {
        let long = format!("patient/{}.r", "A".repeat(600));
        assert_eq!(
            Scopes::parse(&long).rejected()[0].reason,
            ScopeError::TooLong
        );
        let many = vec!["system/Subscription.r"; MAX_SCOPES + 3].join(" ");
        let scopes = Scopes::parse(&many);
        assert_eq!(scopes.resource_scopes().len(), MAX_SCOPES);
        assert_eq!(scopes.rejected().len(), 3);
    }

    #[test]
    fn permissions_display_in_cruds_order() {
        let scopes = Scopes::parse("system/Subscription.cds");
        assert_eq!(scopes.resource_scopes()[0].permissions.to_string(), "cds");
    }
}
