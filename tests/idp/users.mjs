// Test users of the test IdP, shaped like Calimatic Auth accounts (see ../../../shared/seeds and
// README): licenses, organization, permissions and user_type claims. Every password is "password".
export const PASSWORD = 'password';

const ORG_ACME = '5f0c8a52-1d8e-4a43-9a54-6f1f5c0d2a11';
const ORG_GLOBEX = '9b2e7c14-3f6a-4e0b-8d7c-2a9e1b4c6d22';

export const USERS = {
  alice: {
    sub: 'a1b2c3d4-0000-4000-8000-00000000a11c',
    email: 'alice@acme.test',
    given_name: 'Alice',
    family_name: 'Anders',
    organization_id: ORG_ACME,
    organization_memberships: [{ organization_id: ORG_ACME, role: 'admin' }],
    user_type: 'customer_admin',
    permissions: ['org:manage', 'org:users:read', 'org:users:manage', 'licenses:read'],
    licenses: ['wiki', 'crm'],
    department: 'Engineering',
    // Keycloak-shaped claims, for claim rules on any claim
    groups: ['staff', 'wiki-editors'],
    realm_access: { roles: ['user'] },
    resource_access: { wiki: { roles: ['editor'] } },
  },
  bob: {
    sub: 'b0b0b0b0-0000-4000-8000-000000000b0b',
    email: 'bob@acme.test',
    given_name: 'Bob',
    family_name: 'Brown',
    organization_id: ORG_ACME,
    organization_memberships: [{ organization_id: ORG_ACME, role: 'teacher' }],
    user_type: 'customer_user',
    permissions: ['org:users:read'],
    licenses: ['wiki'],
    department: 'Teaching',
    groups: ['staff'],
    realm_access: { roles: ['user'] },
  },
  carol: {
    sub: 'c4c4c4c4-0000-4000-8000-0000000c4c41',
    email: 'carol@globex.test',
    // an address the IdP never verified: authgate must not pass it on as an identity
    email_verified: false,
    given_name: 'Carol',
    family_name: 'Clark',
    organization_id: ORG_GLOBEX,
    organization_memberships: [{ organization_id: ORG_GLOBEX, role: 'student' }],
    user_type: 'customer_user',
    permissions: [],
    licenses: [],
  },
  admin: {
    sub: 'ad000000-0000-4000-8000-0000000ad000',
    email: 'admin@calimatic.test',
    given_name: 'Platform',
    family_name: 'Admin',
    organization_id: ORG_ACME,
    organization_memberships: [{ organization_id: ORG_ACME, role: 'admin' }, { organization_id: ORG_GLOBEX, role: 'admin' }],
    user_type: 'platform_admin',
    permissions: ['org:manage', 'org:users:read', 'org:users:manage', 'licenses:read', 'licenses:manage', 'platform:admin'],
    licenses: ['wiki', 'crm', 'admin-console'],
  },
};

// The users of the Keycloak-shaped profile (PROFILE=keycloak): no Calimatic claims at all;
// groups as Keycloak's group mapper writes them (full paths), realm and client roles,
// preferred_username.
export const KEYCLOAK_USERS = {
  kim: {
    sub: '7c1e2f3a-0000-4000-8000-0000000000k1',
    email: 'kim@partner.test',
    given_name: 'Kim',
    family_name: 'Keller',
    preferred_username: 'kim',
    groups: ['/staff', '/staff/wiki-editors'],
    realm_access: { roles: ['offline_access', 'wiki-admin'] },
    resource_access: { wiki: { roles: ['editor'] } },
  },
  lee: {
    sub: '7c1e2f3a-0000-4000-8000-0000000000l2',
    email: 'lee@partner.test',
    given_name: 'Lee',
    family_name: 'Lund',
    preferred_username: 'lee',
    groups: ['/partners'],
    realm_access: { roles: ['offline_access'] },
  },
};

export function findUserBySub(sub) {
  return [...Object.values(USERS), ...Object.values(KEYCLOAK_USERS)].find((u) => u.sub === sub);
}

// Every claim of a user, as the IdP puts them in tokens and userinfo.
export function claimsOf(user) {
  return {
    sub: user.sub,
    email: user.email,
    email_verified: user.email_verified ?? true,
    name: `${user.given_name} ${user.family_name}`,
    given_name: user.given_name,
    family_name: user.family_name,
    organization_id: user.organization_id,
    organization_memberships: user.organization_memberships,
    user_type: user.user_type,
    permissions: user.permissions,
    licenses: user.licenses,
    ...(user.department ? { department: user.department } : {}),
    ...(user.preferred_username ? { preferred_username: user.preferred_username } : {}),
    ...(user.groups ? { groups: user.groups } : {}),
    ...(user.realm_access ? { realm_access: user.realm_access } : {}),
    ...(user.resource_access ? { resource_access: user.resource_access } : {}),
  };
}
