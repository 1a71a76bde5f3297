// A real OpenID Provider for authgate's tests and demo, on the npm package oidc-provider,
// configured like Calimatic Auth: discovery, PKCE S256 required, RS256 + ES256 keys, JWT access
// tokens carrying licenses/organization/permissions/user_type, refresh-token rotation,
// end-session, revocation, introspection, client_credentials and back-channel logout.
//
// Settings come from the environment (all optional):
//   IDP_PORT (0 = any free port), IDP_HOST (127.0.0.1: the address it listens on),
//   IDP_ISSUER_HOST (IDP_HOST: the host name in its issuer URL, e.g. idp.localhost, so that
//   browsers keep its cookies apart from the apps')
//   PROFILE (calimatic: alice, bob, carol, admin; keycloak: kim and lee, with Keycloak's
//   groups, realm_access and resource_access and no Calimatic claims)
//   CLIENT_ID (authgate), CLIENT_SECRET (authgate-test-secret), REDIRECT_URIS, POST_LOGOUT_REDIRECT_URIS
//   (comma-separated), BACKCHANNEL_LOGOUT_URI
//   M2M_CLIENT_ID (reporting-service), M2M_CLIENT_SECRET (reporting-service-secret)
//   ACCESS_TOKEN_AUDIENCE (authgate), APP_LICENSE (unset: any user may sign in; set: users without
//   that license get error=access_denied, as Calimatic does; platform admins bypass it)
//   AT_TTL, ID_TTL, RT_TTL, CC_TTL, SESSION_TTL (seconds)
//   ACCESS_TOKEN_FORMAT: jwt (default) or opaque (for introspection)
//   TOKEN_RATE_LIMIT: token-endpoint calls allowed in any 60 s (unset: no limit), 429 beyond
//   KEYS_DIR: keep the signing keys there (rs256.pem, es256.pem, PKCS#8, and kids.json): loaded
//   when present, else generated and written, so tests can sign tokens with the IdP's own keys
//   and a restarted IdP keeps its keys. ROTATE_KEYS=1 with KEYS_DIR: a new RS256 key signs from now
//   on and the previous one stays published (rs256-previous.pem), as a real IdP rotates.
// Test hooks (loopback only, never in a real IdP): GET /__stats counts token-endpoint calls by
// grant type and outcome; POST /__faults?token429=N&retry_after=S makes the next N token-endpoint
// calls answer 429 with that Retry-After (a rate limit the real IdP would not hit in a test).
// When it listens it prints one JSON line to stdout: {"issuer": "...", "port": N}.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import Provider from 'oidc-provider';

import { USERS as CALIMATIC_USERS, KEYCLOAK_USERS, PASSWORD, claimsOf, findUserBySub } from './users.mjs';

const env = (name, fallback) => process.env[name] ?? fallback;
const seconds = (name, fallback) => {
  const v = Number.parseInt(env(name, ''), 10);
  return Number.isSafeInteger(v) && v > 0 ? v : fallback;
};
const list = (name, fallback) => env(name, fallback).split(',').map((s) => s.trim()).filter(Boolean);

// PROFILE=keycloak: users shaped like a Keycloak realm's (groups and roles, no Calimatic claims)
const USERS = env('PROFILE', 'calimatic') === 'keycloak' ? KEYCLOAK_USERS : CALIMATIC_USERS;
const HOST = env('IDP_HOST', '127.0.0.1');
const server = http.createServer();
await new Promise((resolve) => server.listen(Number(env('IDP_PORT', '0')), HOST, resolve));
const { port } = server.address();
const issuer = `http://${env('IDP_ISSUER_HOST', HOST)}:${port}`;

const CLIENT_ID = env('CLIENT_ID', 'authgate');
const AUDIENCE = env('ACCESS_TOKEN_AUDIENCE', 'authgate');
const APP_LICENSE = process.env.APP_LICENSE;
const RESOURCE = 'urn:authgate:api';

// Signing keys: RS256 first (the default for ID tokens), ES256 second. Fresh per run unless
// KEYS_DIR holds some.
function loadOrCreateKeys(dir) {
  const files = dir && {
    rs: path.join(dir, 'rs256.pem'), es: path.join(dir, 'es256.pem'), kids: path.join(dir, 'kids.json'),
  };
  if (files && fs.existsSync(files.kids)) {
    const kids = JSON.parse(fs.readFileSync(files.kids, 'utf8'));
    return {
      rs: crypto.createPrivateKey(fs.readFileSync(files.rs)), es: crypto.createPrivateKey(fs.readFileSync(files.es)), kids,
    };
  }
  const keys = {
    rs: crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
    es: crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
    kids: { rs: `rs256-${crypto.randomUUID().slice(0, 8)}`, es: `es256-${crypto.randomUUID().slice(0, 8)}` },
  };
  if (files) {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(files.rs, keys.rs.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    fs.writeFileSync(files.es, keys.es.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    fs.writeFileSync(files.kids, JSON.stringify(keys.kids), { mode: 0o600 });
  }
  return keys;
}
const keys = loadOrCreateKeys(process.env.KEYS_DIR);
if (process.env.ROTATE_KEYS === '1' && process.env.KEYS_DIR) {
  const dir = process.env.KEYS_DIR;
  keys.previous = { key: keys.rs, kid: keys.kids.rs };
  keys.rs = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  keys.kids = { ...keys.kids, rs: `rs256-${crypto.randomUUID().slice(0, 8)}`, previous: keys.previous.kid };
  fs.writeFileSync(path.join(dir, 'rs256-previous.pem'), keys.previous.key.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'rs256.pem'), keys.rs.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'kids.json'), JSON.stringify(keys.kids), { mode: 0o600 });
} else if (keys.kids.previous && process.env.KEYS_DIR) {
  keys.previous = {
    key: crypto.createPrivateKey(fs.readFileSync(path.join(process.env.KEYS_DIR, 'rs256-previous.pem'))),
    kid: keys.kids.previous,
  };
}
const jwks = {
  keys: [
    // the first RS256 key signs; a previous one is only published, for tokens it signed
    { ...keys.rs.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: keys.kids.rs },
    { ...keys.es.export({ format: 'jwk' }), use: 'sig', alg: 'ES256', kid: keys.kids.es },
    ...(keys.previous ? [{ ...keys.previous.key.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: keys.previous.kid }] : []),
  ],
};

// oidc-provider's bundled memory adapter holds at most 1000 entries and evicts silently.
class MapAdapter {
  static stores = new Map();

  static bucket(name) {
    let m = MapAdapter.stores.get(name);
    if (!m) MapAdapter.stores.set(name, (m = new Map()));
    return m;
  }

  constructor(name) { this.name = name; this.store = MapAdapter.bucket(name); }

  async upsert(id, payload, expiresIn) {
    this.store.set(id, { payload, exp: expiresIn ? Date.now() + expiresIn * 1000 : undefined });
    if (this.name === 'Session' && payload.uid) MapAdapter.bucket('sessionUid').set(payload.uid, id);
    if (payload.userCode) MapAdapter.bucket('userCode').set(payload.userCode, id);
    if (payload.grantId) {
      const grants = MapAdapter.bucket('grant');
      grants.set(payload.grantId, [...(grants.get(payload.grantId) ?? []), [this.name, id]]);
    }
  }

  async find(id) {
    const e = this.store.get(id);
    if (!e) return undefined;
    if (e.exp && e.exp <= Date.now()) { this.store.delete(id); return undefined; }
    return e.payload;
  }

  async findByUid(uid) { const id = MapAdapter.bucket('sessionUid').get(uid); return id && this.find(id); }

  async findByUserCode(code) { const id = MapAdapter.bucket('userCode').get(code); return id && this.find(id); }

  async consume(id) { const e = this.store.get(id); if (e) e.payload.consumed = Math.floor(Date.now() / 1000); }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId(grantId) {
    const grants = MapAdapter.bucket('grant');
    for (const [model, id] of grants.get(grantId) ?? []) MapAdapter.bucket(model).delete(id);
    grants.delete(grantId);
  }
}

const clients = [
  {
    client_id: CLIENT_ID,
    client_secret: env('CLIENT_SECRET', 'authgate-test-secret'),
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: list('REDIRECT_URIS', 'http://127.0.0.1:8080/oauth2/callback'),
    post_logout_redirect_uris: list('POST_LOGOUT_REDIRECT_URIS', 'http://127.0.0.1:8080/'),
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    ...(process.env.BACKCHANNEL_LOGOUT_URI
      ? { backchannel_logout_uri: process.env.BACKCHANNEL_LOGOUT_URI, backchannel_logout_session_required: true }
      : {}),
  },
  {
    client_id: env('M2M_CLIENT_ID', 'reporting-service'),
    client_secret: env('M2M_CLIENT_SECRET', 'reporting-service-secret'),
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  },
];

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients,
  jwks,
  cookies: {
    keys: [crypto.randomBytes(32).toString('base64url')],
    // on an http issuer browsers drop SameSite=None cookies (they need Secure)
    long: { sameSite: 'lax' },
    short: { sameSite: 'lax' },
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'department', 'preferred_username'],
    organization: ['organization_id', 'organization_memberships', 'user_type'],
    permissions: ['permissions'],
    licenses: ['licenses'],
  },
  // claims go into the id_token too, not only userinfo
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    const user = findUserBySub(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      // Calimatic puts licenses in every token of a user, whatever the scopes
      async claims() { return claimsOf(user); },
    };
  },
  async extraTokenClaims(ctx, token) {
    if (!token.accountId) return { application: token.clientId }; // client_credentials (M2M)
    const user = findUserBySub(token.accountId);
    if (!user) return undefined;
    const { sub, ...claims } = claimsOf(user);
    return claims;
  },
  pkce: { methods: ['S256'], required: () => true },
  responseTypes: ['code'],
  rotateRefreshToken: true,
  // refresh tokens without offline_access, and independent of the IdP's browser session
  async issueRefreshToken(ctx, client) { return client.grantTypeAllowed('refresh_token'); },
  async expiresWithSession() { return false; },
  ttl: {
    AccessToken: seconds('AT_TTL', 900),
    ClientCredentials: seconds('CC_TTL', 900),
    IdToken: seconds('ID_TTL', 900),
    RefreshToken: seconds('RT_TTL', 86400),
    AuthorizationCode: 60,
    Interaction: 600,
    Session: seconds('SESSION_TTL', 86400),
    Grant: Math.max(seconds('RT_TTL', 86400), seconds('SESSION_TTL', 86400)),
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // no confirmation page: the gateway's logout ends the IdP session at once
      async logoutSource(ctx, form) {
        ctx.body = `<!doctype html><title>Signing out</title>${form.replace('</form>',
          '<input type="hidden" name="logout" value="yes"/></form>')}<script>document.forms[0].submit()</script>`;
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: 'openid profile email organization permissions licenses offline_access',
        audience: AUDIENCE,
        accessTokenFormat: env('ACCESS_TOKEN_FORMAT', 'jwt'),
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});
const stats = {};
const count = (grant, outcome) => {
  stats[grant] ??= {};
  stats[grant][outcome] = (stats[grant][outcome] ?? 0) + 1;
};
provider.on('grant.success', (ctx) => count(ctx.oidc.params.grant_type, 'ok'));
provider.on('grant.error', (ctx, err) => count(ctx.oidc?.params?.grant_type ?? 'unknown', err.error ?? 'error'));
const faults = { token429: 0, retryAfter: 1 };
// TOKEN_RATE_LIMIT=N: at most N token-endpoint calls in any 60 s (all clients together, as a
// client-scoped limit of the one client authgate is), then 429 with the Retry-After until the
// oldest call leaves the window: Calimatic's limit, enforced as its docs describe.
const rateLimit = Number.parseInt(env('TOKEN_RATE_LIMIT', '0'), 10);
const tokenCalls = [];
provider.use(async (ctx, next) => {
  if (rateLimit > 0 && ctx.path === '/token' && ctx.method === 'POST') {
    const now = Date.now();
    while (tokenCalls.length && now - tokenCalls[0] >= 60000) tokenCalls.shift();
    if (tokenCalls.length >= rateLimit) {
      count('any', 'throttled');
      ctx.status = 429;
      ctx.set('retry-after', String(Math.ceil((tokenCalls[0] + 60000 - now) / 1000)));
      ctx.body = { error: 'rate_limited' };
      return;
    }
    tokenCalls.push(now);
  }
  if (ctx.path === '/token' && ctx.method === 'POST' && faults.token429 > 0) {
    faults.token429 -= 1;
    count('any', 'throttled');
    ctx.status = 429;
    ctx.set('retry-after', String(faults.retryAfter));
    ctx.body = { error: 'rate_limited' };
    return;
  }
  await next();
});
// fail at start, not at the first request, if a client is misconfigured
for (const c of clients) await provider.Client.find(c.client_id);

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Sign in - Test IdP</title></head>
<body><h1>Sign in</h1>${error ? `<p id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label>Username <input name="username" id="username" autocomplete="username"></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password"></label>
<button type="submit" id="submit">Sign in</button></form>
<p>Users: ${Object.keys(USERS).join(', ')} (password: ${PASSWORD})</p></body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  if (details.uid !== uid) { res.statusCode = 400; return res.end('interaction mismatch'); }

  if (prompt.name === 'login') {
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const user = USERS[form.get('username') ?? ''];
      if (!user || form.get('password') !== PASSWORD) {
        res.statusCode = 200;
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(loginPage(uid, 'Invalid username or password.'));
      }
      if (APP_LICENSE && params.client_id === CLIENT_ID && user.user_type !== 'platform_admin'
          && !user.licenses.includes(APP_LICENSE)) {
        return provider.interactionFinished(req, res, {
          error: 'access_denied',
          error_description: 'User is not licensed for this application',
        }, { mergeWithLastSubmission: false });
      }
      return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
    }
    res.setHeader('content-type', 'text/html; charset=utf-8');
    return res.end(loginPage(uid));
  }

  if (prompt.name === 'consent') {
    // first-party client: consent is granted without a screen
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
  }

  res.statusCode = 400;
  return res.end(`unsupported prompt ${prompt.name}`);
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url === '/__stats') {
    res.setHeader('content-type', 'application/json');
    return res.end(JSON.stringify(stats));
  }
  if (req.url?.startsWith('/__faults') && req.method === 'POST') {
    const q = new URL(req.url, issuer).searchParams;
    faults.token429 = Number(q.get('token429') ?? 0);
    faults.retryAfter = Number(q.get('retry_after') ?? 1);
    return res.end('ok');
  }
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?(?:\?.*)?$/.exec(req.url ?? '');
  if (!m) return callback(req, res);
  interaction(req, res, m[1], m[2]).catch((err) => {
    res.statusCode = err.statusCode ?? 400;
    res.setHeader('content-type', 'text/plain');
    res.end(`${err.name}: ${err.message}`);
  });
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
