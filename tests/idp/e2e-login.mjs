// End-to-end sign-in in a real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core): open an app page behind authgate, sign in at the test IdP's form, land
// back on the page, and check what the app received. Then sign out.
// Env: GATE_URL (authgate's public URL), USER_SUB (the expected X-User-Id), CHROMIUM (path).
// Exits 0 when every check holds; prints what failed otherwise.
import { run } from './chromium.mjs';

const gate = process.env.GATE_URL;
const expectedSub = process.env.USER_SUB;
await run('e2e ok', async (browser, check) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  if (process.env.E2E_TRACE) {
    page.on('response', (r) => console.log('response', r.status(), r.url()));
    page.on('requestfailed', (r) => console.log('failed', r.url(), r.failure()?.errorText));
  }
  await page.goto(`${gate}/wiki/welcome?lang=en`);
  await page.waitForSelector('#username', { timeout: 15000 });
  check(page.url().includes('/interaction/'), `expected the IdP login form, got ${page.url()}`);
  await page.fill('#username', 'bob');
  await page.fill('#password', 'password');
  await Promise.all([page.waitForURL(`${gate}/wiki/welcome?lang=en`, { timeout: 15000 }), page.click('#submit')]);
  const echo = JSON.parse(await page.locator('body').innerText());
  const header = (name) => echo.headers.filter(([k]) => k.toLowerCase() === name).map(([, v]) => v);
  check(echo.path === '/wiki/welcome', `path ${echo.path}`);
  check(JSON.stringify(header('x-user-id')) === JSON.stringify([expectedSub]), `x-user-id ${header('x-user-id')}`);
  check(JSON.stringify(header('x-user-licenses')) === '["wiki"]', `x-user-licenses ${header('x-user-licenses')}`);
  check(JSON.stringify(header('x-user-email')) === '["bob@acme.test"]', `x-user-email ${header('x-user-email')}`);
  check(!header('cookie').join(';').includes('authgate_session'), 'the session cookie reached the app');
  // the IdP lives on its own host name: none of its cookies (_session, _interaction...) may
  // reach the app, and authgate strips its own, so the app sees no cookies at all
  // (a front proxy may leave an empty Cookie header behind once it removed authgate's cookies)
  const cookieNames = header('cookie').flatMap((c) => c.split(';')).map((p) => p.split('=')[0].trim()).filter(Boolean);
  check(cookieNames.length === 0, `the app received cookies: ${cookieNames.join(',')}`);
  const cookies = await context.cookies(gate);
  const session = cookies.find((c) => c.name === 'authgate_session');
  check(session && session.httpOnly && session.sameSite === 'Lax', `session cookie flags ${JSON.stringify(session)}`);

  // sign out through the gateway's page: the button posts, the IdP ends its session too
  await page.goto(`${gate}/oauth2/sign_out`);
  await Promise.all([page.waitForURL(/\/interaction\//, { timeout: 15000 }), page.click('#sign-out')]);
  check(await page.locator('#username').count() === 1, `after sign-out the IdP should ask again, got ${page.url()}`);
  const after = await context.cookies(gate);
  check(!after.some((c) => c.name === 'authgate_session'), 'the session cookie survived sign-out');
});
